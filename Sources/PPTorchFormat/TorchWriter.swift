import PPFileIO
import PPTensor

/// What the torch.save writer can store: the values `torch.load(weights_only=True)` accepts.
public indirect enum TorchWriteValue {
    case dict([(String, TorchWriteValue)])
    case orderedDict([(String, TorchWriteValue)])
    case list([TorchWriteValue])
    case tuple([TorchWriteValue])
    case int(Int64)
    case float(Double)
    case string(String)
    case bool(Bool)
    case none
    case tensor(TensorView)
    /// An `argparse.Namespace` with these attributes: what the official train.py expects under `args`.
    /// Not loadable with `weights_only=True` unless the reader allow-lists argparse.Namespace
    /// (`torch.serialization.add_safe_globals([argparse.Namespace])`); the official trainer loads
    /// its checkpoints with weights_only=False.
    case namespace([(String, TorchWriteValue)])
    /// A dict with integer keys (an optimizer's `state`, keyed by parameter index).
    case intDict([(Int64, TorchWriteValue)])

    /// A state dict as torch writes one (`OrderedDict` of name → tensor), in the dict's order.
    public static func stateDict(_ tensors: TensorDict) -> TorchWriteValue {
        .orderedDict(tensors.items.map { ($0.name, .tensor($0.tensor)) })
    }
}

/// Writes `torch.save` archives (formats.md §5): pickle protocol 2 using only opcodes the
/// weights_only unpickler accepts, one contiguous storage per tensor, stored 64-byte-aligned records.
/// Deterministic: zeroed times and an id derived from the content.
public enum TorchWriter {
    /// Storage class name (module `torch`) for each writable dtype.
    static func storageClass(_ dtype: DType) -> String? {
        switch dtype {
        case .f32: return "FloatStorage"
        case .f16: return "HalfStorage"
        case .bf16: return "BFloat16Storage"
        case .f64: return "DoubleStorage"
        case .i64: return "LongStorage"
        case .i32: return "IntStorage"
        case .i16: return "ShortStorage"
        case .i8: return "CharStorage"
        case .u8: return "ByteStorage"
        case .bool: return "BoolStorage"
        case .u16, .u32, .u64: return nil
        }
    }

    /// `archiveName` is the top folder (torch uses the file's base name without extension).
    /// `progress(bytesWritten, totalTensorBytes)` follows the tensor records.
    /// `description`: JSON written as the extra record `TorchCheckpoint.descriptionRecord`.
    public static func write(_ root: TorchWriteValue, to path: String, archiveName: String, description: [UInt8]? = nil,
                             progress: ((Int, Int) -> Void)? = nil) throws {
        guard !archiveName.isEmpty, !archiveName.contains("/") else {
            throw PPError(.usage, file: path, "archive name '\(archiveName)' must be a non-empty name without '/'")
        }
        var pickler = TorchPickler(path: path)
        let pickle = try pickler.pickle(root)
        let zip = try TorchZipWriter(path: path)
        try zip.addRecord(name: "\(archiveName)/data.pkl", bytes: pickle)
        try zip.addRecord(name: "\(archiveName)/.format_version", bytes: Array("1".utf8))
        try zip.addRecord(name: "\(archiveName)/.storage_alignment", bytes: Array("64".utf8))
        try zip.addRecord(name: "\(archiveName)/byteorder", bytes: Array("little".utf8))
        let total = pickler.storages.reduce(0) { $0 + $1.byteCount }
        var written = 0
        for (key, tensor) in pickler.storages.enumerated() {
            let name = "\(archiveName)/data/\(key)"
            try zip.addRecord(name: name, size: tensor.byteCount) { sink in try streamRowMajor(tensor, into: sink) }
            // Written pages of a mapped source need not stay resident (flat memory on multi-GB files).
            if let range = tensor.contiguousByteRange { tensor.storage.dropPages(range) }
            written += tensor.byteCount
            progress?(written, total)
        }
        if let description { try zip.addRecord(name: "\(archiveName)/\(TorchCheckpoint.descriptionRecord)", bytes: description) }
        try zip.addRecord(name: "\(archiveName)/version", bytes: Array("3\n".utf8))
        try zip.addRecord(name: "\(archiveName)/.data/serialization_id", bytes: Array(serializationID(zip.records).utf8))
        try zip.finish()
    }

