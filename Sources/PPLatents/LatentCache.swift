import PPFileIO
import PPImage
import PPJSON
import PPSafetensors
import PPTensor
import PPVAE

#if canImport(Glibc)
import Glibc
#endif

/// How images become training latents.
public enum LatentMode: String, Sendable, Equatable, CaseIterable {
    /// mean + exp(logvar / 2)·noise with seeded noise: the official train.py's
    /// `vae.encode(x).latent_dist.sample().mul_(0.18215)` (its noise is torch's, ours is seeded per image).
    case sample
    /// The posterior mean (diffusers' `mode()`): no noise at all.
    case mean
}

/// Options that decide a cache's bytes; a resumed encode must be given the same ones.
public struct LatentEncodeOptions: Sendable, Equatable {
    /// The center crop's side in pixels (the official --image-size: 256 or 512).
    public var size: Int
    /// Also encode every image mirrored (torchvision's RandomHorizontalFlip, both outcomes): 2 samples per image.
    public var flip: Bool
    public var mode: LatentMode
    /// Seed of the posterior noise (mode `.sample`); each image's noise depends only on the seed and its index.
    public var seed: UInt64
    /// Images per shard file (the unit of resumption).
    public var shardSize: Int

    public init(size: Int, flip: Bool = false, mode: LatentMode = .sample, seed: UInt64 = 0, shardSize: Int = 4096) {
        self.size = size; self.flip = flip; self.mode = mode; self.seed = seed; self.shardSize = shardSize
    }
}

/// What an encode did.
public struct LatentEncodeReport: Sendable {
    /// Images listed in the folder (torchvision's count, unsupported formats included).
    public var images: Int
    /// Latent samples in the cache (images encoded, twice with flip).
    public var samples: Int
    /// One line per image left out ("path: reason"), from every shard, reused ones included.
    public var skipped: [String]
    public var shardsWritten: Int
    public var shardsReused: Int
    /// False when the encode stopped early (`stopAfterShards`).
    public var complete: Bool
}

/// A latent cache: a folder with `cache.json` (the options, the VAE, the classes, the image list's
/// fingerprint) and `shard-00000.safetensors`... each holding `latents` [n, C, h, w] f32 and `labels`
/// [n] i64 for one run of `shardSize` consecutive ImageFolder items (images that fail to decode are
/// left out and named in the shard's metadata). Shards are written atomically, so after a kill every
/// shard present is complete and a rerun with the same options writes only the missing ones.
public enum LatentCache {
    public static let manifestName = "cache.json"
    public static let format = "ppflow-latent-cache"

    public static func shardName(_ index: Int) -> String {
        let digits = String(index)
        return "shard-" + String(repeating: "0", count: max(0, 5 - digits.count)) + digits + ".safetensors"
    }

    /// True when `path` is a folder holding a cache manifest.
    public static func isCache(_ path: String) -> Bool {
        var st = stat()
        guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { return false }
        return access(path + "/" + manifestName, F_OK) == 0
    }

    /// The cache's manifest, checked for its format.
    public static func manifest(of cache: String) throws -> JSONValue {
        let path = cache + "/" + manifestName
        let json = try JSON.parse(file: path)
        guard json["format"]?.stringValue == format else {
            throw PPError.badInput(path, entry: "format", "not a latent cache manifest (expected \"\(format)\")")
        }
        return json
    }

    /// The shard files of a complete cache, in order; an unfinished one is refused with how to finish it.
    public static func shardPaths(of cache: String) throws -> [String] {
        let json = try manifest(of: cache)
        guard let count = json["shards"]?.intValue, count >= 0 else {
            throw PPError.badInput(cache + "/" + manifestName, entry: "shards", "missing or not a count")
        }
        let paths = (0..<Int(count)).map { cache + "/" + shardName($0) }
        let missing = paths.filter { access($0, F_OK) != 0 }
        if !missing.isEmpty {
            throw PPError.badInput(cache, "an unfinished latent cache: \(missing.count) of \(count) shards missing (\(FileOutput.baseName(of: missing[0]))...); run the same ppfinetune encode again to finish it")
        }
        return paths
    }

