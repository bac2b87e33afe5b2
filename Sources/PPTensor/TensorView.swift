import PPFileIO

/// A tensor as a checkpoint stores it: dtype, shape and element strides over a byte storage that
/// may be a file mapping. Nothing is decoded until asked, so listing a checkpoint reads only headers.
/// Bytes are little-endian (the only byte order the readers accept).
public struct TensorView: Sendable {
    public let dtype: DType
    public let shape: [Int]
    /// Element strides (PyTorch semantics); row-major for safetensors.
    public let strides: [Int]
    public let storage: ByteStorage
    /// Byte offset of element [0, 0, ...] inside `storage`.
    public let byteOffset: Int

    /// A row-major view. The caller has checked that the bytes fit in the storage.
    public init(dtype: DType, shape: [Int], storage: ByteStorage, byteOffset: Int) {
        self.init(dtype: dtype, shape: shape, strides: TensorView.rowMajorStrides(shape), storage: storage, byteOffset: byteOffset)
    }

    public init(dtype: DType, shape: [Int], strides: [Int], storage: ByteStorage, byteOffset: Int) {
        precondition(shape.count == strides.count, "shape and strides differ in rank")
        self.dtype = dtype
        self.shape = shape
        self.strides = strides
        self.storage = storage
        self.byteOffset = byteOffset
    }

    /// A tensor owning a fresh copy of `values` converted to `dtype` (floating-point dtypes only).
    public init(floats values: [Float], shape: [Int], dtype: DType = .f32) {
        precondition(values.count == TensorView.elementCount(shape) ?? -1, "value count does not match shape")
        let storage = ByteStorage(count: values.count * dtype.byteSize, origin: "memory") { dst in
            TensorView.encode(values, as: dtype, into: dst)
        }
        self.init(dtype: dtype, shape: shape, storage: storage, byteOffset: 0)
    }

    /// A tensor owning a copy of `values` as int64.
    public init(int64s values: [Int64], shape: [Int]) {
        let storage = ByteStorage(count: values.count * 8, origin: "memory") { dst in
            values.withUnsafeBytes { dst.copyMemory(from: $0) }
        }
        self.init(dtype: .i64, shape: shape, storage: storage, byteOffset: 0)
    }

    /// A row-major tensor owning a copy of raw little-endian `bytes`.
    public init(dtype: DType, shape: [Int], bytes: [UInt8]) {
        self.init(dtype: dtype, shape: shape, storage: ByteStorage(bytes: bytes, origin: "memory"), byteOffset: 0)
    }

    public var elementCount: Int { TensorView.elementCount(shape) ?? 0 }
    public var byteCount: Int { elementCount * dtype.byteSize }
    public var rank: Int { shape.count }

    public var isRowMajorContiguous: Bool {
        var expected = 1
        for d in stride(from: shape.count - 1, through: 0, by: -1) {
            if shape[d] != 1 && strides[d] != expected { return false }
            expected *= shape[d]
        }
        return true
    }

    /// The row-major bytes of a contiguous view, without copying. Nil for strided views.
    public var contiguousBytes: UnsafeRawBufferPointer? {
        guard isRowMajorContiguous else { return nil }
        return UnsafeRawBufferPointer(rebasing: storage.bytes[byteOffset ..< byteOffset + byteCount])
    }

    /// The storage byte range of a contiguous view (nil for strided views).
    public var contiguousByteRange: Range<Int>? {
        isRowMajorContiguous ? byteOffset ..< byteOffset + byteCount : nil
    }

