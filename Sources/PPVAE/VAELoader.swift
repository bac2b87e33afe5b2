import PPCheckpoint
import PPFileIO
import PPJSON
import PPSafetensors
import PPTensor
import PPTorchFormat

#if canImport(Glibc)
import Glibc
#endif

/// Where a VAE came from and what the reader did to it.
public struct VAESource: Sendable {
    /// The path the user gave.
    public var path: String
    /// Outermost first: e.g. ["zip archive", "diffusers folder", "safetensors"].
    public var containers: [String]
    /// The file that held the weights (inside the folder or archive), as messages name it.
    public var weightsFile: String
    public var layout: VAEKeyLayout
    /// The config.json read, if any (as messages name it).
    public var configFile: String?
    /// Choices and conversions the user should know about.
    public var notes: [String]
}

/// Reads a diffusers `AutoencoderKL` as people have it: a diffusers folder (`config.json` +
/// `diffusion_pytorch_model.safetensors` or `.bin`), the same zipped, a pipeline folder with a `vae/`
/// subfolder, or a single ldm-layout file (`vae-ft-mse-840000-ema-pruned.safetensors` / `.ckpt`, a full
/// Stable Diffusion checkpoint's `first_stage_model.`). Formats are detected by content.
public enum VAELoader {
    public static func load(_ path: String, overrides: VAEOverrides = VAEOverrides()) throws -> AutoencoderKL {
        let (tensors, config, source) = try read(path, overrides: overrides)
        let parameters = VAEParameterBuffer(layout: VAEParameterLayout(config))
        try parameters.fill(from: tensors, origin: source.weightsFile)
        return AutoencoderKL(config: config, parameters: parameters, source: source)
    }

    /// The weights under diffusers names, the config (from config.json checked against the shapes, or
    /// inferred from the shapes) and the provenance; no parameter buffer yet.
    public static func read(_ path: String, overrides: VAEOverrides = VAEOverrides()) throws -> (TensorDict, VAEConfig, VAESource) {
        var st = stat()
        guard stat(path, &st) == 0 else { throw PPError(.missingInput, file: path, "no such file or folder") }
        var found: FoundWeights
        if (st.st_mode & S_IFMT) == S_IFDIR {
            found = try fromTree(DirectoryTree(path: path))
            found.containers.insert("folder", at: 0)
        } else {
            let storage = try ByteStorage(mappingFile: path)
            found = try fromFile(storage, origin: path)
            // A config.json beside a single weights file (a diffusers folder given by its weights file).
            if found.config == nil, !found.containers.contains("zip archive") {
                let beside = FileOutput.directory(of: path) + "/config.json"
                if let data = try? ByteStorage(mappingFile: beside) {
                    let json = try data.withBytes { try JSON.parse($0, origin: beside) }
                    if DiffusersVAEConfig.isAutoencoderKL(json) { found.config = (json, beside) }
                }
            }
        }
        return try finish(found, path: path, overrides: overrides)
    }

    /// What the container walk found: tensors as stored, an optional config.json.
    struct FoundWeights {
        var tensors: TensorDict
        var weightsFile: String
        var containers: [String]
        var config: (json: JSONValue, origin: String)?
        var notes: [String] = []
    }

    // MARK: Containers

    static func fromFile(_ storage: ByteStorage, origin: String) throws -> FoundWeights {
        let bytes = storage.bytes
        if bytes.count == 0 { throw PPError.badInput(origin, "empty file") }
        if ZipArchive.looksLikeZip(bytes) {
            let archive = try ZipArchive(storage: storage, origin: origin)
            if CheckpointLoader.isTorchArchive(archive) { return try fromTorch(storage, origin: origin) }
            var found = try fromTree(ZipTree(archive: archive, origin: origin))
            found.containers.insert("zip archive", at: 0)
            return found
        }
        if CheckpointLoader.looksLikeSafetensors(bytes) {
            let file = try SafetensorsFile.parse(storage, origin: origin)
            return FoundWeights(tensors: file.tensors, weightsFile: origin, containers: ["safetensors"])
        }
        if bytes.count >= 2 && bytes[0] == 0x80 && bytes[1] <= 5 {
            throw PPError(.unsupported, file: origin,
                "a legacy (pre-zip) torch.save pickle; load it with PyTorch and save it again with torch.save (zip format, the default since 1.6)")
        }
        throw PPError.badInput(origin, "not a VAE format this tool reads (expected a diffusers folder or zip, safetensors, or a torch .bin/.ckpt)")
    }

    /// torch.save files: a bare state dict (diffusers `.bin`) or Lightning's `{"state_dict": ...}` (`.ckpt`).
    static func fromTorch(_ storage: ByteStorage, origin: String) throws -> FoundWeights {
        let checkpoint = try TorchCheckpoint.read(storage: storage, origin: origin)
        let dicts = checkpoint.stateDicts()
        guard let chosen = dicts.first(where: { $0.path == "" }) ?? dicts.first(where: { $0.path == "state_dict" }) else {
            let names = dicts.map { $0.path.isEmpty ? "(root)" : "'\($0.path)'" }
            throw PPError.badInput(origin, "no state dict at the root or under 'state_dict'\(names.isEmpty ? "" : " (found \(names.joined(separator: ", ")))")")
        }
        var found = FoundWeights(tensors: chosen.tensors, weightsFile: origin, containers: ["torch.save"])
        if !chosen.path.isEmpty { found.notes.append("took the '\(chosen.path)' entry of the torch file") }
        return found
    }