    /// The class names of a cache (ImageFolder's sorted sub-folder names).
    public static func classes(of cache: String) throws -> [String] {
        try manifest(of: cache)["classes"]?.arrayValue?.compactMap(\.stringValue) ?? []
    }

    /// The names a cache folder may hold (for `OutputTarget`): the manifest, shards and their temporaries.
    public static func toolkitEntries(_ folder: String) -> Set<String>? {
        guard isCache(folder) else { return nil }
        let names = OutputTarget.listFolder(folder)
        return Set(names.filter { name in
            name == manifestName || name.hasPrefix("." + manifestName + ".tmp-")
                || (name.hasPrefix("shard-") && name.hasSuffix(".safetensors")) || name.hasPrefix(".shard-")
        })
    }

    /// Encodes the image folder `root` into the cache folder `out`, or continues an unfinished cache
    /// made with the same options. An existing cache with other options is replaced only with `force`
    /// (and a folder holding anything else never). `stopAfterShards` ends the run after writing that
    /// many shards (tests simulate a kill with it). Images that cannot be decoded are skipped, each
    /// reported once through `skipped` and counted in the report; they never stop the encode.
    public static func encode(folder root: String, vae: AutoencoderKL, vaeName: String, options: LatentEncodeOptions,
                              to out: String, force: Bool = false, batch: Int = 8, stopAfterShards: Int? = nil,
                              progress: ((_ imagesDone: Int, _ imagesTotal: Int) -> Void)? = nil,
                              skipped: ((String) -> Void)? = nil) throws -> LatentEncodeReport {
        guard options.size > 0, options.size % vae.config.downsamplingFactor == 0 else {
            throw PPError(.usage, entry: "--size", "\(options.size) is not a positive multiple of the VAE's factor \(vae.config.downsamplingFactor)")
        }
        guard options.shardSize > 0, batch > 0 else { throw PPError(.usage, "the shard size and the batch must be positive") }
        guard vae.config.inChannels == 3 else {
            throw PPError(.unsupported, file: vaeName, "the VAE takes \(vae.config.inChannels)-channel images; image folders give RGB")
        }
        let folder = try ImageFolder.scan(root)
        let manifest = makeManifest(folder: folder, vae: vae, vaeName: vaeName, options: options)
        let manifestPath = out + "/" + manifestName

        // Start, continue, or (with force) start over; never touch a folder the toolkit did not write.
        var resuming = false
        if isCache(out) {
            let old = try self.manifest(of: out)
            if let difference = firstDifference(old, manifest) {
                guard force else {
                    throw PPError(.outputRefused, file: out,
                        "a latent cache made with other inputs or options (\(difference)); rerun with the same ones to continue it, or pass --force to start over")
                }
                try OutputTarget.check(out, kind: .folder, force: true, toolkitEntries: toolkitEntries)
                for name in OutputTarget.listFolder(out) { unlink(out + "/" + name) }
            } else {
                resuming = true
            }
        } else {
            try OutputTarget.check(out, kind: .folder, force: force, toolkitEntries: toolkitEntries)
            if access(out, F_OK) != 0, mkdir(out, 0o755) != 0 {
                throw PPError(.io, file: out, "cannot create the folder: \(String(cString: strerror(errno)))")
            }
        }
        if !resuming {
            try FileOutput.writeFile(manifestPath, bytes: JSON.serializedBytes(manifest, pretty: true) + [0x0A])
        }

        let total = folder.items.count
        let shardCount = (total + options.shardSize - 1) / options.shardSize
        var report = LatentEncodeReport(images: total, samples: 0, skipped: [], shardsWritten: 0, shardsReused: 0, complete: true)
        for shard in 0..<shardCount {
            let range = (shard * options.shardSize) ..< min(total, (shard + 1) * options.shardSize)
            let path = out + "/" + shardName(shard)
            if access(path, F_OK) == 0 {
                // Written by an earlier run: complete (shards are renamed into place); only its report is read.
                let file = try SafetensorsFile.open(path)
                let lines = try skippedLines(file.metadata, origin: path)
                report.skipped += lines
                lines.forEach { skipped?($0) }
                report.samples += file.tensors["labels"]?.shape.first ?? 0
                report.shardsReused += 1
                progress?(range.upperBound, total)
                continue
            }
            if let stop = stopAfterShards, report.shardsWritten >= stop { report.complete = false; break }
            let result = try encodeShard(folder.items[range], firstIndex: range.lowerBound, vae: vae, options: options,
                                         batch: batch, skipped: skipped) { progress?(range.lowerBound + $0, total) }
            try SafetensorsWriter.write(result.tensors, metadata: result.metadata, to: path)
            report.skipped += result.skipped
            report.samples += result.tensors["labels"]!.shape[0]
            report.shardsWritten += 1
        }
        return report
    }

