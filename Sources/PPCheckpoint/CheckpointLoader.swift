import PPFileIO
import PPJSON
import PPSafetensors
import PPTensor
import PPTorchFormat

#if canImport(Glibc)
import Glibc
#endif

/// Which state dict of a train checkpoint (`{model, ema, opt, args}`) to take.
public enum WeightsChoice: String, Sendable, CaseIterable {
    case ema, model
}

/// Reads DiT/SiT/PPFlow weights in every form people have them, detecting the format by content
/// (never by file name): safetensors (single or sharded), torch.save zips (bare state dicts and train
/// checkpoints), diffusers folders, native PPFlow folders, and zips of any of these.
public enum CheckpointLoader {
    /// `path` is a file or folder; when nothing exists there and it looks like a Hugging Face hub id
    /// (`owner/name[@revision][/subfolder]`), the snapshot in the local hub cache is loaded instead
    /// (HubCache; `environment` defaults to this process's). Every command's model argument comes here.
    /// `requireObjective`: refuse a checkpoint whose objective is unknown (no metadata, no release name)
    /// before any weights are read (a native folder's hash check reads them all): the sampler and the
    /// trainer cannot use it, and an XL model takes seconds and gigabytes to load.
    /// `verifyHashes`: check a native folder's weights against the sha256 its config.json records; off only
    /// on the user's word (`--no-verify-hash`, for people who edit files by hand).
    public static func load(_ path: String, weights: WeightsChoice? = nil, requireObjective: Bool = false,
                            verifyHashes: Bool = true, environment: [String: String]? = nil) throws -> LoadedCheckpoint {
        var st = stat()
        guard stat(path, &st) == 0 else {
            guard HubCache.parse(path) != nil else { throw PPError(.missingInput, file: path, "no such file or folder") }
            let resolved = try HubCache.resolve(path, environment: environment ?? HubCache.processEnvironment())
            var loaded = try load(resolved, weights: weights, requireObjective: requireObjective, verifyHashes: verifyHashes, environment: environment)
            loaded.notes.insert("\(path): the Hugging Face cache snapshot \(resolved)", at: 0)
            return loaded
        }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            var loaded = try loadTree(DirectoryTree(path: path), weights: weights, requireObjective: requireObjective, verifyHashes: verifyHashes)
            loaded.containers.insert("folder", at: 0)
            loaded.path = path
            if requireObjective { try loaded.requireKnownObjective() }
            return loaded
        }
        let storage = try ByteStorage(mappingFile: path)
        var loaded = try loadFile(storage, name: FileOutput.baseName(of: path), origin: path, weights: weights, requireObjective: requireObjective,
                                  verifyHashes: verifyHashes)
        // A config.json beside a single weights file supplies what the weights cannot say.
        if loaded.sidecarConfig == nil, !loaded.containers.contains("zip archive") {
            let beside = FileOutput.directory(of: path) + "/config.json"
            if let data = try? ByteStorage(mappingFile: beside) {
                let config = try data.withBytes { try JSON.parse($0, origin: beside) }
                applySidecar(config, origin: beside, to: &loaded)
            }
        }
        applyReleaseName(FileOutput.baseName(of: path), to: &loaded)
        loaded.path = path
        if requireObjective { try loaded.requireKnownObjective() }
        return loaded
    }

    /// The official releases are bare state dicts that say nothing about their objective; their file
    /// names do: `SiT-XL-2-256.pt` is a velocity model, `DiT-XL-2-256x256.pt` an epsilon (DDPM) one.
    /// Used only when no metadata spoke, and only for names of that exact form.
    public static func releaseNameObjective(_ fileName: String) -> Objective? {
        let parts = fileName.split(separator: "-")
        guard parts.count >= 3, ["S", "B", "L", "XL"].contains(parts[1]) else { return nil }
        switch parts[0] {
        case "SiT": return .velocity
        case "DiT": return .epsilon
        default: return nil
        }
    }

    static func applyReleaseName(_ fileName: String, to loaded: inout LoadedCheckpoint) {
        guard loaded.objective == .unknown, loaded.layout == .ditSit, let objective = releaseNameObjective(fileName) else { return }
        setObjective(prediction: objective == .velocity ? "velocity" : "epsilon", pathType: nil,
                     source: "the official release name \(fileName) (SiT-* velocity, DiT-* epsilon)", to: &loaded)
    }

    /// sha256 of the file at `path` (provenance); nil for a folder. A hub id is resolved as `load` does.
    public static func fileSHA256(_ path: String, environment: [String: String]? = nil) throws -> String? {
        let file = (try? HubCache.resolveModelPath(path, environment: environment ?? HubCache.processEnvironment())) ?? path
        var st = stat()
        guard stat(file, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        return try SHA256.hashFile(file)
    }

    /// One file's bytes, by content.
    static func loadFile(_ storage: ByteStorage, name: String, origin: String, weights: WeightsChoice?, requireObjective: Bool = false,
                         verifyHashes: Bool) throws -> LoadedCheckpoint {
        let bytes = storage.bytes
        if bytes.count == 0 { throw PPError.badInput(origin, "empty file") }
        if ZipArchive.looksLikeZip(bytes) {
            let archive = try ZipArchive(storage: storage, origin: origin)
            if isTorchArchive(archive) {
                return try loadTorch(storage, origin: origin, weights: weights)
            }
            var loaded = try loadTree(ZipTree(archive: archive, origin: origin), weights: weights, requireObjective: requireObjective,
                                      verifyHashes: verifyHashes)
            loaded.containers.insert("zip archive", at: 0)
            return loaded
        }
        if looksLikeSafetensors(bytes) {
            let file = try SafetensorsFile.parse(storage, origin: origin)
            return describe(file.tensors, containers: ["safetensors"], origin: origin)
        }
        if bytes.count >= 2 && bytes[0] == 0x80 && bytes[1] <= 5 {
            throw PPError(.unsupported, file: origin,
                "a legacy (pre-zip) torch.save pickle; load it with PyTorch and save it again with torch.save (zip format, the default since 1.6)")
        }
        if bytes.first == UInt8(ascii: "{") {
            throw PPError.badInput(origin, "a JSON file; pass the folder holding it and its weights (sharded index or diffusers config)")
        }
        throw PPError.badInput(origin, "not a format this tool reads (expected safetensors, a torch.save .pt, a zip, or a folder)")
    }

    /// A safetensors file starts with a little-endian u64 header length and a JSON object.
    public static func looksLikeSafetensors(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count >= 9 else { return bytes.count >= 8 && bytes.count < 9 }
        return bytes[8] == UInt8(ascii: "{")
    }

    /// torch.save archives hold `<root>/data.pkl` and nothing outside `<root>/`.
    public static func isTorchArchive(_ archive: ZipArchive) -> Bool {
        archive.entries.contains { entry in
            let parts = entry.name.split(separator: "/", omittingEmptySubsequences: false)
            return parts.count == 2 && parts[1] == "data.pkl"
        }
    }

    static func loadTorch(_ storage: ByteStorage, origin: String, weights: WeightsChoice?) throws -> LoadedCheckpoint {
        let checkpoint = try TorchCheckpoint.read(storage: storage, origin: origin)
        // Model weights live at the root or one level down ("model", "ema"); deeper tensor dicts are
        // optimizer state ("opt/state/0").
        let dicts = checkpoint.stateDicts().filter { !$0.path.contains("/") }
        guard !dicts.isEmpty else { throw PPError.badInput(origin, "no state dict of tensors inside this torch file") }
        var selected = dicts[0]
        var notes: [String] = []
        let names = dicts.map(\.path)
        if dicts.count > 1 || dicts[0].path != "" {
            let wanted = weights ?? (names.contains("ema") ? .ema : .model)
            guard let match = dicts.first(where: { $0.path == wanted.rawValue }) else {
                throw PPError(.usage, file: origin, entry: wanted.rawValue,
                    "no such state dict; this checkpoint holds \(names.map { "'\($0)'" }.joined(separator: ", "))")
            }
            selected = match
            if weights == nil { notes.append("took the '\(wanted.rawValue)' weights (choose with --weights ema|model)") }
        } else if let weights {
            notes.append("a bare state dict: --weights \(weights.rawValue) has nothing to choose from")
        }
        var loaded = describe(selected.tensors, containers: ["torch.save"], origin: origin)
        loaded.availableStateDicts = names.filter { !$0.isEmpty }
        loaded.selectedStateDict = selected.path.isEmpty ? nil : selected.path
        loaded.extraEntries = checkpoint.describeNonTensorEntries()
        loaded.notes += notes
        applyTrainArgs(checkpoint.namespaceAttributes(key: "args"), to: &loaded)
        if let bytes = checkpoint.descriptionBytes {
            let record = "\(checkpoint.archiveName)/\(TorchCheckpoint.descriptionRecord)"
            let description = try bytes.withUnsafeBytes { try JSON.parse($0, origin: "\(origin): \(record)") }
            guard description["format"]?.stringValue == NativeCheckpoint.formatName else {
                throw PPError.badInput(origin, entry: record, "not a \(NativeCheckpoint.formatName) description")
            }
            NativeCheckpoint.apply(description, source: TorchCheckpoint.descriptionRecord, to: &loaded)
            loaded.containers.append("ppflow description")
        }
        return loaded
    }

    /// A folder or a zipped folder: native PPFlow, diffusers, sharded safetensors, or one weights file
    /// with an optional config.json.
    static func loadTree(_ tree: FileTree, weights: WeightsChoice?, requireObjective: Bool = false, verifyHashes: Bool) throws -> LoadedCheckpoint {
        let root = commonRoot(tree)
        func path(_ rel: String) -> String { root.isEmpty ? rel : "\(root)/\(rel)" }
        func json(_ rel: String) throws -> JSONValue? {
            guard tree.contains(path(rel)) else { return nil }
            return try tree.open(path(rel)).withBytes { try JSON.parse($0, origin: tree.displayPath(path(rel))) }
        }

        let topConfig = try json("config.json")
        if let format = topConfig?["format"]?.stringValue, format == NativeCheckpoint.formatName {
            return try NativeCheckpoint.load(tree: tree, root: root, config: topConfig!, verifyHash: verifyHashes, requireObjective: requireObjective)
        }

        // diffusers: the transformer's own config names its class.
        let transformerFolder = tree.contains(path("transformer/config.json")) ? "transformer" : ""
        let transformerConfig = transformerFolder.isEmpty ? topConfig : try json("transformer/config.json")
        if let className = transformerConfig?["_class_name"]?.stringValue, className.contains("Transformer2DModel") {
            return try loadDiffusers(tree, folder: path(transformerFolder), config: transformerConfig!,
                                     scheduler: try json("scheduler/scheduler_config.json"), verifyHashes: verifyHashes)
        }

        var loaded = try loadWeightsIn(tree, folder: root, weights: weights, verifyHashes: verifyHashes)
        if let topConfig { applySidecar(topConfig, origin: tree.displayPath(path("config.json")), to: &loaded) }
        return loaded
    }

    /// The single top-level folder every file of the tree is under ("" if none): zips of folders.
    static func commonRoot(_ tree: FileTree) -> String {
        guard let first = tree.files.first, let slash = first.firstIndex(of: "/") else { return "" }
        let candidate = String(first[..<slash])
        let known: Set<String> = ["transformer", "scheduler", "vae", "unet", "text_encoder"]
        if known.contains(candidate) { return "" }
        return tree.files.allSatisfy({ $0.hasPrefix(candidate + "/") }) ? candidate : ""
    }

    /// The weights inside one folder of a tree: a sharded index, one safetensors file, or one torch file.
    static func loadWeightsIn(_ tree: FileTree, folder: String, weights: WeightsChoice?, verifyHashes: Bool) throws -> LoadedCheckpoint {
        let here = tree.files(in: folder)
        let indexes = here.filter { $0.hasSuffix(".safetensors.index.json") }
        if indexes.count == 1 {
            let tensors = try openSharded(index: indexes[0], in: tree)
            var loaded = describe(tensors, containers: ["sharded safetensors"], origin: tree.origin)
            loaded.weightsFile = indexes[0]
            return loaded
        }
        let candidates = here.filter { name in
            [".safetensors", ".pt", ".pth", ".bin", ".ckpt"].contains { name.hasSuffix($0) }
        }
        guard !candidates.isEmpty else {
            throw PPError.badInput(tree.origin, "no weights found (expected a .safetensors, .pt/.pth/.bin, a sharded index, a diffusers or a native PPFlow folder)")
        }
        guard candidates.count == 1 else {
            throw PPError.badInput(tree.origin, "several weights files (\(candidates.joined(separator: ", "))); pass the one to use")
        }
        let file = candidates[0]
        var loaded = try loadFile(tree.open(file), name: file, origin: tree.displayPath(file), weights: weights, verifyHashes: verifyHashes)
        loaded.weightsFile = file
        return loaded
    }

    static func loadDiffusers(_ tree: FileTree, folder: String, config: JSONValue, scheduler: JSONValue?, verifyHashes: Bool) throws -> LoadedCheckpoint {
        let inner = try loadWeightsIn(tree, folder: folder, weights: nil, verifyHashes: verifyHashes)
        guard DiffusersDiT.matches(inner.tensors.names) else {
            throw PPError.badInput(tree.origin, entry: inner.weightsFile,
                "config.json names a diffusers transformer but the weights are not a DiT (no pos_embed.proj / transformer_blocks keys)")
        }
        let mapped = try DiffusersDiT.toOriginal(inner.tensors, origin: tree.displayPath(inner.weightsFile ?? folder))
        var loaded = describe(mapped, containers: ["diffusers DiTTransformer2DModel"] + inner.containers, origin: tree.origin)
        loaded.weightsFile = inner.weightsFile
        loaded.family = "diffusers DiT"
        loaded.diffusersNumerics = true
        loaded.computedKeys = ["pos_embed"]
        loaded.sidecarConfig = config
        loaded.notes.append("diffusers layout mapped to the original DiT names (q/k/v fused, shared embedders collapsed); pos_embed is computed")
        loaded.notes.append("expects diffusers' time features (frequency shift 1) and LayerNorm eps 1e-5 in the MLP branch")
        if let heads = config["num_attention_heads"]?.intValue { loaded.architectureHints["num_heads"] = .int(heads) }
        if let size = config["sample_size"]?.intValue { loaded.architectureHints["input_size"] = .int(size) }
        if let prediction = scheduler?["prediction_type"]?.stringValue {
            if prediction == "epsilon" {
                loaded.objective = .epsilon
                loaded.objectiveSource = "diffusers scheduler_config.json prediction_type"
            } else {
                loaded.objective = .unknown
                loaded.objectiveSource = "diffusers scheduler prediction_type '\(prediction)' is not one the toolkit converts"
            }
        } else {
            loaded.objectiveSource = "no scheduler/scheduler_config.json beside the transformer; pass --objective"
        }
        return loaded
    }

    /// Fills layout, family and the objective the names alone imply.
    static func describe(_ tensors: TensorDict, containers: [String], origin: String) -> LoadedCheckpoint {
        let layout = KeyLayout.detect(tensors.names)
        var loaded = LoadedCheckpoint(
            path: origin, containers: containers, weightsFile: nil, tensors: tensors, layout: layout,
            family: layout.description, objective: .unknown,
            objectiveSource: "the weights do not say: DiT and SiT share every key",
            diffusersNumerics: false, computedKeys: [], architectureHints: [:], sidecarConfig: nil, nativeConfig: nil,
            availableStateDicts: [], selectedStateDict: nil, extraEntries: [], notes: [])
        if case .ppflow = layout {
            loaded.objective = .velocity
            loaded.objectiveSource = "PPFlow architecture (the official PPFlow code trains only the velocity objective)"
        }
        if case .unknown = layout { loaded.family = "unknown" }
        return loaded
    }

    /// config.json beside or inside: official constructor arguments plus `path_type` / `prediction`.
    static func applySidecar(_ config: JSONValue, origin: String, to loaded: inout LoadedCheckpoint) {
        loaded.sidecarConfig = config
        guard let object = config.objectValue else { return }
        for key in ["num_heads", "input_size", "hidden_size", "depth", "patch_size", "in_channels", "num_classes", "learn_sigma", "mlp_ratio"] {
            if let value = object[key] { loaded.architectureHints[key] = value }
        }
        if let prediction = object["prediction"]?.stringValue {
            setObjective(prediction: prediction, pathType: object["path_type"]?.stringValue, source: "\(FileOutput.baseName(of: origin)) prediction", to: &loaded)
        } else if let model = object["model"]?.stringValue, loaded.objective == .unknown {
            setObjectiveFromModelName(model, source: "\(FileOutput.baseName(of: origin)) model", to: &loaded)
        }
    }

    /// A train.py checkpoint's `args` (argparse.Namespace attributes).
    static func applyTrainArgs(_ args: [(String, String)]?, to loaded: inout LoadedCheckpoint) {
        guard let args, !args.isEmpty else { return }
        let dict = Dictionary(args, uniquingKeysWith: { a, _ in a })
        if let size = dict["image_size"].flatMap(Int.init) { loaded.architectureHints["input_size"] = .int(Int64(size / 8)) }
        if let prediction = dict["prediction"] {
            setObjective(prediction: prediction, pathType: dict["path_type"], source: "train checkpoint args.prediction", to: &loaded)
        } else if let model = dict["model"] {
            setObjectiveFromModelName(model, source: "train checkpoint args.model", to: &loaded)
        }
        // A released model name gives the head count, but only if the weights are that size.
        if let model = dict["model"], let (hidden, heads) = releasedSize(model),
           loaded.tensors["x_embedder.proj.weight"]?.shape.first == hidden {
            loaded.architectureHints["num_heads"] = .int(Int64(heads))
        }
    }

    static func setObjective(prediction: String, pathType: String?, source: String, to loaded: inout LoadedCheckpoint) {
        let p = prediction.lowercased()
        if p == "velocity" && (pathType == nil || pathType?.lowercased() == "linear") {
            loaded.objective = .velocity
            loaded.objectiveSource = source
            if case .ditSit = loaded.layout { loaded.family = "SiT" }
        } else if p == "epsilon" {
            loaded.objective = .epsilon
            loaded.objectiveSource = source
            if case .ditSit = loaded.layout { loaded.family = "DiT" }
        } else {
            loaded.objective = .unknown
            loaded.objectiveSource = "\(source) is '\(prediction)'\(pathType.map { " on path '\($0)'" } ?? ""); the toolkit handles velocity on the linear path and DDPM epsilon"
        }
    }

    static func setObjectiveFromModelName(_ model: String, source: String, to loaded: inout LoadedCheckpoint) {
        if model.hasPrefix("DiT") { setObjective(prediction: "epsilon", pathType: nil, source: source, to: &loaded) }
        if model.hasPrefix("SiT") || model.hasPrefix("PPFlow") { setObjective(prediction: "velocity", pathType: nil, source: source, to: &loaded) }
    }

    /// Released configurations: "SiT-XL/2", "DiT-B/2", "PPFlow_XL_2" -> (hidden size, heads).
    static func releasedSize(_ model: String) -> (Int, Int)? {
        let parts = String(model.map { $0 == "_" ? "-" : $0 }).split(separator: "-")
        guard parts.count >= 2 else { return nil }
        switch parts[1].split(separator: "/").first.map(String.init) ?? "" {
        case "XL": return (1152, 16)
        case "L": return (1024, 16)
        case "B": return (768, 12)
        case "S": return (384, 6)
        default: return nil
        }
    }
}

extension TorchCheckpoint {
    /// Attributes of an `argparse.Namespace` stored under `key` (train.py's `args`), as text.
    func namespaceAttributes(key: String) -> [(String, String)]? {
        guard case .object(let object)? = root[key] else { return nil }
        return object.attributes.map { name, value in
            (name, value.stringValue ?? value.summary())
        }
    }
}

extension CheckpointLoader {
    /// A sharded safetensors set inside a folder or a zipped folder.
    static func openSharded(index: String, in tree: FileTree) throws -> TensorDict {
        let folder = index.contains("/") ? FileOutput.directory(of: index) + "/" : ""
        let files = Set(tree.files)   // one lookup per shard, not a scan of the archive's entries
        return try tree.open(index).withBytes { indexBytes in try ShardedSafetensors.open(index: indexBytes, origin: tree.displayPath(index)) { shard in
            guard files.contains(folder + shard) else {
                throw PPError.badInput(tree.displayPath(index), entry: shard, "shard file is missing")
            }
            return try SafetensorsFile.parse(tree.open(folder + shard), origin: tree.displayPath(folder + shard))
        }.tensors }
    }
}
