import ArgumentParser
import PPBench
import PPCheckpoint
import PPCLI
import PPFileIO
import PPJSON
import PPKernels
import PPModel
import PPModelIO
import PPTensor
import PPTrain

struct PPFinetuneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ppfinetune",
        abstract: "Fine-tune a PPFlow model from a recipe (recipes/*.json), check a recipe, or run one gradient-parity step.",
        discussion: """
            Examples:
              ppfinetune --recipe recipes/digits-ppf2.json [--out DIR] [--steps N] [--seed S] [--threads T]
              ppfinetune --recipe recipes/digits-ppf2.json --resume RUN_DIR
              ppfinetune validate --recipe recipes/digits-ppf2.json
              ppfinetune step MODEL --batch BATCH.safetensors --lr 1e-3 --ema-decay 0.99 --out OUT.safetensors

            Recipes are documented field by field in docs/RECIPES.md. Exit code 1 means training stopped on a non-finite loss.

            """ + "\n" + PPError.exitCodeSummary,
        subcommands: [Train.self, Validate.self, Encode.self, Step.self, BenchStep.self],
        defaultSubcommand: Train.self)
}

extension AttentionScope: ExpressibleByArgument {
    public init?(argument: String) {
        switch argument {
        case "per-sample": self = .perSample
        case "official": self = .officialPacking
        default: return nil
        }
    }
    public static var allValueStrings: [String] { ["per-sample", "official"] }
}

extension PPFinetuneCommand {
    struct Step: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "One training step on a given batch (no label dropout), written as loss, grads, weights after AdamW and EMA.",
            discussion: """
                BATCH holds x1 [B,C,S,S] (data), x0 [B,C,S,S] (noise), t [B] (0 = noise, 1 = data), y [B] (labels). \
                OUT gets loss [1], per_sample_loss [B], level [B] (the pyramid level of each sample), grad.<key>, after.<key>, ema.<key>, as the official \
                fixtures ref_ppf{2,3}_train_step.safetensors.

                --attention official reproduces the official trainer's packing of coarse samples (they attend to \
                each other there; see docs/RECIPES.md).
                """)

        @Argument(help: "The model (any checkpoint the toolkit reads).") var model: String
        @Option(help: "The batch (safetensors with x1, x0, t, y).") var batch: String
        @Option(help: "AdamW learning rate.") var lr: Float
        @Option(name: .customLong("ema-decay"), help: "EMA decay.") var emaDecay: Float
        @Option(help: "The output safetensors file.") var out: String
        @Flag(help: "Replace OUT if it exists.") var force = false
        @Option(name: .customLong("weight-decay"), help: "AdamW weight decay.") var weightDecay: Float = 0
        @Option(help: "per-sample (correct, default) or official (the official trainer's packing).") var attention: AttentionScope = .perSample
        @Option(help: "Attention heads when no metadata says.") var heads: Int?
        @Option(help: "Threads for the kernels.") var threads: Int?

        func run() throws {
            CLI.run("ppfinetune step", threads: threads) {
                try OutputTarget.check(out, kind: .file, force: force)
                let loaded = try ModelLoader.load(model, heads: heads)
                let tensors = try TensorFiles.read(path: batch)
                func need(_ name: String) throws -> TensorView {
                    guard let t = tensors[name] else { throw PPError.badInput(batch, entry: name, "missing (the batch needs x1, x0, t, y)") }
                    return t
                }
                let result = try TrainStep.run(parameters: loaded.parameters(), x1: try need("x1").floats(), x0: try need("x0").floats(),
                                               t: try need("t").floats(), y: try need("y").int64s().map { Int($0) },
                                               optimizer: AdamWOptions(learningRate: lr, weightDecay: weightDecay), emaDecay: emaDecay,
                                               attention: attention)
                try TrainStep.write(result, to: out)
                print("loss \(result.loss), gradient norm \(Format.fixed(result.gradientNorm, 6)); wrote \(out)")
                return 0
            }
        }
    }
}

/// The recipe plus the command-line overrides every recipe command accepts.
struct RecipeOptions: ParsableArguments {
    @Option(help: "The recipe (recipes/*.json; fields in docs/RECIPES.md).") var recipe: String
    @Option(help: "Run folder (overrides the recipe's output).") var out: String?
    @Option(help: "Optimizer steps (overrides steps).") var steps: Int?
    @Option(help: "Seed (overrides seed).") var seed: Int?
    @Option(help: "Threads for the kernels (overrides threads).") var threads: Int?
    @Option(name: .customLong("set"), parsing: .singleValue, help: "Override any field: --set learning_rate.peak=3e-4 (value as JSON, else a string).")
    var assignments: [String] = []
    @Flag(name: .customLong("no-verify-hash"), help: "Do not check native checkpoints (the start model, resumed checkpoints) against the sha256 in their config.json.")
    var noVerifyHash = false

    var verifyHashes: Bool { !noVerifyHash }

