import PPFileIO
import PPTensor

/// A `torch.save` zip archive, read without executing anything: the unpickled root value, with
/// tensors as views into the archive's `data/<key>` records (no copies for stored records).
public struct TorchCheckpoint: Sendable {
    public let path: String
    public let root: PickleValue
    /// The archive's top folder (`sit` for `sit.pt`, `archive` for buffers).
    public let archiveName: String
    /// The toolkit's description of the model (`<root>/\(TorchCheckpoint.descriptionRecord)`), when the
    /// toolkit wrote the file; torch.load ignores records it does not ask for.
    public var descriptionBytes: [UInt8]? = nil

    /// The record a toolkit-written `.pt` carries its model description in (JSON: architecture, pyramid,
    /// objective, guidance; what the native folder's config.json holds, without provenance).
    public static let descriptionRecord = "ppflow_config.json"

    public static func read(path: String) throws -> TorchCheckpoint {
        try read(archive: try ZipArchive(path: path))
    }

    public static func read(storage: ByteStorage, origin: String) throws -> TorchCheckpoint {
        try read(archive: try ZipArchive(storage: storage, origin: origin))
    }

    /// A checkpoint occupying `range` of `storage` (e.g. a stored `.pt` inside another zip).
    public static func read(storage: ByteStorage, range: Range<Int>, origin: String) throws -> TorchCheckpoint {
        try read(archive: try ZipArchive(storage: storage, range: range, origin: origin))
    }

    public static func read(archive: ZipArchive) throws -> TorchCheckpoint {
        let origin = archive.origin
        guard let first = archive.entries.first else { throw PPError.badInput(origin, "the zip archive is empty, not a torch.save file") }
        guard let slash = first.name.firstIndex(of: "/") else {
            throw PPError.badInput(origin, entry: first.name, "first entry is not inside a folder, so this is not a torch.save archive")
        }
        let rootName = String(first.name[..<slash])
        for e in archive.entries where !e.name.hasPrefix(rootName + "/") {
            throw PPError.badInput(origin, entry: e.name, "entry outside the archive folder '\(rootName)/'")
        }
        let pickleName = "\(rootName)/data.pkl"
        guard let pickleEntry = archive.entry(named: pickleName) else {
            throw PPError.badInput(origin, entry: pickleName, "missing: not a torch.save archive (TorchScript files are not supported)")
        }
        let byteorderName = "\(rootName)/byteorder"
        if let order = archive.entry(named: byteorderName) {
            let text = String(decoding: try archive.bytes(of: order), as: UTF8.self).trimmingWhitespace()
            if text == "big" {
                throw PPError(.unsupported, file: origin, entry: byteorderName, "big-endian checkpoint; only little-endian tensor data is read")
            }
            guard text == "little" else { throw PPError.badInput(origin, entry: byteorderName, "unknown byte order '\(text)'") }
        }
        let resolver = RecordResolver(archive: archive, folder: rootName)
        let (pickleStorage, pickleOffset, pickleCount) = try archive.contents(of: pickleEntry)
        let root = try withExtendedLifetime(pickleStorage) {
            try Unpickler.load(UnsafeRawBufferPointer(rebasing: pickleStorage.bytes[pickleOffset ..< pickleOffset + pickleCount]),
                               origin: origin, entry: pickleName, resolver: resolver)
        }
        var checkpoint = TorchCheckpoint(path: origin, root: root, archiveName: rootName)
        if let record = archive.entry(named: "\(rootName)/\(descriptionRecord)") {
            checkpoint.descriptionBytes = try archive.bytes(of: record)
        }
        return checkpoint
    }

