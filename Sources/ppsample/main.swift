import ArgumentParser
import PPBench
import PPCheckpoint
import PPCLI
import PPFileIO
import PPJSON
import PPKernels
import PPLatents
import PPModel
import PPModelIO
import PPSafetensors
import PPSample
import PPTensor
import PPVAE

struct PPSampleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ppsample",
        abstract: "Run DiT/SiT/PPFlow models: the forward pass (a parity tool) and ODE sampling.",
        discussion: """
            Examples:
              ppsample digits-sit-ppf2 --per-class 8 --png grid.png                 # 80 digits, one row per class
              ppsample ppf-xl-2 --steps 50 --cfg-scales 1,3 --labels 207,360 --out s.safetensors
              ppsample ppf2.pt --heads 4 --noise z.safetensors --sampler heun --steps 7   # parity with the official sampler
              ppsample ppf-xl-2 --labels 207,360 --vae stabilityai/sd-vae-ft-ema --png g.png

            """ + "\n" + PPError.exitCodeSummary,
        subcommands: [Sample.self, Forward.self, Bench.self, BenchForward.self, VAE.self, BenchVAE.self, Eval.self, TrainClassifier.self],
        defaultSubcommand: Sample.self)
}

extension GuidanceChannels: ExpressibleByArgument {
    public init?(argument: String) {
        switch argument {
        case "3", "first3": self = .first3
        case "all": self = .all
        default: return nil
        }
    }
}

extension WeightsChoice: ExpressibleByArgument {}
extension UnseenNoise: ExpressibleByArgument {}

struct ModelOptions: ParsableArguments {
    @Option(help: "Number of attention heads when no metadata says.") var heads: Int?
    @Option(help: "Which state dict of a train checkpoint: ema or model.") var weights: WeightsChoice?
    @Option(help: "Threads for BLAS and the kernels' own loops (default: all cores).") var threads: Int?
    @Flag(name: .customLong("no-verify-hash"), help: "Do not check native checkpoints against the sha256 in their config.json.")
    var noVerifyHash = false

    func load(_ path: String, objective: Objective? = nil, requireObjective: Bool = false) throws -> LoadedModel {
        return try ModelLoader.load(path, weights: weights, heads: heads, objective: objective, requireObjective: requireObjective,
                                    verifyHashes: !noVerifyHash)
    }
}

