import Dispatch
import PPFileIO
import PPJSON
import PPTensor

/// Writes safetensors files the way the reference `prepare` lays them out, so the same tensors and
/// metadata always give the same bytes (and the same bytes as the reference writer).
public enum SafetensorsWriter {
    /// Where everything goes in a file: the 8-byte length and padded header, then each tensor's bytes.
    public struct Layout {
        /// The 8-byte little-endian header length followed by the header JSON padded with spaces.
        public let prefix: [UInt8]
        /// Tensors in file order with their data offsets (relative to the data buffer).
        public let entries: [(name: String, tensor: TensorView, begin: Int, end: Int)]
        /// Total bytes of the file.
        public var fileSize: Int { prefix.count + (entries.last?.end ?? 0) }
    }

    /// The file layout: tensors by dtype (the reference's order, descending, which puts wider types
    /// first) then by name in byte order; compact JSON with `__metadata__` first when there is
    /// metadata, then the tensors in offset order; padded with spaces so the data starts at a
    /// multiple of 8. Refuses a tensor named `__metadata__` and repeated metadata keys, which
    /// would make a file no reader accepts.
    public static func layout(_ tensors: TensorDict, metadata: [(String, String)], origin: String = "safetensors output") throws -> Layout {
        let names = tensors.names.sorted { a, b in
            let da = tensors[a]!.dtype.safetensorsRank, db = tensors[b]!.dtype.safetensorsRank
            if da != db { return da > db }
            return Array(a.utf8).lexicographicallyPrecedes(Array(b.utf8))
        }
        var header: [(String, JSONValue)] = []
        header.reserveCapacity(names.count + 1)
        if !metadata.isEmpty {
            var seen = Set<[UInt8]>()
            for (k, _) in metadata where !seen.insert(Array(k.utf8)).inserted {
                throw PPError.badInput(origin, entry: "__metadata__", "metadata key \(JSON.quoted(k)) is given twice")
            }
            header.append(("__metadata__", .object(JSONObject(metadata.map { ($0.0, .string($0.1)) }))))
        }
        var entries: [(name: String, tensor: TensorView, begin: Int, end: Int)] = []
        entries.reserveCapacity(names.count)
        var offset = 0
        for name in names {
            guard name != "__metadata__" else {
                throw PPError.badInput(origin, entry: name, "a tensor cannot be named __metadata__ in a safetensors file")
            }
            let t = tensors[name]!
            guard TensorView.elementCount(t.shape) != nil else {
                throw PPError.badInput(origin, entry: name, "shape \(t.shape) is invalid")
            }
            let end = offset + t.byteCount
            header.append((name, .object(JSONObject([
                ("dtype", .string(t.dtype.rawValue)),
                ("shape", .array(t.shape.map { .int(Int64($0)) })),
                ("data_offsets", .array([.int(Int64(offset)), .int(Int64(end))])),
            ]))))
            entries.append((name, t, offset, end))
            offset = end
        }
        var json = JSON.serializedBytes(.object(JSONObject(header)), pretty: false)
        json.append(contentsOf: repeatElement(0x20, count: (8 - json.count % 8) % 8))
        var prefix: [UInt8] = []
        prefix.reserveCapacity(8 + json.count)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { prefix.append(contentsOf: $0) }
        prefix.append(contentsOf: json)
        return Layout(prefix: prefix, entries: entries)
    }

    /// Writes `tensors` to `path` atomically (temporary file, flush, rename), streaming each tensor's
    /// bytes from its storage; only a strided (non-contiguous) view is gathered, one at a time.
    /// Returns the sha256 of the file, computed on its own thread while the bytes are written (neither
    /// waits for the other, up to a window), and drops each range of a mapped source once it is both
    /// written and hashed, so resident memory stays flat.
    @discardableResult
    public static func write(_ tensors: TensorDict, metadata: [(String, String)], to path: String,
                             progress: ((Int, Int) -> Void)? = nil) throws -> String {
        let plan = try layout(tensors, metadata: metadata, origin: path)
        let file = try FileOutput.PendingFile(path: path)
        let hasher = PipelinedSHA256()
        // Whatever happens, the hash thread is idle when this returns: the pieces it reads stay valid
        // until then, and no hash runs on while the process exits after an error.
        defer { hasher.drain() }
        try file.write(plan.prefix)
        let prefix = plan.prefix
        hasher.enqueue { $0.update(prefix) }
        let chunk = 32 << 20
        for entry in plan.entries {
            let tensor = entry.tensor
            if tensor.contiguousBytes != nil {
                // The hash thread reads the same mapped bytes; `tensor` keeps its storage alive.
                let count = tensor.byteCount
                var offset = 0
                while offset < count {
                    let piece = offset ..< min(offset + chunk, count)
                    hasher.enqueue { $0.update(UnsafeRawBufferPointer(rebasing: tensor.contiguousBytes![piece])) }
                    if let range = tensor.contiguousByteRange {
                        tensor.storage.populate(range.lowerBound + piece.lowerBound ..< range.lowerBound + piece.upperBound)
                    }
                    try file.write(UnsafeRawBufferPointer(rebasing: tensor.contiguousBytes![piece]))
                    offset = piece.upperBound
                }
                // Queued after the entry's pieces: runs once they are hashed, and they are written.
                if let range = tensor.contiguousByteRange { hasher.afterQueued { tensor.storage.dropPages(range) } }
            } else {
                let gathered = tensor.rowMajorBytes()
                hasher.enqueue { $0.update(gathered) }
                try file.write(gathered)
            }
            progress?(entry.end, plan.entries.last?.end ?? 0)
        }
        try file.commit()
        return hasher.finishHex()
    }

    /// The whole file in memory: for small files and tests.
    public static func serialize(_ tensors: TensorDict, metadata: [(String, String)]) throws -> [UInt8] {
        let plan = try layout(tensors, metadata: metadata)
        var out = plan.prefix
        out.reserveCapacity(plan.fileSize)
        for entry in plan.entries {
            withRowMajorBytes(entry.tensor) { out.append(contentsOf: $0) }
        }
        return out
    }

    private static func withRowMajorBytes<R>(_ t: TensorView, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        if let bytes = t.contiguousBytes { return try body(bytes) }
        return try t.rowMajorBytes().withUnsafeBytes(body)
    }
}

/// A SHA-256 of a stream of pieces, hashed in order on its own serial queue while the caller goes on
/// (writing the same pieces): the output hash and the write share the cores instead of taking turns.
/// The caller may run at most `window` pieces ahead, which bounds the memory the pieces keep alive.
/// `@unchecked Sendable` because `hasher` is touched only on the serial `queue` (`finishHex` runs there
/// too); each piece's closure captures what owns its bytes (a tensor and so its storage, or an array),
/// so they stay alive until hashed.
private final class PipelinedSHA256: @unchecked Sendable {
    private var hasher = SHA256()
    private let queue = DispatchQueue(label: "ppflow.safetensors.sha256")
    private let window = DispatchSemaphore(value: 8)

    /// Runs `update` (which feeds one piece) after every piece queued before it; waits while `window`
    /// pieces are queued.
    func enqueue(_ update: @escaping @Sendable (inout SHA256) -> Void) {
        window.wait()
        queue.async {
            update(&self.hasher)
            self.window.signal()
        }
    }

    /// Runs `body` on the hash thread once every piece queued so far is hashed.
    func afterQueued(_ body: @escaping @Sendable () -> Void) { queue.async(execute: body) }

    /// Waits until every queued piece is hashed.
    func drain() { queue.sync {} }

    func finishHex() -> String { queue.sync { hasher.finishHex() } }
}
