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
    /// Returns the sha256 of the file, computed on a second core while the bytes are written, and
    /// drops each written range of a mapped source so resident memory stays flat.
    @discardableResult
    public static func write(_ tensors: TensorDict, metadata: [(String, String)], to path: String,
                             progress: ((Int, Int) -> Void)? = nil) throws -> String {
        let plan = try layout(tensors, metadata: metadata, origin: path)
        let file = try FileOutput.PendingFile(path: path)
        let hasher = OverlappedSHA256()
        try file.write(plan.prefix)
        hasher.update(plan.prefix)
        let chunk = 32 << 20
        for entry in plan.entries {
            try withRowMajorBytes(entry.tensor) { bytes in
                var offset = 0
                while offset < bytes.count {
                    let piece = UnsafeRawBufferPointer(rebasing: bytes[offset ..< min(offset + chunk, bytes.count)])
                    // Hash this piece on another thread while this one writes it.
                    hasher.start(piece)
                    let written = Result { try file.write(piece) }
                    hasher.wait()
                    try written.get()
                    offset += piece.count
                }
            }
            if let range = entry.tensor.contiguousByteRange { entry.tensor.storage.dropPages(range) }
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

/// A SHA-256 that hashes one piece on a dispatch worker while the calling thread writes the same piece.
/// `@unchecked Sendable` because the hasher and the piece are handed between two threads by hand, never used
/// by both at once: `start` stores the piece and only then dispatches the update (dispatching orders the
/// store before the worker runs), and the caller calls nothing else until `wait()` returns, which the
/// group's leave/wait pair orders after the worker's update. Both threads only read the piece's bytes,
/// which the caller keeps alive and unchanged until `wait()` returns.
private final class OverlappedSHA256: @unchecked Sendable {
    private var hasher = SHA256()
    private var piece = UnsafeRawBufferPointer(start: nil, count: 0)
    private let group = DispatchGroup()

    /// Hashes `bytes` on the calling thread (no piece may be in flight).
    func update(_ bytes: [UInt8]) { hasher.update(bytes) }

    /// Starts hashing `bytes` on another thread; call `wait()` before anything else.
    func start(_ bytes: UnsafeRawBufferPointer) {
        piece = bytes
        DispatchQueue.global().async(group: group) { self.hasher.update(self.piece) }
    }

    func wait() {
        group.wait()
        piece = UnsafeRawBufferPointer(start: nil, count: 0)
    }

    func finishHex() -> String { hasher.finishHex() }
}