    /// Row-major little-endian bytes (a copy; gathers strided views).
    public func rowMajorBytes() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: byteCount)
        out.withUnsafeMutableBytes { writeRowMajorBytes(into: $0) }
        return out
    }

    /// Writes the row-major bytes into `dst` (exactly `byteCount` bytes).
    public func writeRowMajorBytes(into dst: UnsafeMutableRawBufferPointer) {
        precondition(dst.count >= byteCount)
        if let src = contiguousBytes {
            if src.count > 0 { dst.copyMemory(from: src) }
            return
        }
        let size = dtype.byteSize
        var outIndex = 0
        forEachElementOffset { elementOffset in
            let from = byteOffset + elementOffset * size
            for b in 0..<size { dst[outIndex + b] = storage.bytes[from + b] }
            outIndex += size
        }
    }

    /// Calls `body` with the storage element offset (relative to `byteOffset`, in elements) of every
    /// element in row-major order.
    public func forEachElementOffset(_ body: (Int) -> Void) {
        let n = elementCount
        if n == 0 { return }
        if shape.isEmpty { body(0); return }
        var index = [Int](repeating: 0, count: shape.count)
        var offset = 0
        for _ in 0..<n {
            body(offset)
            var d = shape.count - 1
            while d >= 0 {
                index[d] += 1
                offset += strides[d]
                if index[d] < shape[d] { break }
                offset -= strides[d] * shape[d]
                index[d] = 0
                d -= 1
            }
        }
    }

    /// The values as float32, row-major. Integers and doubles convert (doubles round to nearest).
    public func floats() -> [Float] {
        var out = [Float](repeating: 0, count: elementCount)
        out.withUnsafeMutableBufferPointer { writeFloats(into: $0) }
        return out
    }

    /// Decodes into `dst` (exactly `elementCount` values), row-major.
    public func writeFloats(into dst: UnsafeMutableBufferPointer<Float>) {
        precondition(dst.count >= elementCount)
        let raw = storage.bytes
        let base = byteOffset
        var i = 0
        func each(_ read: (Int) -> Float) {
            if isRowMajorContiguous {
                for k in 0..<elementCount { dst[k] = read(k) }
            } else {
                forEachElementOffset { off in dst[i] = read(off); i += 1 }
            }
        }
        switch dtype {
        case .f32:
            if isRowMajorContiguous, elementCount > 0 {
                UnsafeMutableRawBufferPointer(dst).copyMemory(
                    from: UnsafeRawBufferPointer(rebasing: raw[base ..< base + elementCount * 4]))
            } else {
                each { raw.loadUnaligned(fromByteOffset: base + $0 * 4, as: Float.self) }
            }
        case .f64: each { Float(raw.loadUnaligned(fromByteOffset: base + $0 * 8, as: Double.self)) }
        case .f16: each { HalfFloat.f16ToF32(raw.loadUnaligned(fromByteOffset: base + $0 * 2, as: UInt16.self)) }
        case .bf16: each { HalfFloat.bf16ToF32(raw.loadUnaligned(fromByteOffset: base + $0 * 2, as: UInt16.self)) }
        case .i64: each { Float(raw.loadUnaligned(fromByteOffset: base + $0 * 8, as: Int64.self)) }
        case .i32: each { Float(raw.loadUnaligned(fromByteOffset: base + $0 * 4, as: Int32.self)) }
        case .i16: each { Float(raw.loadUnaligned(fromByteOffset: base + $0 * 2, as: Int16.self)) }
        case .i8: each { Float(Int8(bitPattern: raw[base + $0])) }
        case .u64: each { Float(raw.loadUnaligned(fromByteOffset: base + $0 * 8, as: UInt64.self)) }
        case .u32: each { Float(raw.loadUnaligned(fromByteOffset: base + $0 * 4, as: UInt32.self)) }
        case .u16: each { Float(raw.loadUnaligned(fromByteOffset: base + $0 * 2, as: UInt16.self)) }
        case .u8, .bool: each { Float(raw[base + $0]) }
        }
    }

    /// The values as Double, row-major (exact for every dtype but 64-bit integers beyond 2^53).
    public func doubles() -> [Double] {
        if dtype == .f64 {
            var out = [Double](); out.reserveCapacity(elementCount)
            forEachElementOffset { out.append(storage.bytes.loadUnaligned(fromByteOffset: byteOffset + $0 * 8, as: Double.self)) }
            return out
        }
        if dtype == .i64 { return int64s().map(Double.init) }
        return floats().map(Double.init)
    }

    /// The values as Int64, row-major. Floating-point values are truncated toward zero.
    public func int64s() -> [Int64] {
        var out = [Int64](); out.reserveCapacity(elementCount)
        let raw = storage.bytes
        forEachElementOffset { off in
            let at = byteOffset + off * dtype.byteSize
            switch dtype {
            case .i64: out.append(raw.loadUnaligned(fromByteOffset: at, as: Int64.self))
            case .i32: out.append(Int64(raw.loadUnaligned(fromByteOffset: at, as: Int32.self)))
            case .i16: out.append(Int64(raw.loadUnaligned(fromByteOffset: at, as: Int16.self)))
            case .i8: out.append(Int64(Int8(bitPattern: raw[at])))
            case .u64: out.append(Int64(bitPattern: raw.loadUnaligned(fromByteOffset: at, as: UInt64.self)))
            case .u32: out.append(Int64(raw.loadUnaligned(fromByteOffset: at, as: UInt32.self)))
            case .u16: out.append(Int64(raw.loadUnaligned(fromByteOffset: at, as: UInt16.self)))
            case .u8, .bool: out.append(Int64(raw[at]))
            case .f64: out.append(Int64(raw.loadUnaligned(fromByteOffset: at, as: Double.self)))
            case .f32: out.append(Int64(raw.loadUnaligned(fromByteOffset: at, as: Float.self)))
            case .f16: out.append(Int64(HalfFloat.f16ToF32(raw.loadUnaligned(fromByteOffset: at, as: UInt16.self))))
            case .bf16: out.append(Int64(HalfFloat.bf16ToF32(raw.loadUnaligned(fromByteOffset: at, as: UInt16.self))))
            }
        }
        return out
    }

    /// This tensor converted to `target` (a floating-point dtype), row-major, in memory.
    /// Converting to the same dtype copies bytes exactly (no float round trip).
    public func converted(to target: DType) -> TensorView {
        if target == dtype {
            return TensorView(dtype: dtype, shape: shape, bytes: rowMajorBytes())
        }
        precondition(target.isFloatingPoint, "conversion target must be floating point")
        return TensorView(floats: floats(), shape: shape, dtype: target)
    }

    /// Encodes float32 values as `dtype` little-endian bytes into `dst`.
    public static func encode(_ values: [Float], as dtype: DType, into dst: UnsafeMutableRawBufferPointer) {
        switch dtype {
        case .f32: values.withUnsafeBytes { if $0.count > 0 { dst.copyMemory(from: $0) } }
        case .f64: for (i, v) in values.enumerated() { dst.storeBytes(of: Double(v), toByteOffset: i * 8, as: Double.self) }
        case .f16: for (i, v) in values.enumerated() { dst.storeBytes(of: HalfFloat.f32ToF16(v), toByteOffset: i * 2, as: UInt16.self) }
        case .bf16: for (i, v) in values.enumerated() { dst.storeBytes(of: HalfFloat.f32ToBF16(v), toByteOffset: i * 2, as: UInt16.self) }
        default: preconditionFailure("encode(_:as:) supports floating-point dtypes only")
        }
    }

    public static func rowMajorStrides(_ shape: [Int]) -> [Int] {
        var strides = [Int](repeating: 1, count: shape.count)
        var acc = 1
        for d in stride(from: shape.count - 1, through: 0, by: -1) {
            strides[d] = acc
            acc = acc &* max(shape[d], 1)
        }
        return strides
    }

    /// Product of the dimensions, or nil when a dimension is negative or the product overflows.
    public static func elementCount(_ shape: [Int]) -> Int? {
        var n = 1
        for d in shape {
            guard d >= 0 else { return nil }
            let (p, overflow) = n.multipliedReportingOverflow(by: d)
            if overflow { return nil }
            n = p
        }
        return n
    }
}

