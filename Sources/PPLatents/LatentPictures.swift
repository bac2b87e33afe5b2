import PPFileIO
import PPImage
import PPSample
import PPTensor
import PPVAE

/// Sampled latents to pictures: the VAE decode a sampler does after the ODE, and one PNG per sample.
public enum LatentPictures {
    /// Refuses a VAE that cannot decode this model's latents, naming both sides.
    public static func check(vae: AutoencoderKL, vaeName: String, modelChannels: Int, model: String) throws {
        guard vae.config.latentChannels == modelChannels else {
            throw PPError(.usage, file: vaeName,
                "the VAE has \(vae.config.latentChannels) latent channels but \(model) samples \(modelChannels)-channel latents; give the VAE the model was trained with")
        }
        guard vae.config.outChannels == 3 || vae.config.outChannels == 1 else {
            throw PPError(.unsupported, file: vaeName, "the VAE decodes to \(vae.config.outChannels)-channel images; pictures need 1 or 3")
        }
    }

    /// samples [B, L, h, w] (model latents) -> images [B, C, h·f, w·f] in about [-1, 1]:
    /// decode(samples / scaling_factor + shift_factor), `batch` samples per call; `done(n)` after each.
    public static func decode(_ samples: [Float], shape: [Int], vae: AutoencoderKL, batch: Int = 8,
                              done: ((Int) -> Void)? = nil) throws -> (values: [Float], shape: [Int]) {
        precondition(shape.count == 4 && shape.reduce(1, *) == samples.count, "latents \(shape) with \(samples.count) values")
        let per = shape[1] * shape[2] * shape[3]
        var images: [Float] = []                // [B, C, H, W]
        var imageShape = [0, vae.config.outChannels, shape[2] * vae.config.downsamplingFactor, shape[3] * vae.config.downsamplingFactor]
        var start = 0
        while start < shape[0] {
            let n = min(max(1, batch), shape[0] - start)
            let part = VAETensor(values: Array(samples[(start * per) ..< ((start + n) * per)]), shape: [n] + shape.dropFirst())
            let decoded = try vae.decode(latents: part)
            images += decoded.values
            imageShape = [start + n] + decoded.shape.dropFirst()
            start += n
            done?(start)
        }
        return (images, imageShape)
    }

    /// The file name of sample `index` (batch order) of class `label`: "000012_class207.png".
    public static func fileName(index: Int, label: Int32) -> String {
        let digits = String(index)
        return String(repeating: "0", count: max(0, 6 - digits.count)) + digits + "_class\(label).png"
    }

    /// True for names `fileName` makes (what an --images folder may hold).
    public static func isSampleFileName(_ name: String) -> Bool {
        let parts = name.split(separator: "_", maxSplits: 1)
        guard parts.count == 2, parts[0].count >= 6, parts[0].allSatisfy(\.isASCII), Int(parts[0]) != nil,
              parts[1].hasPrefix("class"), parts[1].hasSuffix(".png") else { return false }
        return Int(parts[1].dropFirst(5).dropLast(4)) != nil
    }

    /// Writes every sample of images [B, C, H, W] (C 1 or 3, values in [-1, 1]) as its own PNG into a new
    /// folder `folder`, pixels as the official sample_ddp.py makes them for the FID evaluator. The folder
    /// is filled under a temporary name and renamed, so it is complete or absent.
    public static func writeImages(_ images: [Float], shape: [Int], labels: [Int32], to folder: String) throws {
        guard shape.count == 4, shape.reduce(1, *) == images.count, labels.count == shape[0],
              shape[1] == 1 || shape[1] == 3 else {
            throw PPError(.usage, file: folder, "images \(shape) with \(labels.count) labels: need [B, 1 or 3, H, W]")
        }
        let (c, h, w) = (shape[1], shape[2], shape[3]), per = c * h * w
        try FileOutput.writeFolder(folder) { temporary in
            for (index, label) in labels.enumerated() {
                let pixels = SampleOutput.evaluatorPixels(images[(index * per) ..< ((index + 1) * per)], channels: c, height: h, width: w)
                let bytes = try PNGFile.encode(pixels: pixels, width: w, height: h, channels: c)
                try FileOutput.writeFile(temporary + "/" + fileName(index: index, label: label), bytes: bytes)
            }
        }
    }

    /// What `OutputTarget.check` may replace in an --images folder: only sample files.
    public static func toolkitEntries(_ folder: String) -> Set<String>? {
        let names = OutputTarget.listFolder(folder)
        guard !names.isEmpty, names.allSatisfy(isSampleFileName) else { return nil }
        return Set(names)
    }
}
