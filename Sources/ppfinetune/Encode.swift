import ArgumentParser
import PPCLI
import PPFileIO
import PPKernels
import PPLatents
import PPTensor
import PPVAE

extension LatentMode: ExpressibleByArgument {}

extension PPFinetuneCommand {
    /// Image folder -> latent cache; the work is LatentCache.encode (PPLatents), this only parses arguments.
    struct Encode: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Encode an image folder (ImageFolder layout: one sub-folder per class) into a latent cache for training and calibration.",
            discussion: """
                Each image is decoded as Pillow does, center-cropped as the official train.py does (ADM's \
                center_crop_arr) to --size, and encoded with the VAE; the cache holds latents [N,C,size/f,size/f] \
                float32 = the VAE latent times the scaling factor, labels [N] int64 in ImageFolder order, and the \
                class list (cache.json). --mode sample (default, as the official train.py: \
                latent_dist.sample() with noise seeded per image by --seed) or mean (the posterior mean).

                The cache is written in shards of --shard-size images, each renamed into place when complete: \
                after a kill, the same command continues after the last complete shard and the result is \
                byte-identical to an uninterrupted run. Other options on an existing cache are refused (--force \
                starts over). Images that cannot be decoded are reported one line each and skipped; the summary \
                counts them.

                Example:
                  ppfinetune encode train/ --vae stabilityai/sd-vae-ft-ema --size 256 --out lat
                """)

        @Argument(help: "The image folder: ROOT/<class>/<image>, JPEG or PNG.") var folder: String
        @Option(help: "The VAE: a diffusers folder or zip, an ldm .safetensors/.ckpt, or a hub id.") var vae: String
        @Option(help: "Center-crop side in pixels (a multiple of the VAE's factor, 8 for SD VAEs).") var size: Int
        @Option(help: "The latent cache folder to write or continue.") var out: String
        @Flag(help: "Also encode every image mirrored (2 samples per image).") var flip = false
        @Option(help: "sample (the official train.py) or mean.") var mode: LatentMode = .sample
        @Option(help: "Seed of the posterior noise (--mode sample).") var seed: UInt64 = 0
        @Option(help: "Images per VAE call.") var batch = 8
        @Option(help: "Images per shard file (the unit of resumption).") var shardSize = 4096
        @Option(help: "Threads for the VAE (default: all cores).") var threads: Int?
        @Option(help: "The VAE's latent scaling factor (default: its config.json's, else 0.18215).") var scalingFactor: Float?
        @Option(help: "The VAE's latent shift factor (default: its config.json's, else none).") var shiftFactor: Float?
        @Flag(help: "Start over when OUT holds a cache made with other options.") var force = false

        func validate() throws {
            if size < 1 { throw ValidationError("--size must be positive") }
            if batch < 1 || shardSize < 1 { throw ValidationError("--batch and --shard-size must be positive") }
            if let threads, threads < 1 { throw ValidationError("--threads must be positive") }
        }

        func run() throws {
            CLI.run("ppfinetune encode", threads: threads) {
                // The output is checked before the VAE is loaded (a cache of ours is continued, not refused).
                if !LatentCache.isCache(out) { try OutputTarget.check(out, kind: .folder, force: force, toolkitEntries: LatentCache.toolkitEntries) }
                let model = try VAEInput.load(vae, overrides: VAEOverrides(scalingFactor: scalingFactor, shiftFactor: shiftFactor))
                let options = LatentEncodeOptions(size: size, flip: flip, mode: mode, seed: seed, shardSize: shardSize)
                let started = CLI.now()
                var bar: Progress?
                var firstDone: Int?
                let report = try LatentCache.encode(
                    folder: folder, vae: model, vaeName: vae, options: options, to: out, force: force, batch: batch,
                    progress: { done, total in
                        // images/s counts only what this run encoded (reused shards are skipped instantly).
                        if firstDone == nil { firstDone = done }
                        let rate = Double(done - (firstDone ?? 0)) / max(1e-9, CLI.now() - started)
                        if bar == nil { bar = Progress("encoding", total: total) }
                        bar?.update(done, detail: "\(Format.fixed(rate, 1)) images/s")
                    },
                    skipped: { CLI.printError("skipped " + $0) })
                let seconds = CLI.now() - started
                let reused = report.shardsReused > 0 ? ", \(report.shardsReused) reused from an earlier run" : ""
                print("wrote \(out): \(report.samples) latents from \(report.images - report.skipped.count) of \(report.images) images, \(report.shardsWritten) shard(s) written\(reused), \(report.skipped.count) image(s) skipped, \(Format.fixed(seconds, 1)) s")
                return 0
            }
        }
    }
}
