import ArgumentParser
import PPCheckpoint
import PPCLI
import PPJSON
import PPKernels
import PPModel
import PPSafetensors
import PPTensor

struct PPSampleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ppsample",
        abstract: "Run DiT/SiT/PPFlow models: the forward pass (a parity tool) and ODE sampling.",
        subcommands: [Forward.self])
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

struct ModelOptions: ParsableArguments {
    @Option(help: "Number of attention heads when no metadata says.") var heads: Int?
    @Option(help: "Which state dict of a train checkpoint: ema or model.") var weights: WeightsChoice?
    @Option(help: "Threads for BLAS and the kernels' own loops (default: all cores).") var threads: Int?
    @Flag(name: .customLong("no-verify-hash"), help: "Do not check native checkpoints against the sha256 in their config.json.")
    var noVerifyHash = false

    func load(_ path: String) throws -> LoadedModel {
        if let threads { Parallel.setThreads(threads) }
        CheckpointLoader.verifyNativeHashes = !noVerifyHash
        return try ModelLoader.load(path, weights: weights, heads: heads)
    }
}

extension PPSampleCommand {
    /// The parity tool: run the network on given inputs and write what it returns.
    struct Forward: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run one forward pass on inputs from a safetensors file (a parity tool against another implementation).",
            discussion: """
                IN holds x [B,C,H,W] (float), t [B] (the model's own time: flow t in [0,1] for SiT/PPFlow, DDPM
                steps for DiT) and y [B] (int64 labels; K = the null class). OUT receives `out` [B,Cout,H,W], the
                whole network output (for learn_sigma models the first C channels are the prediction, the rest
                the sigma half), and `prediction` [B,C,H,W]. PPFlow models pick each sample's level from its t
                (--level forces one). With --cfg-scales the official guided forward is run: the given batch is
                the conditional half, guidance mixes `--cfg-channels 3` (the official code, for bit parity) or
                `all` channels, and a level whose scale is 1 skips its unconditional pass.
                Example:
                  ppsample forward ppf2.pt --heads 4 --inputs in.safetensors --out out.safetensors --cfg-scales 1,4
                """)

        @Argument(help: "The model: any checkpoint ppconvert reads.") var model: String
        @Option(help: "Inputs: x, t, y.") var inputs: String
        @Option(help: "Output safetensors file.") var out: String
        @Option(help: "Guidance scale per level (one value = every level), e.g. 1,4.") var cfgScales: String?
        @Option(help: "Guided channels: 3 (official) or all.") var cfgChannels: GuidanceChannels = .all
        @Option(help: "Force this pyramid level for every sample.") var level: Int?
        @OptionGroup var modelOptions: ModelOptions

        func run() throws {
            CLI.run("ppsample forward") {
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
                    let scales = try cfgScales.split(separator: ",").map { part -> Float in
                        guard let v = Float(part) else { throw PPError(.usage, entry: "--cfg-scales", "'\(cfgScales)' is not a list of numbers") }
                        return v
                    }
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
                try SafetensorsWriter.write(result, metadata: [("model", FileOutput.baseName(of: model)), ("evaluations", "\(net.forwardCount)")], to: out)
                print("wrote \(out): out \([batch, cout, side, side]), prediction \([batch, c, side, side]); \(net.forwardCount) sample evaluations")
                return 0
            }
        }
    }
}

PPSampleCommand.main()
