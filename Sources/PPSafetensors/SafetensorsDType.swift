import PPTensor

/// A dtype string from a safetensors header: one the toolkit reads, or one the format defines that
/// it cannot (float8, float6, float4, complex), or one nobody defines.
enum StoredDType: Equatable {
    case supported(DType)
    case unsupported(name: String, bits: Int)

    init?(headerName: String) {
        if let d = DType(rawValue: headerName) {
            self = .supported(d)
            return
        }
        if let bits = StoredDType.knownUnsupportedBits[headerName] {
            self = .unsupported(name: headerName, bits: bits)
            return
        }
        return nil
    }

    /// Dtypes the reference crate knows but `DType` does not hold, with their sizes in bits.
    static let knownUnsupportedBits: [String: Int] = [
        "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
        "F6_E2M3": 6, "F6_E3M2": 6, "F4": 4, "C64": 64,
    ]

    var bits: Int {
        switch self {
        case .supported(let d): return d.byteSize * 8
        case .unsupported(_, let bits): return bits
        }
    }

    var name: String {
        switch self {
        case .supported(let d): return d.rawValue
        case .unsupported(let name, _): return name
        }
    }
}

extension DType {
    /// Position in the reference crate's `Dtype` enum (its derived order). The reference writer sorts
    /// tensors by this, descending, so wider types come first and the data stays aligned.
    var safetensorsRank: Int {
        switch self {
        case .bool: return 0
        case .u8: return 1
        case .i8: return 2
        case .i16: return 3
        case .u16: return 4
        case .f16: return 5
        case .bf16: return 6
        case .i32: return 7
        case .u32: return 8
        case .f32: return 9
        case .f64: return 10
        case .i64: return 11
        case .u64: return 12
        }
    }
}