    /// One shard: decode, crop and encode its items in batches; bad images become report lines.
    static func encodeShard(_ items: ArraySlice<ImageFolder.Item>, firstIndex: Int, vae: AutoencoderKL, options: LatentEncodeOptions,
                            batch: Int, skipped: ((String) -> Void)?, done: (Int) -> Void)
        throws -> (tensors: TensorDict, metadata: [(String, String)], skipped: [String]) {
        let f = vae.config.downsamplingFactor, l = vae.config.latentChannels
        let side = options.size / f
        var latents: [Float] = []       // [n, L, side, side]
        var labels: [Int64] = []        // [n]
        var lines: [String] = []
        var position = items.startIndex
        while position < items.endIndex {
            let chunk = items[position ..< min(items.endIndex, position + batch)]
            var pixels: [Float] = []    // [b, 3, size, size] in [-1, 1]
            var noise: [Float] = []     // [b, L, side, side] (mode .sample)
            var chunkLabels: [Int64] = []
            for (offset, item) in chunk.enumerated() {
                let index = position - items.startIndex + firstIndex + offset
                let crop: RGBImage
                do {
                    guard item.isDecodable else { throw PPError(.unsupported, file: item.path, "only JPEG and PNG are decoded (convert it to PNG)") }
                    crop = try CenterCrop.apply(try ImageDecoder.decodeRGB(item.path), size: options.size)
                } catch let error as PPError {
                    var located = error
                    if located.file == nil { located.file = item.path }
                    let line = located.description
                    lines.append(line)
                    skipped?(line)
                    continue
                }
                let versions = options.flip ? [crop, crop.flippedHorizontally()] : [crop]
                for (v, image) in versions.enumerated() {
                    pixels += image.toFloatCHW()
                    chunkLabels.append(Int64(item.classIndex))
                    if options.mode == .sample {
                        noise += noiseFor(seed: options.seed, sample: index * 2 + v, count: l * side * side)
                    }
                }
            }
            if !chunkLabels.isEmpty {
                let n = chunkLabels.count
                let posterior = try vae.encode(images: VAETensor(values: pixels, shape: [n, 3, options.size, options.size]))
                let z = try posterior.latents(noise: options.mode == .sample ? VAETensor(values: noise, shape: [n, l, side, side]) : nil)
                latents += z.values
                labels += chunkLabels
            }
            position = chunk.endIndex
            done(position - items.startIndex)
        }
        let tensors = TensorDict([("latents", TensorView(floats: latents, shape: [labels.count, l, side, side])),
                                  ("labels", TensorView(int64s: labels, shape: [labels.count]))])
        let metadata: [(String, String)] = [
            ("format", "pt"), ("content", "latents [N,C,h,w] (VAE latents times the scaling factor) and labels [N]"),
            ("items", "\(firstIndex)..<\(firstIndex + items.count)"),
            ("skipped", JSON.serialize(.array(lines.map { .string($0) }), pretty: false)),
        ]
        return (tensors, metadata, lines)
    }

