#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import PPBench
import PPCheckpoint
import PPCLI
import PPFileIO
import PPKernels
import PPLatents
import PPConvert
import PPJSON
import PPModel
import PPModelIO
import PPTensor
import PPTrain

struct PPConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ppconvert",
        abstract: "Read DiT/SiT/PPFlow checkpoints in any common form, convert DiT/SiT to PPFlow, verify, compare.",
        discussion: """
            SOURCE/PATH may be a torch .pt (bare state dict or train checkpoint), a safetensors file, a sharded \
            safetensors folder, a diffusers folder, a native PPFlow folder, or a zip of any of these. Formats are \
            detected by content. An output that exists is replaced only with --force, and never when it holds \
            files the toolkit did not write.

            """ + "\n" + PPError.exitCodeSummary,
        subcommands: [Inspect.self, Convert.self, Diff.self, FromDit.self, Verify.self, Migrate.self, BenchIO.self])
}

struct SourceOptions: ParsableArguments {
    @Option(help: "Which state dict of a train checkpoint to use: ema or model (default: ema when present).")
    var weights: WeightsChoice?

    @Flag(name: .customLong("no-verify-hash"), help: "Do not check native checkpoints against the sha256 in their config.json.")
    var noVerifyHash = false

    var verifyHashes: Bool { !noVerifyHash }

    func load(_ path: String) throws -> LoadedCheckpoint {
        try CheckpointLoader.load(path, weights: weights, verifyHashes: verifyHashes)
    }
}

extension WeightsChoice: ExpressibleByArgument {}

/// The two outputs `from-dit` writes (a subset of `OutputFormat`, so `--help` lists exactly these).
enum ModelOutputFormat: String, CaseIterable, ExpressibleByArgument {
    case native, torch
    var outputFormat: OutputFormat { self == .native ? .native : .torch }
}
extension OutputFormat: ExpressibleByArgument {}
extension OutputDType: ExpressibleByArgument {}
extension InitializerKind: ExpressibleByArgument {}

extension PPConvertCommand {
    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show format, family, inferred configuration, sub-dicts and tensors of a checkpoint.")

        @Argument(help: "The checkpoint (file, folder or zip).") var path: String
        @OptionGroup var source: SourceOptions
        @Flag(help: "Print a JSON report instead of text.") var json = false
        @Flag(help: "List every tensor (the text report shows the first 40).") var all = false
        @Option(help: "Number of attention heads, if no metadata says (released models: S 6, B 12, L/XL 16).") var heads: Int?

        func run() throws {
            CLI.run("ppconvert inspect") {
                var loaded = try source.load(path)
                if let heads { loaded.architectureHints["num_heads"] = .int(Int64(heads)) }
                let report = InspectReport(loaded, sha256: try CheckpointLoader.fileSHA256(path))
                if json {
                    try CLI.writeJSON(report.json, to: "-")
                } else {
                    report.lines(maxTensors: all ? .max : 40).forEach { print($0) }
                }
                return 0
            }
        }
    }

    struct Convert: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Change the container without changing the model.",
            discussion: """
                Examples:
                  ppconvert convert PPF-XL-2.pt ppf-xl-2 --format native
                  ppconvert convert ppf-xl-2 PPF-XL-2-bf16.pt --format torch --dtype bf16
                  ppconvert convert dit_diffusers.zip dit.safetensors --format safetensors
                """)

        @Argument(help: "The source checkpoint.") var input: String
        @Argument(help: "The output file (or folder for --format native).") var output: String
        @Option(help: "native | torch | torch-train | safetensors") var format: OutputFormat = .native
        @Option(help: "keep | f32 | f16 | bf16 (floating-point tensors; rounding to nearest even)") var dtype: OutputDType = .keep
        @Option(help: "Number of attention heads when no metadata says.") var heads: Int?
        @Flag(name: .customLong("no-source-hash"), help: "Native output: do not hash the source for the provenance (recorded as null); saves a pass over it.")
        var noSourceHash = false
        @Flag(help: "Replace the output if it exists (only a file, or a native folder the toolkit wrote).") var force = false
        @Option(help: "velocity (SiT) or epsilon (DiT), when the source's metadata does not say (needed for native and torch-train outputs).") var objective: String?
        @OptionGroup var source: SourceOptions

        func validate() throws {
            if let objective, Objective(userName: objective) == nil { throw ValidationError("--objective must be velocity or epsilon") }
        }

        func run() throws {
            CLI.run("ppconvert convert") {
                try format.checkOutput(output, force: force)
                if TrainingRunExport.isRunFolder(input) {
                    guard format == .torchTrain else {
                        throw PPError(.usage, file: input, "a ppfinetune run folder: convert its checkpoint folder (\(input)/final or checkpoints/step-*) or use --format torch-train")
                    }
                    let exported = try TrainingRunExport.write(run: input, to: output, verifyHashes: source.verifyHashes)
                    print("wrote \(output) (torch-train) from \(exported.checkpoint), step \(exported.step): model = raw weights, ema, AdamW state")
                    return 0
                }
                var loaded = try source.load(input)
                try loaded.applyGivenObjective(objective.flatMap(Objective.init(userName:)))
                // Native folders and train checkpoints record the objective; it is settled before writing.
                if format == .native || format == .torchTrain { try loaded.requireKnownObjective() }
                let bar = Progress("writing MiB", total: 0)
                let sourceHash: (@Sendable () throws -> String?)?
                if noSourceHash { sourceHash = nil } else { sourceHash = { [input] in try CheckpointLoader.fileSHA256(input) } }
                let summary = try ContainerConversion.run(loaded, to: output, format: format, dtype: dtype,
                                                          sourceSHA256: sourceHash, heads: heads,
                                                          progress: { done, total in bar.update(done >> 20, of: total >> 20, label: "writing MiB") })
                print("wrote \(output) (\(format.rawValue)): \(summary.tensorCount) tensors, \(Format.bytes(summary.bytes))")
                return 0
            }
        }
    }

    struct Diff: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Compare two checkpoints tensor by tensor; exit 0 when equal, 1 when not.")

        @Argument(help: "First checkpoint.") var a: String
        @Argument(help: "Second checkpoint.") var b: String
        @Flag(help: "Print a JSON report.") var json = false
        @OptionGroup var source: SourceOptions

        func run() throws {
            CLI.run("ppconvert diff") {
                let diff = CheckpointDiff(try source.load(a).tensors, try source.load(b).tensors)
                if json {
                    try CLI.writeJSON(diff.json(pathA: a, pathB: b), to: "-")
                } else {
                    diff.lines().forEach { print($0) }
                }
                return diff.isEqual ? 0 : 1
            }
        }
    }
}