/// Named tensors in a stable order (the order the file stored them, or the order they were added).
public struct TensorDict: Sendable {
    public private(set) var names: [String] = []
    private var index: [String: Int] = [:]
    private var views: [TensorView] = []

    public init() {}

    public init(_ pairs: [(String, TensorView)]) {
        for (k, v) in pairs { self[k] = v }
    }

    public var count: Int { names.count }
    public var isEmpty: Bool { names.isEmpty }

    public subscript(name: String) -> TensorView? {
        get { index[name].map { views[$0] } }
        set {
            if let newValue {
                if let i = index[name] { views[i] = newValue } else {
                    index[name] = views.count
                    names.append(name)
                    views.append(newValue)
                }
            } else if let i = index.removeValue(forKey: name) {
                names.remove(at: i)
                views.remove(at: i)
                for j in i..<names.count { index[names[j]] = j }
            }
        }
    }

    public func contains(_ name: String) -> Bool { index[name] != nil }

    /// (name, tensor) pairs in order.
    public var items: [(name: String, tensor: TensorView)] { zip(names, views).map { ($0, $1) } }

    /// Names sorted by byte order, the order writers use for deterministic output.
    public var sortedNames: [String] { names.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) } }

    public var totalBytes: Int { views.reduce(0) { $0 + $1.byteCount } }
    public var totalElements: Int { views.reduce(0) { $0 + $1.elementCount } }
}