    /// A folder or zipped folder: the AutoencoderKL config.json at the top, in `vae/`, or under the one
    /// top folder; its weights beside it. Without any such config, a single weights file.
    static func fromTree(_ tree: FileTree) throws -> FoundWeights {
        var roots = [""]
        if let first = tree.files.first, let slash = first.firstIndex(of: "/") {
            let top = String(first[..<slash])
            if tree.files.allSatisfy({ $0.hasPrefix(top + "/") }) { roots.append(top) }
        }
        var folders: [String] = []
        for root in roots {
            folders.append(root)
            folders.append(root.isEmpty ? "vae" : "\(root)/vae")
        }
        for folder in folders {
            let configPath = folder.isEmpty ? "config.json" : "\(folder)/config.json"
            guard tree.contains(configPath) else { continue }
            let json = try tree.open(configPath).withBytes { try JSON.parse($0, origin: tree.displayPath(configPath)) }
            guard DiffusersVAEConfig.isAutoencoderKL(json) else { continue }
            let weights = try weightsFile(in: tree, folder: folder)
            var found = try fromFile(try tree.open(weights), origin: tree.displayPath(weights))
            found.config = (json, tree.displayPath(configPath))
            found.containers.insert("diffusers AutoencoderKL", at: 0)
            return found
        }
        for folder in folders where tree.contains(folder.isEmpty ? "config.json" : "\(folder)/config.json") {
            let configPath = folder.isEmpty ? "config.json" : "\(folder)/config.json"
            let json = try tree.open(configPath).withBytes { try JSON.parse($0, origin: tree.displayPath(configPath)) }
            if let name = json["_class_name"]?.stringValue {
                throw PPError(.unsupported, file: tree.displayPath(configPath), entry: "_class_name", "'\(name)' is not an AutoencoderKL")
            }
        }
        // No config: one weights file anywhere in the tree (an ldm file zipped, say).
        let weights = try weightsFile(in: tree, folder: nil)
        return try fromFile(try tree.open(weights), origin: tree.displayPath(weights))
    }

    /// The weights file of a diffusers folder: safetensors before .bin, the full-precision file before
    /// a variant (`diffusion_pytorch_model.fp16.safetensors`). `folder` nil: anywhere in the tree.
    static func weightsFile(in tree: FileTree, folder: String?) throws -> String {
        let here = folder.map { tree.files(in: $0) } ?? tree.files
        let preferred = ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"]
        for name in preferred {
            if let match = here.first(where: { FileOutput.baseName(of: $0) == name }) { return match }
        }
        let candidates = here.filter { name in [".safetensors", ".bin", ".ckpt", ".pt", ".pth"].contains { name.hasSuffix($0) } }
        let safetensors = candidates.filter { $0.hasSuffix(".safetensors") }
        if safetensors.count == 1 { return safetensors[0] }
        if candidates.count == 1 { return candidates[0] }
        if candidates.isEmpty {
            throw PPError.badInput(tree.origin, entry: folder.flatMap { $0.isEmpty ? nil : $0 },
                "no VAE weights found (expected diffusion_pytorch_model.safetensors or .bin beside config.json, or one .safetensors/.ckpt file)")
        }
        throw PPError.badInput(tree.origin, "several weights files (\(candidates.joined(separator: ", "))); pass the one to use")
    }

    // MARK: Layout, config, checks