    func load() throws -> Recipe {
        var overrides: [(String, String)] = []
        for a in assignments {
            guard let eq = a.firstIndex(of: "=") else { throw PPError(.usage, entry: "--set", "'\(a)': expected key=value") }
            overrides.append((String(a[..<eq]), String(a[a.index(after: eq)...])))
        }
        if let out { overrides.append(("output", JSON.serialize(.string(out), pretty: false))) }
        if let steps { overrides.append(("steps", String(steps))) }
        if let seed { overrides.append(("seed", String(seed))) }
        if let threads { overrides.append(("threads", String(threads))) }
        return try Recipe.load(self.recipe, overrides: overrides)
    }
}

func levelList(_ values: [Double]) -> String { values.map { Format.fixed($0, 4) }.joined(separator: " / ") }

extension PPFinetuneCommand {
    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "train", abstract: "Fine-tune from a recipe (the default command).")
        @OptionGroup var options: RecipeOptions
        @Option(help: "Continue the run in this folder from its newest checkpoint (same recipe).") var resume: String?
        @Flag(help: "Start over in a folder that holds an earlier run (only what the toolkit wrote is removed; a folder holding other files is refused).") var force = false

        func validate() throws {
            if force && resume != nil { throw ValidationError("--force starts a run over; --resume continues one: give one of them") }
        }

        func run() throws {
            CLI.run("ppfinetune") {
                let recipe = try options.load()
                return try Parallel.withThreads(recipe.threads) { try train(recipe) }
            }
        }

        /// The run itself, inside the recipe's thread count.
        func train(_ recipe: Recipe) throws -> Int32 {
            let folder = resume ?? recipe.output
            try FineTuneRun.prepareFolder(folder, recipe: recipe, resume: resume != nil, force: force)
            let started = CLI.now()
            let job = try FineTuneRun(recipe: recipe, folder: folder, resume: resume != nil, verifyHashes: options.verifyHashes) { print($0) }
            if let from = job.resumedFrom { print("resuming from \(from) at step \(job.step)") }
            print("training \(recipe.name): \(job.train.count) training / \(job.validation.count) validation samples, \(recipe.steps) steps of batch \(recipe.batchSize), levels \(recipe.levelCounts()) per batch, \(Parallel.threads) thread(s)")
            let progress = Progress("step", total: recipe.steps, plainEvery: 5)
            let firstStep = job.step, startTime = CLI.now()
            try job.run(onStep: { r in
                let rate = Double(r.step - firstStep) / max(1e-9, CLI.now() - startTime)
                let levels = r.levelLoss.map { $0.isNaN ? "-" : Format.fixed(Double($0), 4) }.joined(separator: "/")
                progress.update(r.step, detail: "loss \(Format.fixed(Double(r.loss), 4)) (levels \(levels)) \(Format.fixed(rate, 2)) steps/s")
            }, onValidation: { v in
                let line = "validation at step \(v.step): loss per level \(levelList(v.levelLoss))"
                if CLI.isTerminal { CLI.printError("\r\u{1B}[K" + line) } else { print(line) }
            })
            let summary = try job.finish(seconds: CLI.now() - started)
            print("done: \(summary.steps) steps in \(Format.fixed(summary.seconds, 1)) s")
            if let before = summary.before, let after = summary.after {
                print("validation loss per level: before \(levelList(before)), after \(levelList(after))")
            }
            print("checkpoint:  \(summary.finalCheckpoint)")
            print("metrics:     \(summary.metrics)")
            print("loss curves: \(summary.pictures.joined(separator: " "))")
            return 0
        }
    }

    struct Validate: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check a recipe, its model and data, print the plan and a time estimate; trains nothing.")
        @OptionGroup var options: RecipeOptions
        @Option(help: "Steps to time for the estimate (on a throwaway copy).") var timedSteps = 3

        func run() throws {
            CLI.run("ppfinetune validate") {
                let recipe = try options.load()
                let plan = try Parallel.withThreads(recipe.threads) {
                    try FineTunePlan.make(recipe: recipe, timedSteps: timedSteps, verifyHashes: options.verifyHashes) { print($0) }
                }
                plan.lines().forEach { print($0) }
                return 0
            }
        }
    }
}

extension PPFinetuneCommand {
    struct BenchStep: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "bench-step",
            abstract: "Benchmark: one training step (forward, backward, AdamW) of PPFlow-B-2 on 32x32 latents, batch 8 (4 coarse + 4 full), random weights, next to the sgemm rate and with peak memory.")

        @Option(help: "Threads.") var threads = 2
        @Option(help: "Timed steps (after one warm-up step).") var steps = 2
        @Option(help: "Side of the square sgemm.") var sgemmSize = 2048

        func run() throws {
            CLI.run("ppfinetune bench-step") {
                print(try TrainBenchmark.run(threads: threads, steps: steps, sgemmSize: sgemmSize))
                return 0
            }
        }
    }
}

BLASCore.useCPUKernels()
PPFinetuneCommand.main()