extension PPConvertCommand {
    struct FromDit: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "from-dit",
            abstract: "Turn a pretrained DiT/SiT into a PPFlow model (verified: the finest level must reproduce the source).",
            discussion: """
                Examples:
                  ppconvert from-dit examples/digits/digits-sit.zip                 # -> ./digits-sit-ppf2/
                  ppconvert from-dit SiT-XL-2-256.pt --levels 3 --objective velocity --out ppf-xl-3
                  ppconvert from-dit weights.zip --json report.json --check        # CI: fail on drift
                The objective comes from metadata (config.json, train args, diffusers scheduler); --objective fills
                the gap when there is none. Without either the model is converted and recorded as 'unknown'.
                """)

        @Argument(help: "The DiT/SiT source (torch .pt, safetensors, diffusers folder/zip, zip with config.json).") var source: String
        @Option(help: "Pyramid levels: 2 or 3.") var levels = 2
        @Option(help: "Initializer: repeat (the official rule) or calibrated (repeat, then the coarse output projections refitted to the source on --data latents).") var `init`: InitializerKind = .repeat
        @Option(help: "Latents for --init calibrated and for verification: safetensors with latents [N,C,H,W] and optional labels [N], a latent cache folder (ppfinetune encode), or an image folder with --vae.") var data: String?
        @Option(help: "The VAE that encodes --data when it is an image folder (a path or a hub id such as stabilityai/sd-vae-ft-ema).") var vae: String?
        @Option(help: "Calibration images (default: 2048, at most 90 % of the data; the rest is held out for the verification).") var calibrationSamples: Int?
        @Option(help: "Seed of the calibration inputs.") var seed: UInt64 = 0
        @Option(help: "Ridge factor: lambda = factor x rows.") var ridge = 1e-3
        @Option(help: "Calibrated only: pass the within-group detail of x_t through the coarse patch embeddings with this gain (default 0: the published refit exactly, which gives the best samples; > 0 lowers the velocity deviation but worsens samples, see docs/QUALITY.md).") var detailScale = 0.0
        @Option(help: "Level thresholds in flow time, e.g. 0.5 or 0.5,0.75 (default: the paper's).") var thresholds: String?
        @Option(help: "Default guidance scale per level, e.g. 1,3 (default: the paper's FID settings).") var cfgScales: String?
        @Option(help: "velocity (SiT) or epsilon (DiT), when the source's metadata does not say.") var objective: String?
        @Option(help: "Output dtype: keep | f32 | f16 | bf16.") var dtype: OutputDType = .keep
        @Option(help: "Number of attention heads when no metadata says.") var heads: Int?
        @Option(help: "A key-mapping table to use instead of the built-in converters/ppflow-from-dit.json (same format).") var rules: String?
        @Option(help: "Output folder (native) or file (torch). Default: <source>-ppf<levels>.") var out: String?
        @Option(help: "native (a folder) or torch (a .pt for the official sample.py).") var format: ModelOutputFormat = .native
        @Option(help: "Write a JSON report to this file ('-' for stdout).") var json: String?
        @Flag(help: "Replace the output (and the --json file) if they exist; only what the toolkit wrote is replaced.") var force = false
        @Flag(help: "Print the plan (tensors copied, derived, dropped, output size) and write nothing.") var dryRun = false
        @Flag(help: "Compare an existing output with a fresh conversion; exit 1 if it differs. Writes nothing.") var check = false
        @Flag(name: .customLong("no-verify"), help: "Skip running source and converted model.") var noVerify = false
        @OptionGroup var sourceOptions: SourceOptions

        func validate() throws {
            if dryRun && check { throw ValidationError("--dry-run and --check exclude each other") }
            if let objective, Objective(userName: objective) == nil { throw ValidationError("--objective must be velocity or epsilon") }
            if `init` == .calibrated && data == nil { throw ValidationError("--init calibrated needs --data LATENTS") }
            if let calibrationSamples, calibrationSamples < 1 { throw ValidationError("--calibration-samples must be positive") }
            if !(ridge >= 0) { throw ValidationError("--ridge must be >= 0") }
            if !(detailScale >= 0 && detailScale <= 100) { throw ValidationError("--detail-scale must be in 0...100") }
            if detailScale > 0 && `init` != .calibrated { throw ValidationError("--detail-scale needs --init calibrated") }
        }

        func run() throws {
            CLI.run("ppconvert from-dit") {
                var options = FromDiTOptions()
                options.levels = levels
                options.initializer = `init`
                options.thresholds = try thresholds.map { try CLI.numbers($0, flag: "--thresholds", as: Double.self) }
                options.cfgScales = try cfgScales.map { try CLI.numbers($0, flag: "--cfg-scales", as: Double.self) }
                options.objective = objective.flatMap(Objective.init(userName:))
                options.dtype = dtype
                options.heads = heads
                options.rulesFile = rules
                // A latent cache or image folder as --data: reduced to one latents file once the outputs are known to be writable.
                var job = FromDiTJob(sourcePath: source, options: options)
                job.weights = sourceOptions.weights
                job.verifyHashes = sourceOptions.verifyHashes
                job.output = out
                job.format = format.outputFormat
                job.verify = !noVerify
                job.mode = dryRun ? .dryRun : check ? .check : .write
                job.force = force
                try job.checkOutput()
                if let json, json != "-" { try OutputTarget.check(json, kind: .file, force: force) }
                var dataFile: (path: String, temporary: String?)? = nil
                defer { if let folder = dataFile?.temporary { FileOutput.removeTree(folder) } }
                var sourceConfig: ModelConfig? = nil
                if let data {
                    let probe = try sourceOptions.load(source)
                    let config = try ModelLoader.configuration(of: probe, heads: heads)
                    sourceConfig = config
                    dataFile = try LatentSubset.file(for: data, count: (calibrationSamples ?? 2048) + 256, vae: vae, channels: config.inChannels,
                                                     side: config.inputSize, seed: seed, log: { CLI.printError($0) })
                }
                if let data = dataFile?.path, `init` == .calibrated {
                    var calibration = CalibratedInitializer.Options(dataPath: data)
                    calibration.samples = calibrationSamples
                    calibration.seed = seed
                    calibration.ridgeFactor = ridge
                    calibration.detailScale = detailScale
                    options.calibration = calibration
                    let bar = Progress("calibration", total: 0)
                    options.progress = { what, done, total in bar.update(done, of: total, label: what) }
                    job.options = options
                }
                if let data = dataFile?.path, let config = sourceConfig {
                    job.verificationData = try VerificationData.load(data, channels: config.inChannels, size: config.inputSize)
                }
                if json == "-" { job.log = { CLI.printError($0) } }
                let outcome = try job.run()
                if let json { try CLI.writeJSON(outcome.report, to: json) }
                return outcome.exitCode
            }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check an existing PPFlow model against its DiT/SiT source, level by level.")

        @Argument(help: "The PPFlow checkpoint.") var ppflow: String
        @Option(help: "The DiT/SiT it was converted from.") var against: String
        @Option(help: "Latents (safetensors with 'latents' [N,C,H,W] and optional 'labels', or a latent cache folder) instead of random inputs.") var data: String?
        @Option(help: "Number of attention heads when no metadata says.") var heads: Int?
        @Option(help: "Samples per level.") var batch = 4
        @Option(help: "Seed of the inputs.") var seed: UInt64 = 0
        @Flag(help: "Print a JSON report.") var json = false
        @OptionGroup var sourceOptions: SourceOptions

        func run() throws {
            CLI.run("ppconvert verify") {
                let target = try sourceOptions.load(ppflow)
                let source = try sourceOptions.load(against)
                let targetConfig = try ContainerConversion.modelConfig(of: target, heads: heads)
                let sourceConfig = try ContainerConversion.modelConfig(of: source, heads: heads ?? targetConfig.numHeads)
                guard targetConfig.levels > 1 else { throw PPError(.usage, file: ppflow, "not a PPFlow model (\(target.family))") }
                guard sourceConfig.levels == 1 else { throw PPError(.usage, file: against, "not a DiT/SiT model (\(source.family))") }
                // A latent cache gives the same evenly spread samples as from-dit took from it (default count).
                let dataFile = try data.map { try LatentSubset.file(for: $0, count: LatentSubset.defaultCount, vae: nil, channels: sourceConfig.inChannels,
                                                                   side: sourceConfig.inputSize, seed: seed, log: { CLI.printError($0) }) }
                defer { if let folder = dataFile?.temporary { FileOutput.removeTree(folder) } }
                let dataPath = dataFile?.path
                let latents = try dataPath.map { try VerificationData.load($0, channels: sourceConfig.inChannels, size: sourceConfig.inputSize) }
                // The tensors the model shares with its source are read once (from the source's mapping).
                let sourceTensors = try ModelLoader.completeTensors(source, config: sourceConfig)
                let targetTensors = Verification.sharingSource(target.tensors, source: sourceTensors).tensors
                let verification = Verification(
                    source: try ModelWeights(config: sourceConfig, tensors: sourceTensors),
                    ppflow: try ModelWeights(config: targetConfig, tensors: targetTensors),
                    batch: batch, seed: seed, data: latents,
                    pool: try dataPath.flatMap { try CalibratedInitializer.heldOutSamples(recordedIn: target, dataPath: $0, count: latents?.count ?? 0) },
                    repeatRule: target.nativeConfig?["provenance"]?["initializer"]?["name"]?.stringValue == "calibrated"
                        ? try FromDiT.repeatRuleWeights(of: source, like: targetConfig) : nil)
                if json { try CLI.writeJSON(verification.json, to: "-") } else { verification.lines().forEach { print($0) } }
                if data == nil, !json, let calibrationData = target.nativeConfig?["provenance"]?["initializer"]?["data"]?.stringValue {
                    print("note: from-dit measured this model on held-out rows of \(calibrationData); pass --data with that file for the same numbers")
                }
                return verification.passed ? 0 : 1
            }
        }
    }
}

