import PPFileIO
import PPJSON
import PPTensor

/// A safetensors file: an 8-byte little-endian header length N, N bytes of JSON header (padded
/// with spaces), then the data buffer the header's `data_offsets` index into.
public struct SafetensorsFile: Sendable {
    /// Where the bytes came from (a path, or "archive.zip:entry"), for messages.
    public let path: String
    /// The tensors in data-offset order. The views point into `storage`, nothing is copied.
    public let tensors: TensorDict
    /// `__metadata__` (string to string only), in file order.
    public let metadata: [(String, String)]
    /// N, the length of the JSON header including its padding (the data starts at 8 + N).
    public let headerByteCount: Int
    /// The bytes the views point into (usually a read-only mapping of the file).
    public let storage: ByteStorage

    /// The reference reader's limit on N.
    public static let maxHeaderByteCount = 100_000_000

    /// Maps `path` read-only and parses it.
    public static func open(_ path: String) throws -> SafetensorsFile {
        try parse(ByteStorage(mappingFile: path), origin: path)
    }

    /// Parses safetensors bytes (a mapped file, a zip entry, ...). Every error is a `PPError`
    /// naming `origin` and, when there is one, the tensor.
    ///
    /// The checks follow the reference reader (`SafeTensors::read_metadata`, `Metadata::validate`) in
    /// its order: size of the length field; header length limit and bounds; UTF-8; JSON (duplicate
    /// keys refused); schema; dtype names; element-count overflow; data offsets that tile the data
    /// buffer with no gap or overlap and match each tensor's byte size; the last tensor ending
    /// exactly at the end of the file. Nothing is allocated from header numbers before they are
    /// checked against the file size. Dtypes the format defines but the toolkit cannot hold (float8,
    /// float6, float4, complex) are reported last, as `.unsupported`, once the file is known sound.
    public static func parse(_ storage: ByteStorage, origin: String) throws -> SafetensorsFile {
        let bytes = storage.bytes
        func bad(_ entry: String?, _ message: String) -> PPError { PPError.badInput(origin, entry: entry, message) }

        // 1. The length field.
        guard bytes.count >= 8 else {
            throw bad(nil, "file is \(bytes.count) bytes, too short for the 8-byte header length of a safetensors file")
        }
        let declared = bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self).littleEndian
        // 2. The header's size.
        guard declared <= UInt64(maxHeaderByteCount) else {
            throw bad(nil, "header length \(declared) exceeds the \(maxHeaderByteCount)-byte limit (not a safetensors file?)")
        }
        let n = Int(declared)
        guard 8 + n <= bytes.count else {
            throw bad(nil, "header length \(n) runs past the end of the file (8 + \(n) > \(bytes.count) bytes)")
        }
        let headerBytes = UnsafeRawBufferPointer(rebasing: bytes[8 ..< 8 + n])
        let dataStart = 8 + n
        let dataSize = bytes.count - dataStart

        // 3. UTF-8, then JSON.
        if let at = UTF8Check.firstInvalidOffset(headerBytes) {
            throw bad(nil, "header is not valid UTF-8 (byte \(at) of the header)")
        }
        let header: JSONValue
        do {
            header = try JSON.parse(headerBytes, origin: origin)
        } catch let e as PPError {
            throw bad(e.entry, "header: \(e.message)")  // the entry is the key given twice, if that is the problem
        }
        guard case .object(let top) = header else {
            throw bad(nil, "header is \(header.kindDescription), expected a JSON object")
        }

        // 4. Schema.
        struct Entry {
            var name: String
            var order: Int
            var dtypeName: String
            var dtype: StoredDType? = nil
            var shape: [Int]
            var begin: Int
            var end: Int
        }
        var metadata: [(String, String)] = []
        var entries: [Entry] = []
        entries.reserveCapacity(top.count)
        for (name, value) in top.pairs {
            if name == "__metadata__" {
                switch value {
                case .null: continue
                case .object(let m):
                    for (k, v) in m.pairs {
                        guard case .string(let s) = v else {
                            throw bad(name, "metadata value for \(JSON.quoted(k)) is \(v.kindDescription); __metadata__ may only map strings to strings")
                        }
                        metadata.append((k, s))
                    }
                    continue
                default:
                    throw bad(name, "__metadata__ is \(value.kindDescription), expected an object of strings")
                }
            }
            guard case .object(let info) = value else {
                throw bad(name, "entry is \(value.kindDescription), expected {\"dtype\", \"shape\", \"data_offsets\"}")
            }
            guard let dtypeValue = info["dtype"] else { throw bad(name, "missing \"dtype\"") }
            guard case .string(let dtypeName) = dtypeValue else {
                throw bad(name, "\"dtype\" is \(dtypeValue.kindDescription), expected a string")
            }
            guard let shapeValue = info["shape"] else { throw bad(name, "missing \"shape\"") }
            guard case .array(let dims) = shapeValue else {
                throw bad(name, "\"shape\" is \(shapeValue.kindDescription), expected an array of non-negative integers")
            }
            var shape: [Int] = []
            shape.reserveCapacity(dims.count)
            for d in dims {
                guard case .int(let v) = d, v >= 0 else {
                    throw bad(name, "\"shape\" \(JSON.serialize(shapeValue, pretty: false)) has \(JSON.serialize(d, pretty: false)), expected non-negative integers only")
                }
                shape.append(Int(v))
            }
            guard let offsetsValue = info["data_offsets"] else { throw bad(name, "missing \"data_offsets\"") }
            guard case .array(let offsets) = offsetsValue, offsets.count == 2,
                case .int(let begin) = offsets[0], case .int(let end) = offsets[1], begin >= 0, end >= 0
            else {
                throw bad(name, "\"data_offsets\" is \(JSON.serialize(offsetsValue, pretty: false)), expected [begin, end] with non-negative integers")
            }
            entries.append(Entry(name: name, order: entries.count, dtypeName: dtypeName, shape: shape, begin: Int(begin), end: Int(end)))
        }