    /// Contiguous tensors go straight from their storage (e.g. a file mapping); strided ones are
    /// gathered in bounded chunks so no whole-tensor copy is made.
    static func streamRowMajor(_ tensor: TensorView, into sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        if let bytes = tensor.contiguousBytes {
            let chunk = 64 << 20
            var start = 0
            while start < bytes.count {
                let end = min(start + chunk, bytes.count)
                try withExtendedLifetime(tensor.storage) { try sink(UnsafeRawBufferPointer(rebasing: bytes[start ..< end])) }
                start = end
            }
            return
        }
        let size = tensor.dtype.byteSize
        let chunkElements = 1 << 18
        var buffer = [UInt8](repeating: 0, count: chunkElements * size)  // shape [chunkElements × elementBytes]
        var filled = 0
        var failure: Error?
        let source = tensor.storage.bytes
        tensor.forEachElementOffset { elementOffset in
            guard failure == nil else { return }
            let from = tensor.byteOffset + elementOffset * size
            for b in 0..<size { buffer[filled + b] = source[from + b] }
            filled += size
            if filled == buffer.count {
                do { try buffer.withUnsafeBytes { try sink($0) } } catch { failure = error }
                filled = 0
            }
        }
        if let failure { throw failure }
        if filled > 0 { try buffer.withUnsafeBytes { try sink(UnsafeRawBufferPointer(rebasing: $0[0 ..< filled])) } }
    }

    /// 40 ASCII digits like torch's id, but derived from the records' names, sizes and CRCs.
    static func serializationID(_ records: [TorchZipWriter.Written]) -> String {
        var hash = SHA256()
        for r in records {
            hash.update(r.name)
            hash.update(TorchZipLayout.le64(r.size) + TorchZipLayout.le32(Int(r.crc)))
        }
        let digest = hash.finish()
        func digits(_ bytes: ArraySlice<UInt8>) -> String {
            let v = bytes.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            let s = String(v)
            return String(repeating: "0", count: 20 - s.count) + s
        }
        return digits(digest[0 ..< 8]) + digits(digest[8 ..< 16])
    }
}

/// Pickle protocol 2 as torch writes it, restricted to weights_only opcodes.
struct TorchPickler {
    let path: String
    private(set) var out: [UInt8] = []
    /// Tensors in the order their storages are met; the index is the storage key.
    private(set) var storages: [TensorView] = []
    /// Memo slots of globals already written (GLOBAL once, BINGET afterwards).
    private var globalMemo: [String: Int] = [:]
    private var nextMemo = 0

    init(path: String) { self.path = path }

    mutating func pickle(_ root: TorchWriteValue) throws -> [UInt8] {
        out = [0x80, 2]  // PROTO 2
        try value(root, depth: 0)
        out.append(0x2e)  // STOP
        return out
    }

    private mutating func global(_ module: String, _ name: String) {
        let key = "\(module)\n\(name)\n"
        if let slot = globalMemo[key] {
            get(slot)
            return
        }
        out.append(0x63)  // GLOBAL
        out += Array(key.utf8)
        globalMemo[key] = put()
    }

    @discardableResult
    private mutating func put() -> Int {
        let slot = nextMemo
        nextMemo += 1
        if slot < 256 { out += [0x71, UInt8(slot)] } else { out.append(0x72); out += TorchZipLayout.le32(slot) }  // BINPUT / LONG_BINPUT
        return slot
    }

    private mutating func get(_ slot: Int) {
        if slot < 256 { out += [0x68, UInt8(slot)] } else { out.append(0x6a); out += TorchZipLayout.le32(slot) }  // BINGET / LONG_BINGET
    }

    private mutating func int(_ v: Int64) {
        if v >= 0 && v < 256 { out += [0x4b, UInt8(v)] }  // BININT1
        else if v >= 0 && v < 65536 { out += [0x4d, UInt8(v & 0xff), UInt8(v >> 8)] }  // BININT2
        else if v >= Int64(Int32.min) && v <= Int64(Int32.max) { out.append(0x4a); out += TorchZipLayout.le32(Int(v)) }  // BININT
        else {
            // LONG1: minimal little-endian two's complement.
            var bytes = TorchZipLayout.le64(Int(v))
            while bytes.count > 1 {
                let last = bytes[bytes.count - 1], prev = bytes[bytes.count - 2]
                if (last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0) { bytes.removeLast() } else { break }
            }
            out += [0x8a, UInt8(bytes.count)] + bytes
        }
    }

    private mutating func string(_ s: String) {
        let utf8 = Array(s.utf8)
        out.append(0x58)  // BINUNICODE
        out += TorchZipLayout.le32(utf8.count) + utf8
    }

    private mutating func tuple(_ items: [TorchWriteValue], depth: Int) throws {
        switch items.count {
        case 0: out.append(0x29)  // EMPTY_TUPLE
        case 1...3:
            for item in items { try value(item, depth: depth + 1) }
            out.append(UInt8(0x84 + items.count))  // TUPLE1..3
        default:
            out.append(0x28)  // MARK
            for item in items { try value(item, depth: depth + 1) }
            out.append(0x74)  // TUPLE
        }
    }

