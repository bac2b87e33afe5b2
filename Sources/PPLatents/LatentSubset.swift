import PPFileIO
import PPImage
import PPSafetensors
import PPTensor
import PPVAE

#if canImport(Glibc)
import Glibc
#endif

/// Conversion data from a folder: `ppconvert from-dit/verify --data` read one latents file, so a latent
/// cache or an image folder is first reduced to `count` samples spread evenly over it (every class of an
/// ImageFolder-ordered set is represented), written to a temporary file. The same folder and count give
/// the same bytes, so a later `verify --data` finds the held-out rows the conversion recorded.
public enum LatentSubset {
    /// Conversions use 2048 calibration samples by default; 256 more are held out for verification.
    public static let defaultCount = 2048 + 256

    /// `data` itself when it is a file; otherwise the temporary file made from the cache or image folder
    /// (`temporary` is the folder to remove afterwards).
    public static func file(for data: String, count: Int, vae vaeArgument: String?, channels: Int, side: Int, seed: UInt64,
                            log: @escaping (String) -> Void) throws -> (path: String, temporary: String?) {
        var st = stat()
        guard stat(data, &st) == 0 else { throw PPError(.missingInput, file: data, "no such file or folder") }
        guard (st.st_mode & S_IFMT) == S_IFDIR else { return (data, nil) }
        var template = Array("/tmp/ppflow-data-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw PPError(.io, file: data, "cannot create a temporary folder: \(String(cString: strerror(errno)))")
        }
        let temporary = String(cString: made)
        let name = FileOutput.baseName(of: data.hasSuffix("/") ? String(data.dropLast()) : data)
        let path = "\(temporary)/\(name)-\(count).safetensors"
        do {
            let tensors: TensorDict
            if LatentCache.isCache(data) {
                tensors = try fromCache(data, count: count)
                log("\(data): \(tensors["labels"]!.shape[0]) latents spread over the cache")
            } else {
                guard let vaeArgument else {
                    throw PPError(.usage, file: data, "a folder that is not a latent cache: an image folder needs --vae to be encoded (or encode it with ppfinetune encode)")
                }
                let vae = try VAEInput.load(vaeArgument)
                guard vae.config.latentChannels == channels else {
                    throw PPError(.usage, file: vaeArgument, "the VAE has \(vae.config.latentChannels) latent channels, the model takes \(channels)")
                }
                tensors = try fromImages(data, vae: vae, count: count, side: side, seed: seed, log: log)
            }
            try SafetensorsWriter.write(tensors, metadata: [("format", "pt"), ("source", name)], to: path)
        } catch {
            FileOutput.removeTree(temporary)
            throw error
        }
        return (path, temporary)
    }

    /// Indices 0..<total thinned to at most `count`, evenly spaced.
    static func spread(_ total: Int, _ count: Int) -> [Int] {
        total <= count ? Array(0..<total) : (0..<count).map { $0 * total / count }
    }

    static func fromCache(_ cache: String, count: Int) throws -> TensorDict {
        let shards = try LatentCache.shardPaths(of: cache)
        var sizes: [Int] = []
        var shape: [Int] = []
        for path in shards {
            let file = try SafetensorsFile.open(path)
            guard let l = file.tensors["latents"], l.rank == 4 else { throw PPError.badInput(path, entry: "latents", "missing or not [N,C,h,w]") }
            sizes.append(l.shape[0]); shape = Array(l.shape.dropFirst())
        }
        let wanted = spread(sizes.reduce(0, +), count)
        var latents: [Float] = [], labels: [Int64] = []     // [n, C, h, w], [n]
        var start = 0, next = 0
        for (path, size) in zip(shards, sizes) {
            let here = wanted[next...].prefix { $0 < start + size }
            if !here.isEmpty {
                let file = try SafetensorsFile.open(path)
                let values = file.tensors["latents"]!.floats(), classes = file.tensors["labels"]!.int64s()
                let per = shape.reduce(1, *)
                for i in here {
                    latents += values[((i - start) * per) ..< ((i - start + 1) * per)]
                    labels.append(classes[i - start])
                }
                next += here.count
            }
            start += size
        }
        return TensorDict([("latents", TensorView(floats: latents, shape: [labels.count] + shape)),
                           ("labels", TensorView(int64s: labels, shape: [labels.count]))])
    }

    static func fromImages(_ root: String, vae: AutoencoderKL, count: Int, side: Int, seed: UInt64,
                           log: @escaping (String) -> Void) throws -> TensorDict {
        let folder = try ImageFolder.scan(root)
        let items = spread(folder.items.count, count).map { folder.items[$0] }
        let size = side * vae.config.downsamplingFactor
        log("encoding \(items.count) of \(folder.items.count) images of \(root) at \(size)x\(size)")
        var skipped = 0
        let shard = try LatentCache.encodeShard(items[...], firstIndex: 0, vae: vae,
                                                options: LatentEncodeOptions(size: size, mode: .sample, seed: seed),
                                                batch: 8, skipped: { skipped += 1; log("skipped " + $0) }, done: { _ in })
        if skipped > 0 { log("\(skipped) image(s) skipped") }
        return shard.tensors
    }
}