    /// Standard normal noise for one sample: a generator seeded by (seed, sample number) alone, so
    /// batching, shard boundaries and resumption never change it.
    /// The stream's seed is (seed, sample) hashed through SplitMix's mixer twice: plain `seed + sample`
    /// would give SplitMix streams that are shifted copies of each other.
    static func noiseFor(seed: UInt64, sample: Int, count: Int) -> [Float] {
        var sampleHash = SeededRandom(seed: UInt64(sample))
        var streamSeed = SeededRandom(seed: seed ^ sampleHash.next())
        var random = SeededRandom(seed: streamSeed.next())
        return random.normals(count)
    }

    static func skippedLines(_ metadata: [(String, String)], origin: String) throws -> [String] {
        guard let text = metadata.first(where: { $0.0 == "skipped" })?.1 else { return [] }
        let json = try JSON.parse(text, origin: origin)
        return json.arrayValue?.compactMap(\.stringValue) ?? []
    }

    /// Everything that decides the cache's bytes, plus where it came from (for people).
    static func makeManifest(folder: ImageFolder, vae: AutoencoderKL, vaeName: String, options: LatentEncodeOptions) -> JSONValue {
        var items = SHA256()
        let prefix = folder.root.hasSuffix("/") ? folder.root : folder.root + "/"
        for item in folder.items {
            let relative = item.path.hasPrefix(prefix) ? String(item.path.dropFirst(prefix.count)) : item.path
            items.update("\(item.classIndex)\t\(relative)\n")
        }
        let weights = SHA256.hash(UnsafeRawBufferPointer(start: vae.parameters.values, count: vae.parameters.layout.totalCount * MemoryLayout<Float>.size))
        let shardCount = (folder.items.count + options.shardSize - 1) / options.shardSize
        let c = vae.config
        return .object(JSONObject([
            ("format", .string(format)), ("version", .int(1)),
            ("source", .string(folder.root)),
            ("images", .int(Int64(folder.items.count))), ("items_sha256", .string(items.finishHex())),
            ("classes", .array(folder.classes.map { .string($0) })),
            ("size", .int(Int64(options.size))), ("flip", .bool(options.flip)),
            ("mode", .string(options.mode.rawValue)), ("seed", .string(String(options.seed))),
            ("shard_size", .int(Int64(options.shardSize))), ("shards", .int(Int64(shardCount))),
            ("vae", .object(JSONObject([
                ("path", .string(vaeName)), ("weights_sha256", .string(weights)),
                ("latent_channels", .int(Int64(c.latentChannels))), ("downsampling_factor", .int(Int64(c.downsamplingFactor))),
                ("scaling_factor", .double(Double(c.scalingFactor))), ("shift_factor", c.shiftFactor.map { .double(Double($0)) } ?? .null),
                ("norm_groups", .int(Int64(c.normGroups))),
            ]))),
            ("latents", .string("[N, \(c.latentChannels), \(options.size / c.downsamplingFactor), \(options.size / c.downsamplingFactor)] float32 = \(options.mode == .sample ? "posterior sample" : "posterior mean") times the scaling factor")),
        ]))
    }

    /// The first field (dotted) that differs between two manifests, ignoring where things were named
    /// from (the folder and VAE as typed); nil when they agree.
    static func firstDifference(_ old: JSONValue, _ new: JSONValue) -> String? {
        let ignored: Set<String> = ["source", "vae.path", "latents"]   // "latents" only describes the others
        func walk(_ a: JSONValue?, _ b: JSONValue?, _ path: String) -> String? {
            if ignored.contains(path) { return nil }
            if let ao = a?.objectValue, let bo = b?.objectValue {
                for key in Array(Set(ao.keys).union(bo.keys)).sorted() {
                    if let d = walk(ao[key], bo[key], path.isEmpty ? key : path + "." + key) { return d }
                }
                return nil
            }
            guard a != b else { return nil }
            let show = { (v: JSONValue?) -> String in
                guard let v else { return "missing" }
                let text = JSON.serialize(v, pretty: false)
                return text.count > 40 ? String(text.prefix(37)) + "..." : text
            }
            if path == "items_sha256" || path == "images" { return "the image folder's files differ" }
            if path == "vae.weights_sha256" { return "the VAE's weights differ" }
            return "\(path): \(show(a)) before, \(show(b)) now"
        }
        return walk(old, new, "")
    }
}