    private mutating func dictItems(_ items: [(String, TorchWriteValue)], depth: Int) throws {
        var seen = Set<String>()
        for (k, _) in items where !seen.insert(k).inserted {
            throw PPError(.usage, file: path, entry: k, "duplicate key in a dict to write")
        }
        if items.count == 1 {
            string(items[0].0)
            try value(items[0].1, depth: depth + 1)
            out.append(0x73)  // SETITEM
            return
        }
        var start = 0
        while start < items.count {  // batches of at most 1000, as CPython writes them
            out.append(0x28)  // MARK
            for (k, v) in items[start ..< min(start + 1000, items.count)] {
                string(k)
                try value(v, depth: depth + 1)
            }
            out.append(0x75)  // SETITEMS
            start += 1000
        }
    }

    private mutating func value(_ v: TorchWriteValue, depth: Int) throws {
        guard depth < 200 else { throw PPError(.usage, file: path, "values nest deeper than 200 levels") }
        switch v {
        case .none: out.append(0x4e)
        case .bool(let b): out.append(b ? 0x88 : 0x89)
        case .int(let i): int(i)
        case .float(let f): out.append(0x47); out += (0..<8).map { UInt8(truncatingIfNeeded: f.bitPattern >> (56 - 8 * UInt64($0))) }  // BINFLOAT, big-endian
        case .string(let s): string(s)
        case .tuple(let items): try tuple(items, depth: depth)
        case .list(let items):
            out.append(0x5d); put()  // EMPTY_LIST
            if items.count == 1 {
                try value(items[0], depth: depth + 1); out.append(0x61)  // APPEND
            } else if !items.isEmpty {
                var start = 0
                while start < items.count {
                    out.append(0x28)
                    for item in items[start ..< min(start + 1000, items.count)] { try value(item, depth: depth + 1) }
                    out.append(0x65)  // APPENDS
                    start += 1000
                }
            }
        case .dict(let items):
            out.append(0x7d); put()  // EMPTY_DICT
            if !items.isEmpty { try dictItems(items, depth: depth) }
        case .orderedDict(let items):
            global("collections", "OrderedDict")
            out.append(0x29); out.append(0x52); put()  // EMPTY_TUPLE REDUCE
            if !items.isEmpty { try dictItems(items, depth: depth) }
        case .tensor(let t): try tensor(t)
        case .namespace(let attributes):
            global("argparse", "Namespace")
            out.append(0x29); out.append(0x81); put()  // EMPTY_TUPLE NEWOBJ
            out.append(0x7d); put()  // EMPTY_DICT (the attribute dict)
            if !attributes.isEmpty { try dictItems(attributes, depth: depth) }
            out.append(0x62)  // BUILD
        case .intDict(let items):
            out.append(0x7d); put()  // EMPTY_DICT
            var start = 0
            while start < items.count {
                out.append(0x28)  // MARK
                for (k, v) in items[start ..< min(start + 1000, items.count)] {
                    int(k)
                    try value(v, depth: depth + 1)
                }
                out.append(0x75)  // SETITEMS
                start += 1000
            }
        }
    }

    /// `_rebuild_tensor_v2(('storage', torch.<T>Storage, key, 'cpu', numel), 0, size, stride, False, OrderedDict())`
    /// with a fresh contiguous storage per tensor.
    private mutating func tensor(_ t: TensorView) throws {
        guard let storageClass = TorchWriter.storageClass(t.dtype) else {
            throw PPError(.unsupported, file: path, "dtype \(t.dtype.shortName) has no legacy torch storage class")
        }
        let key = storages.count
        storages.append(t)
        global("torch._utils", "_rebuild_tensor_v2")
        out.append(0x28)  // MARK (arguments)
        out.append(0x28)  // MARK (persistent id)
        string("storage")
        global("torch", storageClass)
        string(String(key))
        string("cpu")
        int(Int64(t.elementCount))
        out.append(0x74)  // TUPLE
        out.append(0x51)  // BINPERSID
        int(0)
        try tuple(t.shape.map { .int(Int64($0)) }, depth: 0)
        try tuple(TensorView.rowMajorStrides(t.shape).map { .int(Int64($0)) }, depth: 0)
        out.append(0x89)  // NEWFALSE: requires_grad
        global("collections", "OrderedDict")
        out.append(0x29); out.append(0x52)  // EMPTY_TUPLE REDUCE: backward hooks
        out.append(0x74)  // TUPLE
        out.append(0x52)  // REDUCE
    }
}