extension PPSampleCommand {
    struct Sample: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "sample",
            abstract: "Sample with the fixed-grid ODE solvers of the official sampler (torchdiffeq on linspace(0, 1, N)).",
            discussion: """
                --steps N is the number of time points of the official grid linspace(0, 1, N) (N-1 solver steps), as \
                in the official sample.py. The pyramid level is picked per model evaluation from its t. Velocity \
                models (SiT/PPFlow) are integrated directly; epsilon models (DiT) through the exact change of \
                variables to flow time; models whose objective is unknown are refused. Guidance skips the \
                unconditional pass wherever the level's scale is 1.

                Outputs are what you ask for: --out (latents), --png (a grid, one labelled row per class) and/or \
                --images (one PNG per sample, named 000000_class207.png in batch order, pixels as the official \
                sample_ddp.py writes them for FID tools); with none, --out samples.safetensors. Latent models \
                (4 channels) need --vae for pictures: the samples are decoded as decode(x / scaling_factor + \
                shift_factor). Rows of a 1000-class model are labelled with ImageNet names. Existing outputs are \
                replaced only with --force.
                """)

        @Argument(help: "The model: any checkpoint ppconvert reads (native folders carry their objective and guidance).") var model: String
        @Option(help: "euler | heun (torchdiffeq's heun2).") var sampler = "euler"
        @Option(help: "Time points of the grid linspace(0, 1, N) (N-1 solver steps).") var steps = 50
        @Option(help: "Guidance scale per level, e.g. 1,3 (default: the native config's, else no guidance).") var cfgScales: String?
        @Option(help: "Guided channels: 3 (official) or all (default: the native config's, else all).") var cfgChannels: GuidanceChannels?
        @Option(help: "Class labels, e.g. 1,2,3 (K = the null class).") var labels: String?
        @Option(help: "Samples per class, all classes (default 1 when no --labels).") var perClass: Int?
        @Option(help: "Seed of the noise.") var seed: UInt64 = 0
        @Option(help: "Start from this noise: z [B,C,H,W] (and y [B] int64 if present).") var noise: String?
        @Option(help: "Samples per model call (large runs go in chunks).") var batch = 64
        @Option(help: "Output latents: samples [B,C,H,W], labels [B] (default samples.safetensors when no --png is given).") var out: String?
        @Option(help: "Write a PNG grid, one labelled row per class (1- or 3-channel latents).") var png: String?
        @Flag(help: "Replace existing output files.") var force = false
        @Option(help: "Write one PNG per sample into this new folder (000000_class207.png, ...), for FID tools.") var images: String?
        @Option(help: "Decode latents for --png/--images with this VAE: a diffusers folder or zip, an ldm .safetensors/.ckpt, or a hub id (stabilityai/sd-vae-ft-ema).") var vae: String?
        @Option(help: "The VAE's latent scaling factor (default: its config.json's, else 0.18215).") var scalingFactor: Float?
        @Option(help: "The VAE's latent shift factor (default: its config.json's, else none).") var shiftFactor: Float?
        @Option(help: "PNG grid pixel upscale factor (default 4, 1 with --vae).") var upscale: Int?
        @Option(help: "Objective when the checkpoint does not record one: velocity | epsilon.") var objective: String?
        @Option(help: "Starting noise a coarse level cannot see (an untuned conversion's), where a finer level takes over: drop all of it, remove the flow's share (flow), or keep it as the official sampler does (drop | flow | keep).")
        var unseenNoise: UnseenNoise = .drop
        @Flag(help: "Print a JSON report (timings, model evaluations) on stdout.") var json = false
        @OptionGroup var modelOptions: ModelOptions

        func validate() throws {
            if labels != nil && perClass != nil { throw ValidationError("give --labels or --per-class, not both") }
            if noise != nil && (labels != nil || perClass != nil) { throw ValidationError("--noise brings its own batch; drop --labels/--per-class") }
            if steps < 2 { throw ValidationError("--steps needs at least 2 time points") }
            if ODEMethod(name: sampler) == nil { throw ValidationError("--sampler must be euler or heun") }
            if batch < 1 { throw ValidationError("--batch must be positive") }
            if let objective, Objective(userName: objective) == nil { throw ValidationError("--objective must be velocity or epsilon") }
        }

        /// The latents file to write: the one asked for, or the default when nothing else was asked.
        var latentsOutput: String? { out ?? (png == nil && images == nil ? "samples.safetensors" : nil) }

        func run() throws {
            CLI.run("ppsample", threads: modelOptions.threads) {
                let start = CLI.now()
                // Every output location is checked before the model is loaded.
                for path in [latentsOutput, png].compactMap({ $0 }) { try OutputTarget.check(path, kind: .file, force: force) }
                if let latentsOutput, latentsOutput == png { throw PPError(.usage, entry: "--png", "the PNG and the latents would be the same file") }
                if let images { try OutputTarget.check(images, kind: .folder, force: force, toolkitEntries: LatentPictures.toolkitEntries) }
                if vae != nil && png == nil && images == nil { throw PPError(.usage, entry: "--vae", "decodes pictures: give --png and/or --images too") }
                let loaded = try modelOptions.load(model, objective: self.objective.flatMap(Objective.init(userName:)), requireObjective: true)
                let config = loaded.config
                if let picture = png ?? images, vae == nil, config.inChannels != 1 && config.inChannels != 3 {
                    throw PPError(.usage, file: picture, "\(config.inChannels)-channel latents need a VAE to become pictures: give --vae (e.g. --vae stabilityai/sd-vae-ft-ema), or write the latents with --out")
                }
                // The VAE is loaded and checked against the model before any sampling.
                let decoder = try vae.map { path -> AutoencoderKL in
                    let loadedVAE = try VAEInput.load(path, overrides: VAEOverrides(scalingFactor: scalingFactor, shiftFactor: shiftFactor))
                    try LatentPictures.check(vae: loadedVAE, vaeName: path, modelChannels: config.inChannels, model: model)
                    return loadedVAE
                }
                let net = loaded.makeModel()
                let objective = loaded.checkpoint.objective
                let guidanceConfig = loaded.checkpoint.nativeConfig?["guidance"]
                let scales: [Float]? = try cfgScales.map { try CLI.numbers($0, flag: "--cfg-scales", as: Float.self) } ?? guidanceConfig?["scales"]?.arrayValue?.compactMap { $0.doubleValue.map(Float.init) }
                let channels = cfgChannels ?? (guidanceConfig?["channels"]?.stringValue == "first3" ? .first3 : .all)
                let guidance = scales.flatMap { $0.allSatisfy { $0 == 1 } ? nil : Guidance(scales: $0, channels: channels) }
                let field = try SampleFields.field(model: net, objective: objective, guidance: guidance)

                // Where to start: given noise, or seeded noise for the requested labels.
                let starts: [SampleStart]
                if let noise {
                    let file = try SafetensorsFile.open(noise)
                    guard let z = file.tensors["z"] else { throw PPError.badInput(noise, entry: "z", "missing (need z [B,C,H,W], optional y [B])") }
                    let y = file.tensors["y"].map { $0.int64s().map { Int32(clamping: $0) } }
                    starts = [try SampleStart.given(z: z.floats(), shape: z.shape, labels: y, defaultLabel: Int32(config.numClasses), numClasses: config.numClasses)]
                } else {
                    let wanted: [Int32]
                    if let labels {
                        wanted = try CLI.numbers(labels, flag: "--labels", as: Int32.self)
                    } else {
                        let k = perClass ?? 1
                        wanted = (0..<config.numClasses).flatMap { c in [Int32](repeating: Int32(c), count: k) }
                    }
                    // One seeded start per chunk (seed + chunk index), so chunking is part of the recipe.
                    var chunks: [SampleStart] = []
                    var offset = 0
                    while offset < wanted.count {
                        let part = Array(wanted[offset ..< min(offset + batch, wanted.count)])
                        chunks.append(try SampleStart.seeded(seed &+ UInt64(chunks.count), batch: part.count, channels: config.inChannels,
                                                             side: config.inputSize, labels: part, numClasses: config.numClasses))
                        offset += part.count
                    }
                    starts = chunks
                }
                let method = ODEMethod(name: sampler)!
                let unseenPlan = UnseenNoisePlan(model: net, objective: objective, mode: unseenNoise)
                let total = starts.count * (steps - 1)
                let bar = Progress("sampling", total: total)
                var samples: [Float] = [], allLabels: [Int32] = []
                var evaluations = 0, saved = 0
                var shape: [Int] = []
                let sampleStart = CLI.now()
                for (index, s) in starts.enumerated() {
                    let result = try Sampler.run(field, start: s, method: method, points: steps, unseenNoise: unseenPlan) { done, _ in
                        bar.update(index * (steps - 1) + done)
                    }
                    samples += result.samples
                    allLabels += result.labels
                    evaluations += result.count.evaluations
                    saved += result.count.savedEvaluations
                    shape = [allLabels.count] + result.shape.dropFirst()
                }
                let sampleSeconds = CLI.now() - sampleStart
                var wrote: [String] = []
                if let out = latentsOutput {
                    try SampleOutput.writeSafetensors(samples: samples, shape: shape, labels: allLabels, path: out)
                    wrote.append(out)
                }
                // Pictures: the samples themselves (1 or 3 channels) or their VAE decode.
                var pictures = (values: samples, shape: shape)      // [B, C, H, W] in [-1, 1]
                if let decoder, png != nil || images != nil {
                    let decodeBar = Progress("decoding", total: allLabels.count)
                    pictures = try LatentPictures.decode(samples, shape: shape, vae: decoder, batch: batch) { decodeBar.update($0) }
                }
                if let png {
                    let classes = config.numClasses
                    try SampleOutput.writePNGGrid(samples: pictures.values, shape: pictures.shape, labels: allLabels, path: png,
                                                  upscale: upscale ?? (decoder == nil ? 4 : 1),
                                                  rowLabel: { ClassNames.rowLabel($0, numClasses: classes) })
                    wrote.append(png)
                }
                if let images {
                    try LatentPictures.writeImages(pictures.values, shape: pictures.shape, labels: allLabels, to: images)
                    wrote.append(images)
                }
                if json {
                    try CLI.writeJSON(.object(JSONObject([
                        ("model", .string(model)), ("objective", .string(objective.rawValue)), ("levels", .int(Int64(config.levels))),
                        ("sampler", .string(method.rawValue)), ("time_points", .int(Int64(steps))),
                        ("unseen_noise", .string(unseenNoise.rawValue)),
                        ("unseen_dimensions", unseenPlan.map { .array($0.dimensions.map { .int(Int64($0)) }) } ?? .null),
                        ("samples", .int(Int64(allLabels.count))), ("guidance", .array((guidance?.scales ?? []).map { .double(Double($0)) })),
                        ("model_evaluations", .int(Int64(evaluations))), ("evaluations_saved_by_scale_1", .int(Int64(saved))),
                        ("sampling_seconds", .double(sampleSeconds)), ("seconds_per_image", .double(sampleSeconds / Double(max(allLabels.count, 1)))),
                        ("total_seconds", .double(CLI.now() - start)), ("outputs", .array(wrote.map { .string($0) })),
                    ])), to: "-")
                } else {
                    print("wrote \(wrote.joined(separator: ", ")): \(allLabels.count) samples, \(evaluations) model evaluations (\(saved) saved where the guidance scale is 1), \(Format.fixed(sampleSeconds, 2)) s")
                }
                return 0
            }
        }
    }

    struct Bench: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Benchmark: random-weight SiT-S/2, SiT-B/2 and their PPFlow 2- and 3-level versions on 32x32 latents, batch 8: seconds per image, speedups and FLOP ratios.")

        @Option(help: "Euler steps.") var steps = 10
        @Option(help: "Threads.") var threads = 2
        @Option(help: "Rounds (each model's best counts).") var repeats = 2
        @Option(help: "Models: S/2,B/2.") var models = "S/2,B/2"
        @Flag(help: "Print JSON.") var json = false

        func run() throws {
            CLI.run("ppsample bench") {
                let report = try SampleBenchmark.run(threads: threads, steps: steps, repeats: repeats,
                                                     models: models.split(separator: ",").map(String.init)) { CLI.printError($0) }
                print(json ? report.jsonText : report.text)
                return 0
            }
        }
    }

    /// The parity tool: run the network on given inputs and write what it returns.
    struct Forward: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run one forward pass on inputs from a safetensors file (a parity tool against another implementation).",
            discussion: """
                IN holds x [B,C,H,W] (float), t [B] (the model's own time: flow t in [0,1] for SiT/PPFlow, DDPM \
                steps for DiT) and y [B] (int64 labels; K = the null class). OUT receives `out` [B,Cout,H,W], the \
                whole network output (for learn_sigma models the first C channels are the prediction, the rest \
                the sigma half), and `prediction` [B,C,H,W]. PPFlow models pick each sample's level from its t \
                (--level forces one).

                With --cfg-scales the official guided forward is run: the given batch is the conditional half, \
                guidance mixes `--cfg-channels 3` (the official code, for bit parity) or `all` channels, and a \
                level whose scale is 1 skips its unconditional pass.

                Example:
                  ppsample forward ppf2.pt --heads 4 --inputs in.safetensors --out out.safetensors --cfg-scales 1,4
                """)

        @Argument(help: "The model: any checkpoint ppconvert reads.") var model: String
        @Option(help: "Inputs: x, t, y.") var inputs: String
        @Option(help: "Output safetensors file.") var out: String
        @Option(help: "Guidance scale per level (one value = every level), e.g. 1,4.") var cfgScales: String?
        @Option(help: "Guided channels: 3 (official) or all.") var cfgChannels: GuidanceChannels = .all
        @Option(help: "Force this pyramid level for every sample.") var level: Int?
        @Flag(help: "Replace OUT if it exists.") var force = false
        @OptionGroup var modelOptions: ModelOptions

        func run() throws {
            CLI.run("ppsample forward", threads: modelOptions.threads) {
                try OutputTarget.check(out, kind: .file, force: force)
                let loaded = try modelOptions.load(model)
                let config = loaded.config
                let file = try SafetensorsFile.open(inputs)
                func tensor(_ name: String) throws -> TensorView {
                    guard let t = file.tensors[name] else { throw PPError.badInput(inputs, entry: name, "missing (need x [B,C,H,W], t [B], y [B])") }
                    return t
                }
                let x = try tensor("x"), t = try tensor("t"), y = try tensor("y")
                guard x.rank == 4, x.shape[1] == config.inChannels, x.shape[2] == x.shape[3], x.dtype.isFloatingPoint else {
                    throw PPError.badInput(inputs, entry: "x", "\(x.dtype.shortName) \(x.shape) is not a float [B,\(config.inChannels),H,H] tensor")
                }
                let batch = x.shape[0], side = x.shape[2]
                guard side % (config.patchSize * (config.levels > 1 ? 2 : 1)) == 0 else {
                    throw PPError.badInput(inputs, entry: "x", "side \(side) is not a multiple of the patch grid this model needs")
                }
                guard t.shape == [batch], t.dtype.isFloatingPoint else { throw PPError.badInput(inputs, entry: "t", "\(t.shape) is not a float [\(batch)] tensor") }
                guard y.shape == [batch], !y.dtype.isFloatingPoint else { throw PPError.badInput(inputs, entry: "y", "\(y.shape) is not an integer [\(batch)] tensor") }
                let labels = y.int64s()
                if let bad = labels.first(where: { $0 < 0 || $0 > Int64(config.numClasses) }) {
                    throw PPError.badInput(inputs, entry: "y", "label \(bad) outside 0...\(config.numClasses) (\(config.numClasses) is the null class)")
                }
                if let level, !(0..<config.levels).contains(level) {
                    throw PPError(.usage, entry: "--level", "this model has levels 0..<\(config.levels)")
                }
                let net = loaded.makeModel()
                let y32 = labels.map { Int32($0) }
                let output: [Float]                                          // [B, Cout, H, W]
                if let cfgScales {
                    let scales = try CLI.numbers(cfgScales, flag: "--cfg-scales", as: Float.self)
                    guard scales.count == 1 || scales.count == config.levels else {
                        throw PPError(.usage, entry: "--cfg-scales", "give one scale or one per level (\(config.levels))")
                    }
                    output = net.forwardWithGuidance(x: x.floats(), t: t.floats(), y: y32, batch: batch, scales: scales, channels: cfgChannels)
                } else {
                    output = net.forward(x: x.floats(), t: t.floats(), y: y32, batch: batch, level: level)
                }
                let plane = side * side, c = config.inChannels, cout = config.outChannels
                var prediction = [Float](); prediction.reserveCapacity(batch * c * plane)  // [B, C, H, W]
                for b in 0..<batch { prediction += output[(b * cout * plane) ..< (b * cout * plane + c * plane)] }
                var result = TensorDict()
                result["out"] = TensorView(floats: output, shape: [batch, cout, side, side])
                result["prediction"] = TensorView(floats: prediction, shape: [batch, c, side, side])
                result["level"] = TensorView(int64s: t.floats().map { Int64(level ?? config.level(forTime: $0)) }, shape: [batch])
                try SafetensorsWriter.write(result, metadata: [("model", FileOutput.baseName(of: model)), ("evaluations", "\(net.forwardCount)")], to: out)
                print("wrote \(out): out \([batch, cout, side, side]), prediction \([batch, c, side, side]), level [\(batch)]; \(net.forwardCount) sample evaluations")
                return 0
            }
        }
    }
}

