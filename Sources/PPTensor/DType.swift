/// Element types a checkpoint can hold. Raw values are the safetensors dtype strings.
public enum DType: String, CaseIterable, Sendable, Codable {
    case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"
    case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8"
    case u64 = "U64", u32 = "U32", u16 = "U16", u8 = "U8"
    case bool = "BOOL"

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .f64, .i64, .u64: return 8
        case .f32, .i32, .u32: return 4
        case .f16, .bf16, .i16, .u16: return 2
        case .i8, .u8, .bool: return 1
        }
    }

    public var isFloatingPoint: Bool {
        switch self {
        case .f64, .f32, .f16, .bf16: return true
        default: return false
        }
    }

    /// Short lower-case name used in tables and on the command line (`f32`, `bf16`, ...).
    public var shortName: String { rawValue.lowercased() }

    /// Parses `f32`, `F32`, `float32`, `bfloat16`, `half`, ...
    public init?(userName: String) {
        switch userName.lowercased() {
        case "f64", "float64", "double": self = .f64
        case "f32", "float32", "float": self = .f32
        case "f16", "float16", "half", "fp16": self = .f16
        case "bf16", "bfloat16": self = .bf16
        case "i64", "int64", "long": self = .i64
        case "i32", "int32", "int": self = .i32
        case "i16", "int16", "short": self = .i16
        case "i8", "int8": self = .i8
        case "u8", "uint8", "byte": self = .u8
        case "bool": self = .bool
        default:
            if let d = DType(rawValue: userName.uppercased()) { self = d } else { return nil }
        }
    }
}

/// IEEE half and bfloat16 conversions (round to nearest even on the way down).
public enum HalfFloat {
    @inline(__always)
    public static func f16ToF32(_ h: UInt16) -> Float {
        #if arch(x86_64) || arch(arm64)
        return Float(Float16(bitPattern: h))
        #else
        let sign = UInt32(h & 0x8000) << 16
        var exp = UInt32((h >> 10) & 0x1f)
        var mant = UInt32(h & 0x3ff)
        if exp == 0 {
            if mant == 0 { return Float(bitPattern: sign) }
            exp = 127 - 15 + 1
            while mant & 0x400 == 0 { mant <<= 1; exp -= 1 }
            mant &= 0x3ff
            return Float(bitPattern: sign | (exp << 23) | (mant << 13))
        }
        if exp == 0x1f { return Float(bitPattern: sign | 0x7f80_0000 | (mant << 13)) }
        return Float(bitPattern: sign | ((exp + 112) << 23) | (mant << 13))
        #endif
    }

    @inline(__always)
    public static func f32ToF16(_ f: Float) -> UInt16 {
        Float16(f).bitPattern  // Swift's conversion rounds to nearest even
    }

    @inline(__always)
    public static func bf16ToF32(_ b: UInt16) -> Float {
        Float(bitPattern: UInt32(b) << 16)
    }

    @inline(__always)
    public static func f32ToBF16(_ f: Float) -> UInt16 {
        let bits = f.bitPattern
        if f.isNaN { return UInt16(truncatingIfNeeded: (bits >> 16) | 0x0040) }  // keep it a quiet NaN
        let roundingBias = UInt32(0x7fff) + ((bits >> 16) & 1)
        return UInt16(truncatingIfNeeded: (bits &+ roundingBias) >> 16)
    }
}