    /// Every dict under the root whose values are all tensors (non-empty, string keys), by path:
    /// "" for a bare state dict, "model"/"ema" for train.py checkpoints, "opt/state/3" for optimizer
    /// moments; nested keys joined with "/". Tensors in pickle order. Cycles and deep nesting are cut,
    /// and so is the walk after `maximumVisits` values: tuples are values, not objects, so a pickle
    /// can share one tuple twice per level (`t1 = (t0, t0)`, `t2 = (t1, t1)`, ...) and 40 levels of
    /// that would otherwise take 2^40 steps.
    public func stateDicts() -> [(path: String, tensors: TensorDict)] {
        var found: [(path: String, tensors: TensorDict)] = []
        var seen = Set<ObjectIdentifier>()
        var budget = TorchCheckpoint.maximumVisits
        func visit(_ value: PickleValue, _ path: String, _ depth: Int) {
            guard depth < 64, budget > 0 else { return }
            budget -= 1
            switch value {
            case .dict(let d):
                guard seen.insert(ObjectIdentifier(d)).inserted else { return }
                if let tensors = TorchCheckpoint.tensorDict(d) {
                    found.append((path, tensors))
                    return
                }
                for (k, v) in d.items { visit(v, path.isEmpty ? k.keyText : path + "/" + k.keyText, depth + 1) }
            case .list(let l):
                guard seen.insert(ObjectIdentifier(l)).inserted else { return }
                for (i, v) in l.items.enumerated() { visit(v, path.isEmpty ? "\(i)" : "\(path)/\(i)", depth + 1) }
            case .tuple(let t):
                for (i, v) in t.enumerated() { visit(v, path.isEmpty ? "\(i)" : "\(path)/\(i)", depth + 1) }
            default:
                break
            }
        }
        visit(root, "", 0)
        return found
    }

    /// How many values `stateDicts()` looks at, at most (a SiT-XL train checkpoint with its optimizer
    /// state has about 2 000).
    public static let maximumVisits = 1 << 16

    /// The state dict at `path` ("" for the root), if that value is one.
    public func stateDict(at path: String) -> TensorDict? {
        stateDicts().first { $0.path == path }?.tensors
    }

    static func tensorDict(_ d: PickleDict) -> TensorDict? {
        guard !d.items.isEmpty else { return nil }
        var tensors = TensorDict()
        for (k, v) in d.items {
            guard case .string(let name) = k, case .tensor(let t) = v, tensors[name] == nil else { return nil }
            tensors[name] = t.view
        }
        return tensors
    }

    /// Top-level entries that are not state dicts (train.py's `args`, `opt`, ...), rendered as bounded
    /// one-line summaries for `inspect`. Empty for a bare state dict.
    public func describeNonTensorEntries() -> [(key: String, summary: String)] {
        guard case .dict(let d) = root else { return [("", root.summary())] }
        if TorchCheckpoint.tensorDict(d) != nil { return [] }
        return d.items.compactMap { item in
            if case .dict(let inner) = item.value, TorchCheckpoint.tensorDict(inner) != nil { return nil }
            return (item.key.keyText, item.value.summary())
        }
    }
}

/// Finds `<root>/data/<key>` and checks its size against the persistent id.
private final class RecordResolver: TorchStorageResolver {
    let archive: ZipArchive
    let folder: String
    var cache: [String: (dtype: DType, numel: Int, storage: ByteStorage, offset: Int)] = [:]

    init(archive: ZipArchive, folder: String) {
        self.archive = archive
        self.folder = folder
    }

    func storage(key: String, dtype: DType, numel: Int) throws -> (storage: ByteStorage, offset: Int) {
        let name = "\(folder)/data/\(key)"
        if let hit = cache[key] {
            guard hit.dtype.byteSize * hit.numel == dtype.byteSize * numel else {
                throw PPError.badInput(archive.origin, entry: name, "storage is used with two different sizes")
            }
            return (hit.storage, hit.offset)
        }
        guard let entry = archive.entry(named: name) else { throw PPError.badInput(archive.origin, entry: name, "storage record is missing") }
        let (expected, overflow) = numel.multipliedReportingOverflow(by: dtype.byteSize)
        guard !overflow, entry.uncompressedSize == expected else {
            throw PPError.badInput(archive.origin, entry: name,
                                   "storage record holds \(entry.uncompressedSize) bytes, expected \(numel) × \(dtype.byteSize) = \(overflow ? "overflow" : String(expected))")
        }
        let (storage, offset, _) = try archive.contents(of: entry)
        cache[key] = (dtype, numel, storage, offset)
        return (storage, offset)
    }
}

extension PickleValue {
    /// A dict key as text for paths ("model", "3").
    var keyText: String {
        switch self {
        case .string(let s): return s
        case .int(let i): return String(i)
        default: return summary(maxItems: 3, maxDepth: 2)
        }
    }
}

extension String {
    func trimmingWhitespace() -> String {
        let scalars = unicodeScalars
        guard let start = scalars.firstIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        let end = scalars.lastIndex(where: { !$0.properties.isWhitespace })!
        return String(scalars[start...end])
    }
}