        // 5. Dtype names.
        for k in entries.indices {
            guard let d = StoredDType(headerName: entries[k].dtypeName) else {
                throw bad(entries[k].name, "unknown dtype \(JSON.quoted(entries[k].dtypeName))")
            }
            entries[k].dtype = d
        }

        // 6. Sizes: element count times bits must not overflow, and must be whole bytes.
        var byteSizes: [Int] = []
        byteSizes.reserveCapacity(entries.count)
        for e in entries {
            guard let count = TensorView.elementCount(e.shape),
                case let (bits, overflow) = count.multipliedReportingOverflow(by: e.dtype!.bits), !overflow
            else {
                throw bad(e.name, "shape \(e.shape) has too many elements (the size overflows)")
            }
            guard bits % 8 == 0 else {
                throw bad(e.name, "\(count) elements of \(e.dtypeName) do not fill whole bytes")
            }
            byteSizes.append(bits / 8)
        }

        // 7. Offsets tile the data buffer: in (begin, end) order, each tensor starts where the previous
        // one ended, ends no earlier than it starts, and spans exactly its byte size.
        var order = Array(entries.indices)
        order.sort { a, b in
            (entries[a].begin, entries[a].end, entries[a].order) < (entries[b].begin, entries[b].end, entries[b].order)
        }
        var expected = 0
        var previous: String? = nil
        for k in order {
            let e = entries[k]
            let range = "data_offsets [\(e.begin), \(e.end)]"
            if e.begin != expected {
                if let previous {
                    if e.begin > expected {
                        throw bad(e.name, "\(range) leave a gap: the previous tensor \(JSON.quoted(previous)) ends at byte \(expected) of the data")
                    }
                    throw bad(e.name, "\(range) overlap the previous tensor \(JSON.quoted(previous)), which ends at byte \(expected) of the data")
                }
                throw bad(e.name, "\(range) leave a gap: the first tensor must start at byte 0 of the data")
            }
            guard e.end >= e.begin else {
                throw bad(e.name, "\(range) end before they begin")
            }
            guard e.end - e.begin == byteSizes[k] else {
                throw bad(e.name, "\(range) hold \(e.end - e.begin) bytes, but shape \(e.shape) of \(e.dtypeName) needs \(byteSizes[k])")
            }
            expected = e.end
            previous = e.name
        }

        // 8. The data buffer is exactly what the tensors cover.
        if expected != dataSize {
            if expected > dataSize {
                let first = order.first { entries[$0].end > dataSize }.map { entries[$0] }!
                throw bad(first.name, "data is truncated: the tensor ends at byte \(first.end) of the data, but the file holds only \(dataSize) data bytes")
            }
            throw bad(previous, "\(dataSize - expected) trailing bytes after the last tensor (the data is \(dataSize) bytes, the tensors cover \(expected))")
        }

        // 9. Sound, but holding something the toolkit cannot represent.
        for k in order {
            if case .unsupported(let dname, _) = entries[k].dtype! {
                throw PPError(.unsupported, file: origin, entry: entries[k].name,
                              "unsupported dtype \(dname): float8, float6, float4 and complex tensors cannot be read")
            }
        }

        var tensors = TensorDict()
        for k in order {
            let e = entries[k]
            guard case .supported(let dtype) = e.dtype! else { continue }
            tensors[e.name] = TensorView(dtype: dtype, shape: e.shape, storage: storage, byteOffset: dataStart + e.begin)
        }
        return SafetensorsFile(path: origin, tensors: tensors, metadata: metadata, headerByteCount: n, storage: storage)
    }
}