extension PPConvertCommand {
    struct BenchIO: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "bench-io",
            abstract: "Benchmark: convert an XL-size .pt (SiT-XL/2 shape, random weights, 2.7 GB) to native vs `cp` of it.",
            discussion: "Writes the random checkpoint once into --dir (needs about 8 GB free there). Results go to docs/BENCHMARKS.md by hand.")

        @Option(help: "Working folder.") var dir = "/tmp/ppflow-bench"
        @Option(help: "Rounds (the best of each is compared).") var repeats = 3
        @Flag(help: "Print JSON.") var json = false

        func run() throws {
            CLI.run("ppconvert bench-io") {
                _ = mkdir(dir, 0o755)
                var buffer = [CChar](repeating: 0, count: 4096)
                let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
                let me = String(cString: Array(buffer[0..<max(n, 0)]) + [0])
                let report = try IOBenchmark.run(folder: dir, converter: me, repeats: repeats) { CLI.printError($0) }
                if json { try CLI.writeJSON(report.json, to: "-"); return 0 }
                print("checkpoint: \(report.checkpoint) (\(Format.bytes(report.bytes)), \(report.parameters) parameters)")
                print("cp:                 best \(Format.fixed(report.copy.best, 2)) s of \(report.copy.seconds.map { Format.fixed($0, 2) })")
                print("convert to native:  best \(Format.fixed(report.convert.best, 2)) s of \(report.convert.seconds.map { Format.fixed($0, 2) }), peak RSS \(Format.bytes(report.convert.peakResidentBytes))")
                print("convert, no source hash: best \(Format.fixed(report.convertWithoutSourceHash.best, 2)) s of \(report.convertWithoutSourceHash.seconds.map { Format.fixed($0, 2) }), peak RSS \(Format.bytes(report.convertWithoutSourceHash.peakResidentBytes))")
                print("ratio convert/cp:   \(Format.fixed(report.ratio, 2)) (target <= 1.5); without the source hash \(Format.fixed(report.ratioWithoutSourceHash, 2)); peak RSS target < 1 GiB")
                return 0
            }
        }
    }
}



BLASCore.useCPUKernels()
PPConvertCommand.main()