    static func finish(_ found: FoundWeights, path: String, overrides: VAEOverrides) throws -> (TensorDict, VAEConfig, VAESource) {
        var notes = found.notes
        var stored = found.tensors
        let origin = found.weightsFile
        // A full Stable Diffusion checkpoint: the VAE is its first stage.
        let firstStage = "first_stage_model."
        if stored.names.contains(where: { $0.hasPrefix(firstStage) }) {
            var inner = TensorDict()
            for (name, tensor) in stored.items where name.hasPrefix(firstStage) { inner[String(name.dropFirst(firstStage.count))] = tensor }
            notes.append("took the \(inner.count) '\(firstStage)' tensors of \(stored.count) (a full Stable Diffusion checkpoint)")
            stored = inner
        }
        guard let layout = VAEKeyLayout.detect(stored.names) else {
            throw PPError.badInput(origin,
                "not an AutoencoderKL: no diffusers (encoder.down_blocks.*) or ldm (encoder.down.*) VAE keys among \(stored.count) tensors")
        }
        var mapped = TensorDict()
        func insert(_ name: String, _ tensor: TensorView, from original: String) throws {
            guard mapped[name] == nil else {
                throw PPError.badInput(origin, entry: original, "maps to \(name), which another key already gave")
            }
            mapped[name] = tensor
        }
        switch layout {
        case .diffusers:
            var renamedOld = 0
            for (name, tensor) in stored.items {
                let current = VAEKeyRules.currentDiffusersName(name)
                if current != name { renamedOld += 1 }
                try insert(current, tensor, from: name)
            }
            if renamedOld > 0 { notes.append("renamed \(renamedOld) attention keys from old diffusers names (query/key/value/proj_attn)") }
        case .ldm:
            let blocks = VAEKeyRules.ldmDecoderBlocks(stored.names)
            var dropped = 0
            for (name, tensor) in stored.items {
                if VAEKeyRules.ldmTrainingOnlyPrefixes.contains(where: { name.hasPrefix($0) }) { dropped += 1; continue }
                try insert(VAEKeyRules.diffusersName(ldm: name, decoderBlocks: blocks), tensor, from: name)
            }
            notes.append("ldm layout mapped to diffusers names (docs/VAE.md)")
            if dropped > 0 { notes.append("dropped \(dropped) training-only keys (loss.*, model_ema bookkeeping)") }
        }

        let fileConfig = try found.config.map { try DiffusersVAEConfig($0.json, origin: $0.origin) }
        var config = try inferConfig(mapped, origin: origin)
        if let fileConfig, let configOrigin = found.config?.origin {
            try check(fileConfig, against: config, origin: configOrigin)
            if let groups = fileConfig.normGroups { config.normGroups = groups }
            if let scale = fileConfig.scalingFactor { config.scalingFactor = scale }
            config.shiftFactor = fileConfig.shiftFactor
        } else {
            notes.append("no config.json: architecture from the shapes, \(config.normGroups) groups and scaling factor \(config.scalingFactor) (SD defaults)")
        }
        if let groups = overrides.normGroups { config.normGroups = groups }
        if let scale = overrides.scalingFactor { config.scalingFactor = scale }
        if let shift = overrides.shiftFactor { config.shiftFactor = shift }
        try config.validate(origin: found.config?.origin ?? origin)

        let source = VAESource(path: path, containers: found.containers, weightsFile: origin, layout: layout,
                               configFile: found.config?.origin, notes: notes)
        return (mapped, config, source)
    }

    /// The architecture from the weights' shapes (diffusers names). Norm groups and the scaling factor
    /// cannot be seen in shapes: SD defaults (32, 0.18215) until a config or the user says otherwise.
    static func inferConfig(_ tensors: TensorDict, origin: String) throws -> VAEConfig {
        func shape(_ name: String, rank: Int) throws -> [Int] {
            guard let t = tensors[name] else { throw PPError.badInput(origin, entry: name, "missing (needed to infer the VAE architecture)") }
            guard t.rank == rank else { throw PPError.badInput(origin, entry: name, "shape \(t.shape), expected rank \(rank)") }
            return t.shape
        }
        let convIn = try shape("encoder.conv_in.weight", rank: 4)
        var channels: [Int] = []
        while tensors.contains("encoder.down_blocks.\(channels.count).resnets.0.conv1.weight") {
            channels.append(try shape("encoder.down_blocks.\(channels.count).resnets.0.conv1.weight", rank: 4)[0])
        }
        guard !channels.isEmpty else { throw PPError.badInput(origin, entry: "encoder.down_blocks.0.resnets.0.conv1.weight", "missing: no encoder blocks") }
        var layers = 0
        while tensors.contains("encoder.down_blocks.0.resnets.\(layers).conv1.weight") { layers += 1 }
        let decoderIn = try shape("decoder.conv_in.weight", rank: 4)
        let decoderOut = try shape("decoder.conv_out.weight", rank: 4)
        return VAEConfig(
            inChannels: convIn[1], outChannels: decoderOut[0], latentChannels: decoderIn[1],
            blockOutChannels: channels, layersPerBlock: layers,
            useQuantConv: tensors.contains("quant_conv.weight"),
            usePostQuantConv: tensors.contains("post_quant_conv.weight"),
            midBlockAttention: tensors.names.contains { $0.hasPrefix("encoder.mid_block.attentions.0.") })
    }

    /// config.json must agree with the weights on everything the shapes show.
    static func check(_ file: DiffusersVAEConfig, against weights: VAEConfig, origin: String) throws {
        func agree<T: Equatable>(_ key: String, _ value: T?, _ actual: T) throws {
            if let value, value != actual {
                throw PPError.badInput(origin, entry: key, "says \(value) but the weights have \(actual)")
            }
        }
        try agree("in_channels", file.inChannels, weights.inChannels)
        try agree("out_channels", file.outChannels, weights.outChannels)
        try agree("latent_channels", file.latentChannels, weights.latentChannels)
        try agree("block_out_channels", file.blockOutChannels, weights.blockOutChannels)
        try agree("layers_per_block", file.layersPerBlock, weights.layersPerBlock)
        try agree("use_quant_conv", file.useQuantConv, weights.useQuantConv)
        try agree("use_post_quant_conv", file.usePostQuantConv, weights.usePostQuantConv)
        try agree("mid_block_add_attention", file.midBlockAttention, weights.midBlockAttention)
    }
}
