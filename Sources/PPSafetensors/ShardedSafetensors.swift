import PPFileIO
import PPJSON
import PPTensor

/// A checkpoint split over several safetensors files, described by a `*.safetensors.index.json`:
/// `{"metadata": {...}, "weight_map": {"tensor name": "shard file name", ...}}` (the Hugging Face
/// layout). Shard names are relative to the index's folder.
public struct ShardedSafetensors {
    /// Opens every shard the index names and checks that the index and the shards agree exactly:
    /// each mapped tensor is in the shard the map names, every shard tensor is in the map, and no
    /// tensor is in two shards. Returns the tensors in `weight_map` order (views into the shards'
    /// mappings) and the index's `metadata`, with non-string values as compact JSON text
    /// (`"total_size": 123` gives `("total_size", "123")`).
    public static func open(indexPath: String) throws -> (tensors: TensorDict, metadata: [(String, String)]) {
        let folder = FileOutput.directory(of: indexPath)
        let storage = try ByteStorage(mappingFile: indexPath)
        return try storage.withBytes { indexBytes in try open(index: indexBytes, origin: indexPath) { file in
            try SafetensorsFile.open("\(folder)/\(file)")
        } }
    }

    /// The same checks for an index that is not a plain file (a zipped folder): `openShard` opens a shard
    /// by its name relative to the index's folder.
    public static func open(index bytes: UnsafeRawBufferPointer, origin indexPath: String,
                            openShard: (String) throws -> SafetensorsFile) throws -> (tensors: TensorDict, metadata: [(String, String)]) {
        let index = try JSON.parse(bytes, origin: indexPath)
        guard case .object(let top) = index else {
            throw PPError.badInput(indexPath, "index is \(index.kindDescription), expected an object with \"weight_map\"")
        }
        var metadata: [(String, String)] = []
        if let m = top["metadata"], !m.isNull {
            guard case .object(let object) = m else {
                throw PPError.badInput(indexPath, entry: "metadata", "\"metadata\" is \(m.kindDescription), expected an object")
            }
            for (k, v) in object.pairs {
                metadata.append((k, v.stringValue ?? JSON.serialize(v, pretty: false)))
            }
        }
        guard let mapValue = top["weight_map"] else {
            throw PPError.badInput(indexPath, "index has no \"weight_map\"")
        }
        guard case .object(let map) = mapValue else {
            throw PPError.badInput(indexPath, entry: "weight_map", "\"weight_map\" is \(mapValue.kindDescription), expected an object")
        }

        // The map, and the shard files in order of first mention.
        var mapped: [String: String] = [:]
        var shardFiles: [String] = []
        var seenFiles = Set<String>()
        for (name, fileValue) in map.pairs {
            guard case .string(let file) = fileValue else {
                throw PPError.badInput(indexPath, entry: name, "weight_map value is \(fileValue.kindDescription), expected a shard file name")
            }
            try checkShardName(file, indexPath: indexPath, tensor: name)
            if seenFiles.insert(file).inserted { shardFiles.append(file) }
            mapped[name] = file
        }

        var found: [String: (file: String, tensor: TensorView)] = [:]
        for file in shardFiles {
            let shard = try openShard(file)
            for (name, tensor) in shard.tensors.items {
                if let earlier = found[name] {
                    throw PPError.badInput(indexPath, entry: name, "tensor is in two shards, \(earlier.file) and \(file)")
                }
                guard let expected = mapped[name] else {
                    throw PPError.badInput(indexPath, entry: name, "tensor is in shard \(file) but not in the weight_map")
                }
                guard expected == file else {
                    throw PPError.badInput(indexPath, entry: name, "weight_map puts the tensor in \(expected), but it is in \(file)")
                }
                found[name] = (file, tensor)
            }
        }

        var tensors = TensorDict()
        for (name, fileValue) in map.pairs {
            guard let hit = found[name] else {
                throw PPError.badInput(indexPath, entry: name, "weight_map puts the tensor in \(fileValue.stringValue!), which has no such tensor")
            }
            tensors[name] = hit.tensor
        }
        return (tensors, metadata)
    }

    /// Writes `tensors` as `<baseName>-00001-of-0000N.safetensors` shards of at most `maxShardBytes`
    /// of tensor data each (a bigger tensor gets a shard of its own) plus
    /// `<baseName>.safetensors.index.json`, all in `folder`. Tensors are spread in the writer's order
    /// (dtype, then name); `metadata` goes in every shard's `__metadata__` and in the index's
    /// `metadata`, followed by `total_size`. The index is written last, each file atomically.
    /// Returns the index path.
    @discardableResult
    public static func write(_ tensors: TensorDict, metadata: [(String, String)], folder: String,
                             baseName: String = "model", maxShardBytes: Int) throws -> String {
        precondition(maxShardBytes > 0, "maxShardBytes must be positive")
        let order = try SafetensorsWriter.layout(tensors, metadata: [], origin: folder).entries
        var groups: [[String]] = []
        var current: [String] = [], currentBytes = 0
        for entry in order {
            let size = entry.tensor.byteCount
            if !current.isEmpty && currentBytes + size > maxShardBytes {
                groups.append(current)
                current = []; currentBytes = 0
            }
            current.append(entry.name)
            currentBytes += size
        }
        if !current.isEmpty || groups.isEmpty { groups.append(current) }

        func numbered(_ n: Int) -> String {
            let s = String(n)
            return String(repeating: "0", count: max(0, 5 - s.count)) + s
        }
        var weightMap: [(String, JSONValue)] = []
        for (k, names) in groups.enumerated() {
            let file = "\(baseName)-\(numbered(k + 1))-of-\(numbered(groups.count)).safetensors"
            var shard = TensorDict()
            for name in names {
                shard[name] = tensors[name]!
                weightMap.append((name, .string(file)))
            }
            try SafetensorsWriter.write(shard, metadata: metadata, to: "\(folder)/\(file)")
        }
        weightMap.sort { Array($0.0.utf8).lexicographicallyPrecedes(Array($1.0.utf8)) }
        var indexMetadata: [(String, JSONValue)] = metadata.map { ($0.0, .string($0.1)) }
        indexMetadata.append(("total_size", .int(Int64(tensors.totalBytes))))
        let index: JSONValue = .object(JSONObject([
            ("metadata", .object(JSONObject(indexMetadata))),
            ("weight_map", .object(JSONObject(weightMap))),
        ]))
        let indexPath = "\(folder)/\(baseName).safetensors.index.json"
        try FileOutput.writeFile(indexPath, bytes: JSON.serializedBytes(index) + [0x0A])
        return indexPath
    }

    /// Shards must sit in the index's folder or below it, each spelled one way.
    private static func checkShardName(_ file: String, indexPath: String, tensor: String) throws {
        let parts = file.split(separator: "/", omittingEmptySubsequences: false)
        guard !file.isEmpty, !file.hasPrefix("/"), !file.utf8.contains(0),
            !parts.contains(where: { $0 == ".." || $0 == "." || $0.isEmpty })
        else {
            throw PPError.badInput(indexPath, entry: tensor, "shard name \(JSON.quoted(file)) must be a relative path inside the index's folder")
        }
    }
}
