import ArgumentParser
import PPBench
import PPCLI
import PPFileIO
import PPJSON
import PPKernels
import PPSafetensors
import PPTensor
import PPVAE

/// Options that say what a VAE file cannot: its GroupNorm groups and latent scaling (ldm files have no config).
struct VAEOptions: ParsableArguments {
    @Option(help: "GroupNorm groups (default: config.json's, else 32).") var groups: Int?
    @Option(help: "Latent scaling factor (default: config.json's, else 0.18215).") var scalingFactor: Float?
    @Option(help: "Latent shift factor (default: config.json's, else none).") var shiftFactor: Float?
    @Option(help: "Threads for BLAS and the kernels' own loops (default: all cores).") var threads: Int?

    func load(_ path: String) throws -> AutoencoderKL {
        return try VAELoader.load(path, overrides: VAEOverrides(normGroups: groups, scalingFactor: scalingFactor, shiftFactor: shiftFactor))
    }
}

extension PPSampleCommand {
    /// The VAE parity tool: encode and decode tensors from a safetensors file, write what comes out.
    struct VAE: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "vae",
            abstract: "Encode and decode with a diffusers AutoencoderKL (the Stable Diffusion VAE): a parity tool.",
            discussion: """
                VAE is a diffusers folder or zip (config.json + diffusion_pytorch_model.safetensors or .bin, also a
                pipeline folder's vae/), or an ldm-layout file (vae-ft-mse-840000-ema-pruned.safetensors/.ckpt, a full
                Stable Diffusion .ckpt's first_stage_model). IN may hold:
                  x [B,3,H,W] in [-1,1]  -> enc_moments [B,2L,h,w], enc_mean, enc_logvar [B,L,h,w]
                                            (and enc_sample = mean + exp(logvar/2)*enc_noise when IN has enc_noise)
                  z [B,L,h,w]            -> dec [B,3,H,W] = decoder(post_quant_conv(z)), no scaling
                  latents [B,L,h,w]      -> images = decode(latents / scaling_factor + shift_factor)
                Example:
                  ppsample vae Tests/Fixtures/vae-small-v1/vae.zip --inputs Tests/Fixtures/vae-small-v1/ref_vae.safetensors \\
                      --out out.safetensors --against Tests/Fixtures/vae-small-v1/ref_vae.safetensors
                """)

        @Argument(help: "The VAE: a diffusers folder or zip, or an ldm .safetensors/.ckpt.") var vae: String
        @Option(help: "Inputs: x, enc_noise, z, latents (any of them).") var inputs: String
        @Option(help: "Output safetensors file.") var out: String
        @Option(help: "Compare the outputs with the same-named tensors of this file (e.g. written by diffusers); exit 1 above --tolerance.")
        var against: String?
        @Option(help: "Relative error bound ||a-b||/||b|| for --against.") var tolerance: Double = 1e-5
        @Flag(help: "Replace OUT if it exists.") var force = false
        @OptionGroup var vaeOptions: VAEOptions

        func run() throws {
            CLI.run("ppsample vae", threads: vaeOptions.threads) {
                try OutputTarget.check(out, kind: .file, force: force)
                let model = try vaeOptions.load(vae)
                let file = try SafetensorsFile.open(inputs)
                func input(_ name: String) throws -> VAETensor? {
                    guard let t = file.tensors[name] else { return nil }
                    guard t.dtype.isFloatingPoint else { throw PPError.badInput(inputs, entry: name, "dtype \(t.dtype.shortName) is not floating-point") }
                    return VAETensor(values: t.floats(), shape: t.shape)
                }
                /// Shape errors of the model name the input tensor and file.
                func named<T>(_ name: String, _ body: () throws -> T) throws -> T {
                    do { return try body() } catch var error as PPError {
                        error.file = inputs
                        error.entry = name
                        throw error
                    }
                }
                let x = try input("x"), noise = try input("enc_noise"), z = try input("z"), latents = try input("latents")
                guard x != nil || z != nil || latents != nil else {
                    throw PPError.badInput(inputs, "holds none of x (to encode), z or latents (to decode)")
                }
                if noise != nil && x == nil { throw PPError.badInput(inputs, entry: "enc_noise", "given without x to encode") }
                var result = TensorDict()
                func put(_ name: String, _ t: VAETensor) { result[name] = TensorView(floats: t.values, shape: t.shape) }
                if let x {
                    let posterior = try named("x") { try model.encode(images: x) }
                    put("enc_moments", posterior.moments)
                    put("enc_mean", posterior.mean)
                    put("enc_logvar", posterior.logvar)
                    if let noise { put("enc_sample", try named("enc_noise") { try posterior.sample(noise: noise) }) }
                }
                if let z { put("dec", try named("z") { try model.decode(z: z) }) }
                if let latents { put("images", try named("latents") { try model.decode(latents: latents) }) }
                try SafetensorsWriter.write(result, metadata: [("vae", FileOutput.baseName(of: vae)),
                                                               ("layout", model.source?.layout.rawValue ?? "")], to: out)
                let written = result.names.map { "\($0) \(result[$0]!.shape)" }.joined(separator: ", ")
                print("wrote \(out): \(written)")
                guard let against else { return 0 }
                return try PPSampleCommand.compareOutputs(result, against: against, tolerance: tolerance)
            }
        }
    }

    /// Prints the relative and largest absolute error of each output against `path`; 1 when any
    /// relative error exceeds the tolerance (or a shape differs), 0 otherwise.
    static func compareOutputs(_ result: TensorDict, against path: String, tolerance: Double) throws -> Int32 {
        let reference = try SafetensorsFile.open(path).tensors
        var failed = false, compared = 0
        for name in result.names {
            guard let expected = reference[name] else { continue }
            compared += 1
            let actual = result[name]!
            guard expected.shape == actual.shape else {
                print("\(name): shape \(actual.shape), reference \(expected.shape)")
                failed = true
                continue
            }
            let a = actual.floats(), b = expected.floats()
            var difference = 0.0, norm = 0.0, largest = 0.0
            for i in a.indices {
                let d = Double(a[i]) - Double(b[i])
                difference += d * d
                norm += Double(b[i]) * Double(b[i])
                largest = max(largest, abs(d))
            }
            let relative = norm > 0 ? (difference / norm).squareRoot() : difference.squareRoot()
            let ok = relative <= tolerance
            if !ok { failed = true }
            print("\(name): relative error \(Format.scientific(relative)), max abs \(Format.scientific(largest))\(ok ? "" : " > \(Format.scientific(tolerance))")")
        }
        if compared == 0 { throw PPError.badInput(path, "no tensor named like an output (enc_moments, enc_mean, enc_logvar, enc_sample, dec, images)") }
        print(failed ? "MISMATCH against \(path)" : "match: \(compared) tensors within \(Format.scientific(tolerance)) of \(path)")
        return failed ? 1 : 0
    }

    struct BenchVAE: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "bench-vae",
            abstract: "Benchmark: a random-weight SD VAE (blocks 128/256/512/512, 2 layers, 32 groups) decoding [B,4,s/8,s/8] latents and encoding [B,3,s,s] images: seconds and peak RSS.")

        @Option(help: "Threads.") var threads = 2
        @Option(help: "Batch size.") var batch = 4
        @Option(help: "Image side in pixels (latents are side/8).") var size = 256
        @Option(help: "Rounds (the best counts).") var repeats = 1
        @Flag(help: "Print JSON.") var json = false

        func validate() throws {
            if threads < 1 || batch < 1 || repeats < 1 { throw ValidationError("--threads, --batch and --repeats must be positive") }
            if size < 8 || size % 8 != 0 { throw ValidationError("--size must be a positive multiple of 8") }
        }

        func run() throws {
            CLI.run("ppsample bench-vae") {
                let r = try VAEBenchmark.run(threads: threads, batch: batch, imageSize: size, repeats: repeats) { CLI.printError($0) }
                if json {
                    try CLI.writeJSON(.object(JSONObject([
                        ("threads", .int(Int64(r.threads))), ("model", .string(r.config.summary)),
                        ("batch", .int(Int64(r.batch))), ("image_size", .int(Int64(r.imageSize))),
                        ("decode_seconds", .double(r.decodeSeconds)), ("encode_seconds", .double(r.encodeSeconds)),
                        ("rss_after_weights_bytes", .int(Int64(r.residentAfterWeights))),
                        ("decode_peak_rss_bytes", .int(Int64(r.decodePeakResident))),
                        ("encode_peak_rss_bytes", .int(Int64(r.encodePeakResident))),
                        ("peaks_separate", .bool(r.peaksSeparate)),
                    ])), to: "-")
                } else {
                    print(r.text)
                }
                return 0
            }
        }
    }
}