extension PPSampleCommand {
    struct BenchForward: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "bench-forward",
            abstract: "Benchmark: SiT-B/2 forward (32x32x4 latents, batch 8, random weights) GFLOP/s next to OpenBLAS sgemm on a large square product.")

        @Option(help: "Threads.") var threads = 2
        @Option(help: "Side of the square sgemm.") var sgemmSize = 2048
        @Option(help: "Forward repeats (the best is reported).") var repeats = 3
        @Flag(help: "Print JSON.") var json = false

        func run() throws {
            CLI.run("ppsample bench-forward") {
                let r = ForwardBenchmark.run(threads: threads, sgemmSize: sgemmSize, repeats: repeats)
                if json {
                    try CLI.writeJSON(.object(JSONObject([
                        ("threads", .int(Int64(r.threads))), ("model", .string(r.modelDescription)),
                        ("sgemm_size", .int(Int64(r.sgemmSize))), ("sgemm_gflops", .double(r.sgemmGFLOPS)),
                        ("forward_gflop", .double(r.forwardFLOPs / 1e9)), ("forward_seconds", .double(r.forwardSeconds)),
                        ("forward_gflops", .double(r.forwardGFLOPS)), ("fraction_of_sgemm", .double(r.efficiency)),
                    ])), to: "-")
                } else {
                    print(r)
                }
                return 0
            }
        }
    }
}

// train-classifier must write the shipped classifier bit for bit on any machine: fixed BLAS kernels.
BLASCore.useCPUKernels(reproducible: CommandLine.arguments.dropFirst().first == "train-classifier")
PPSampleCommand.main()
