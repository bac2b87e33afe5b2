import ArgumentParser
import Foundation
import PPCheckpoint
import PPCLI
import PPEval
import PPFileIO
import PPJSON
import PPKernels
import PPModel
import PPSample
import PPTensor

extension PPSampleCommand {
    /// Sample quality measured by the toolkit itself (docs/QUALITY.md).
    struct Eval: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Score samples against real data: Fréchet distance in a classifier's feature space, class accuracy, cost per image.",
            discussion: """
                INPUT is a samples file written by ppsample (samples [B,C,H,W], labels [B]) or a model, which is
                sampled once per seed (--count samples, labels 0..K-1 in turn, no guidance unless --cfg-scales).
                The Fréchet distance compares the classifier's last hidden layer on the samples with the same on
                every row of --data; accuracy is the share of conditional samples classified as their label.
                For a model the cost is reported too: network evaluations, FLOPs (every matrix product at the
                level each evaluation runs) and seconds per image.
                Examples:
                  ppsample eval examples/digits/digits-sit.zip --data examples/digits/digits.safetensors --seeds 0,1,2
                  ppsample eval runs/d2/final --data examples/digits/digits.safetensors --thresholds 0.3 --json
                  ppsample eval samples.safetensors --data examples/digits/digits.safetensors
                """)

        @Argument(help: "A samples file (safetensors with `samples` and `labels`) or a model checkpoint.") var input: String
        @Option(help: "Real data: latents [N,C,H,W] and labels [N].") var data: String
        @Option(help: "The classifier (default: digits-classifier.safetensors next to --data).") var classifier: String?
        @Option(help: "Samples per seed (model input).") var count = 1000
        @Option(help: "Time points of the grid linspace(0, 1, N).") var steps = 50
        @Option(help: "euler | heun.") var sampler = "euler"
        @Option(help: "Noise seeds, one sampling run each, e.g. 0,1,2.") var seeds = "0"
        @Option(help: "Guidance scale per level (default 1: unguided).") var cfgScales = "1"
        @Option(help: "Guided channels: 3 or all.") var cfgChannels: GuidanceChannels = .all
        @Option(help: "Other switch points for a pyramid model, e.g. 0.3 or 0.4,0.7.") var thresholds: String?
        @Option(help: "Samples per model call.") var batch = 100
        @Option(help: "Starting noise a coarse level cannot see (an untuned conversion's), where a finer level takes over: drop all of it, remove the flow's share (flow), or keep it as the official sampler does (drop | flow | keep).")
        var unseenNoise: UnseenNoise = .drop
        @Option(help: "Objective when the checkpoint does not record one: velocity | epsilon.") var objective: String?
        @Flag(help: "Print a JSON report on stdout.") var json = false
        @OptionGroup var modelOptions: ModelOptions

        func validate() throws {
            if count < 2 { throw ValidationError("--count needs at least 2 samples") }
            if steps < 2 { throw ValidationError("--steps needs at least 2 time points") }
            if ODEMethod(name: sampler) == nil { throw ValidationError("--sampler must be euler or heun") }
            if batch < 1 { throw ValidationError("--batch must be positive") }
            if let objective, Objective(userName: objective) == nil { throw ValidationError("--objective must be velocity or epsilon") }
        }

        func run() throws {
            CLI.run("ppsample eval", threads: modelOptions.threads) {
                let classifierPath = classifier ?? ((data as NSString).deletingLastPathComponent as NSString).appendingPathComponent("digits-classifier.safetensors")
                var job = EvalJob(input: input, dataPath: data, classifierPath: classifierPath)
                job.sampling.count = count
                job.sampling.points = steps
                job.sampling.method = ODEMethod(name: sampler)!
                job.sampling.batch = batch
                job.sampling.unseenNoise = unseenNoise
                let scales = try CLI.numbers(cfgScales, flag: "--cfg-scales", as: Float.self)
                job.sampling.guidance = scales.allSatisfy { $0 == 1 } ? nil : Guidance(scales: scales, channels: cfgChannels)
                job.seeds = try CLI.numbers(seeds, flag: "--seeds", as: UInt64.self)
                if job.seeds.isEmpty { throw PPError(.usage, entry: "--seeds", "give at least one seed") }
                job.thresholds = try thresholds.map { try CLI.numbers($0, flag: "--thresholds", as: Double.self) }
                job.objective = objective.flatMap(Objective.init(userName:))
                job.heads = modelOptions.heads
                job.weights = modelOptions.weights
                job.verifyHashes = !modelOptions.noVerifyHash
                var bars: [String: PPCLI.Progress] = [:]
                let report = try job.run { label, done, total in
                    let bar = bars[label] ?? PPCLI.Progress("sampling \(label)", total: total, enabled: !json || CLI.isTerminal)
                    bars[label] = bar
                    bar.update(done)
                }
                if json {
                    try CLI.writeJSON(Self.json(report, job: job, cfgScales: scales), to: "-")
                } else {
                    print(Self.text(report, job: job))
                }
                return 0
            }
        }

        static func text(_ r: EvalJob.Report, job: EvalJob) -> String {
            var lines: [String] = []
            let floor = r.classifierMetadata.first { $0.0 == "real_vs_real_fd" }?.1 ?? "?"
            let accuracy = r.classifierMetadata.first { $0.0 == "held_out_accuracy" }?.1 ?? "?"
            lines.append("\(job.input): \(r.kind), against \(r.realCount) real rows of \(job.dataPath) (classifier held-out accuracy \(accuracy), real-vs-real FD \(floor))")
            if let t = r.thresholds { lines.append("thresholds \(t.map { Format.fixed($0, 3) }.joined(separator: ","))") }
            if let d = r.unseenDimensions { lines.append("unseen noise: \(job.sampling.unseenNoise.rawValue) where a finer level takes over (directions per patch each level cannot see: \(d.map(String.init).joined(separator: ", ")))") }
            for run in r.runs {
                var line = run.seed.map { "seed \($0): " } ?? ""
                line += "FD \(Format.fixed(run.scores.frechetDistance, 3))"
                line += "  accuracy " + (run.scores.accuracy.map { Format.fixed($0, 3) } ?? "n/a (unconditional)")
                line += "  (\(run.scores.count) samples"
                if let c = run.cost {
                    line += "; per image: \(Format.fixed(c.evaluationsPerImage, 1)) evaluations, \(Format.fixed(c.flopsPerImage / 1e9, 3)) GFLOP, \(Format.fixed(c.secondsPerImage * 1000, 2)) ms"
                }
                lines.append(line + ")")
            }
            if r.runs.count > 1 {
                let fd = r.fdValues, acc = r.accuracyValues
                var line = "mean over \(r.runs.count) seeds: FD \(Format.fixed(mean(fd), 3)) (\(Format.fixed(fd.min()!, 3))..\(Format.fixed(fd.max()!, 3)))"
                if !acc.isEmpty { line += "  accuracy \(Format.fixed(mean(acc), 3)) (\(Format.fixed(acc.min()!, 3))..\(Format.fixed(acc.max()!, 3)))" }
                lines.append(line)
            }
            return lines.joined(separator: "\n")
        }

        static func mean(_ v: [Double]) -> Double { v.reduce(0, +) / Double(max(v.count, 1)) }

        static func json(_ r: EvalJob.Report, job: EvalJob, cfgScales: [Float]) -> JSONValue {
            var fields: [(String, JSONValue)] = [
                ("input", .string(job.input)), ("kind", .string(r.kind)), ("data", .string(job.dataPath)),
                ("real_rows", .int(Int64(r.realCount))), ("classifier", .string(job.classifierPath)),
                ("classifier_facts", .object(JSONObject(r.classifierMetadata.map { ($0.0, JSONValue.string($0.1)) }))),
            ]
            if r.kind == "model" {
                fields.append(("settings", .object(JSONObject([
                    ("count", .int(Int64(job.sampling.count))), ("time_points", .int(Int64(job.sampling.points))),
                    ("sampler", .string(job.sampling.method.rawValue)), ("cfg_scales", .array(cfgScales.map { .double(Double($0)) })),
                    ("levels", .int(Int64(r.levels ?? 1))), ("thresholds", .array((r.thresholds ?? []).map { .double($0) })),
                    ("unseen_noise", .string(job.sampling.unseenNoise.rawValue)),
                    ("unseen_dimensions", r.unseenDimensions.map { .array($0.map { .int(Int64($0)) }) } ?? .null),
                ]))))
            }
            fields.append(("runs", .array(r.runs.map { run in
                var o: [(String, JSONValue)] = []
                if let s = run.seed { o.append(("seed", .int(Int64(s)))) }
                o.append(("samples", .int(Int64(run.scores.count))))
                o.append(("fd", .double(run.scores.frechetDistance)))
                o.append(("accuracy", run.scores.accuracy.map { .double($0) } ?? .null))
                if let c = run.cost {
                    o.append(("evaluations_per_image", .double(c.evaluationsPerImage)))
                    o.append(("flops_per_image", .double(c.flopsPerImage)))
                    o.append(("seconds_per_image", .double(c.secondsPerImage)))
                }
                return .object(JSONObject(o))
            })))
            let fd = r.fdValues, acc = r.accuracyValues
            fields.append(("fd_mean", .double(mean(fd))))
            fields.append(("fd_min", .double(fd.min() ?? 0)))
            fields.append(("fd_max", .double(fd.max() ?? 0)))
            fields.append(("accuracy_mean", acc.isEmpty ? .null : .double(mean(acc))))
            fields.append(("accuracy_min", acc.isEmpty ? .null : .double(acc.min()!)))
            fields.append(("accuracy_max", acc.isEmpty ? .null : .double(acc.max()!)))
            return .object(JSONObject(fields))
        }
    }

    /// Trains the digits classifier that `eval` measures with, reproducibly.
    struct TrainClassifier: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "train-classifier",
            abstract: "Train the small classifier whose features the Fréchet distance of `eval` uses (one thread: the same file bit for bit).",
            discussion: """
                Example (the shipped classifier):
                  ppsample train-classifier --data examples/digits/digits.safetensors --out examples/digits/digits-classifier.safetensors --force
                """)

        @Option(help: "Latents [N,C,H,W] and labels [N].") var data: String
        @Option(help: "The classifier file to write.") var out: String
        @Option(help: "Seed of the initialization, the held-out split and the batches.") var seed: UInt64 = 0
        @Option(help: "Epochs.") var epochs = 40
        @Flag(help: "Replace OUT if it exists (the shipped classifier, when reproducing it).") var force = false

        func run() throws {
            CLI.run("ppsample train-classifier") {
                try OutputTarget.check(out, kind: .file, force: force)
                var options = ClassifierTrainingOptions()
                options.seed = seed
                options.epochs = epochs
                let latents = try LabeledLatents.read(data)
                let (model, report) = try ClassifierTraining.train(data: latents, dataSHA256: try SHA256.hashFile(data), options: options) {
                    CLI.printError($0)
                }
                try model.write(to: out)
                print("wrote \(out): held-out accuracy \(Format.fixed(report.heldOutAccuracy, 4)) on \(report.heldOutCount) rows "
                    + "(train \(Format.fixed(report.trainAccuracy, 4)) on \(report.trainCount)), real-vs-real FD \(Format.fixed(report.realVsRealFD, 4)), "
                    + "\(Format.fixed(report.seconds, 2)) s; sha256 \(try SHA256.hashFile(out))")
                return 0
            }
        }
    }
}
