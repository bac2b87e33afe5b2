import PPCheckpoint
import PPJSON
import PPKernels
import PPModel
import PPTensor

/// The calibrated initializer: the repeat rule, then each coarse level's output projection refitted so
/// that, on calibration inputs, the converted model's prediction at that level matches the source model's
/// velocity rearranged into the level's layout (ridge regression on the final layer's modulated
/// features, solved in double precision from accumulated normal equations). Only the prediction rows of
/// `final_layer.linear1` / `linear2` change; the sigma rows and every other tensor stay as the repeat
/// rule made them, so the finest level still reproduces the source exactly.
public enum CalibratedInitializer {
    public struct Options: Sendable {
        public var dataPath: String
        public var samples = 2048
        public var seed: UInt64 = 0
        /// λ = ridgeFactor × rows (the number of token rows in the fit).
        public var ridgeFactor = 1e-3
        public var batch = 32
        public init(dataPath: String) { self.dataPath = dataPath }
    }

    public struct LevelFit: Sendable {
        public var level: Int
        public var layout: String
        public var tensor: String
        public var rows: Int
        public var lambda: Double
        /// ‖Y − A W‖ / ‖Y‖ on the calibration rows: with the repeat rule's rows, and after the fit.
        public var relativeResidualRepeat: Double
        public var relativeResidualFitted: Double
    }

    public struct Report: Sendable {
        public var fits: [LevelFit]
        public var dataSHA256: String
        public var samplesUsed: Int

        public var json: JSONValue {
            .object(JSONObject([
                ("data_sha256", .string(dataSHA256)),
                ("samples", .int(Int64(samplesUsed))),
                ("levels", .array(fits.map { f in
                    .object(JSONObject([
                        ("level", .int(Int64(f.level))), ("layout", .string(f.layout)), ("tensor", .string(f.tensor)),
                        ("rows", .int(Int64(f.rows))), ("lambda", .double(f.lambda)),
                        ("relative_residual_repeat", .double(f.relativeResidualRepeat)),
                        ("relative_residual_fitted", .double(f.relativeResidualFitted)),
                    ]))
                })),
            ]))
        }
    }

    /// Refits `tensors` (a repeat-rule PPFlow model, official key names) in place.
    public static func apply(to tensors: inout TensorDict, config: ModelConfig, source: Model, options: Options,
                             progress: ((String, Int, Int) -> Void)? = nil) throws -> Report {
        guard source.config.levels == 1 else { throw PPError(.usage, "the calibration source must be a DiT/SiT model") }
        let data = try VerificationData.load(options.dataPath, channels: config.inChannels, size: config.inputSize)
        if let bad = data.labels.first(where: { $0 < 0 || Int($0) > config.numClasses }) {
            throw PPError.badInput(options.dataPath, entry: "labels", "label \(bad) outside 0...\(config.numClasses)")
        }
        guard data.count > 0 else { throw PPError.badInput(options.dataPath, entry: "latents", "no samples") }
        let dataSHA = try NativeCheckpoint.sha256(ofFile: options.dataPath)

        let d = config.hiddenSize, c = config.inChannels
        let used = calibrationSamples(count: data.count, options: options)
        let parameters = try ModelParameters(config: config, tensors: tensors)
        let model = Model(config: config, parameters: parameters)
        var fits: [LevelFit] = []

        for level in 0..<(config.levels - 1) {
            let layout = config.levelLayouts[level]
            let factor = layout.channelFactor
            let levelChannels = c * factor                    // prediction channels in the level layout
            let predictionWidth = config.patchSize * config.patchSize * levelChannels   // K: entries per token
            var ridge = RidgeRegression(features: d, outputs: predictionWidth)
            forEachBatch(level: level, config: config, model: model, source: source, data: data, used: used, options: options) { features, targets, rows, done in
                features.withUnsafeBufferPointer { f in targets.withUnsafeBufferPointer { tg in
                    ridge.accumulate(x: f.baseAddress!, y: tg.baseAddress!, count: rows)
                } }
                progress?("calibrating level \(level)", done, used.count)
            }
            // Current (repeat-rule) prediction rows as a [D+1, K] solution, for the "before" residual.
            let name = config.finalLinearName(level: level)
            guard let weightView = tensors[name + ".weight"], let biasView = tensors[name + ".bias"] else {
                throw PPError.badInput(nil, entry: name, "missing from the converted model")
            }
            var weight = weightView.floats()                     // [p·p·Cout·f, D]
            var bias = biasView.floats()                         // [p·p·Cout·f]
            let headChannels = config.outChannels * factor       // channels per sub-pixel in the head
            func headRow(_ k: Int) -> Int { Self.headRow(k, levelChannels: levelChannels, headChannels: headChannels) }
            var current = [Double](repeating: 0, count: (d + 1) * predictionWidth)
            for k in 0..<predictionWidth {
                for i in 0..<d { current[i * predictionWidth + k] = Double(weight[headRow(k) * d + i]) }
                current[d * predictionWidth + k] = Double(bias[headRow(k)])
            }
            let lambda = options.ridgeFactor * Double(ridge.rows)
            guard let solution = ridge.solve(lambda: lambda) else {
                throw PPError(.mismatch, entry: name, "the calibration system is singular; use more samples or a larger --ridge")
            }
            let total = max(ridge.totalTargetSquares, 1e-30)
            for k in 0..<predictionWidth {
                for i in 0..<d { weight[headRow(k) * d + i] = Float(solution[i * predictionWidth + k]) }
                bias[headRow(k)] = Float(solution[d * predictionWidth + k])
            }
            tensors[name + ".weight"] = TensorView(floats: weight, shape: weightView.shape, dtype: weightView.dtype)
            tensors[name + ".bias"] = TensorView(floats: bias, shape: biasView.shape, dtype: biasView.dtype)
            fits.append(LevelFit(level: level, layout: layout == .square ? "down_square" : "down_w", tensor: name, rows: ridge.rows,
                                 lambda: lambda,
                                 relativeResidualRepeat: (ridge.residualSquares(current) / total).squareRoot(),
                                 relativeResidualFitted: (ridge.residualSquares(solution) / total).squareRoot()))
        }
        return Report(fits: fits, dataSHA256: dataSHA, samplesUsed: used.count)
    }

    /// The data rows that calibrate: the first `samples` of a seeded permutation.
    public static func calibrationSamples(count: Int, options: Options) -> [Int] {
        var rng = SeededRandom(seed: options.seed)
        var order = Array(0..<count)
        for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, rng.below(i + 1)) }
        return Array(order.prefix(min(options.samples, count)))
    }

    /// Runs the calibration inputs of `level` in batches and hands over, per batch, the features
    /// [rows, D] of the converted model's final layer and the regression targets [rows, K] (the source's
    /// prediction in the level's layout, patchified like the output head: entry (u·p + v)·C·f + ch).
    /// Deterministic for the options' seed. Public so tests can rebuild the normal equations.
    public static func forEachBatch(level: Int, config: ModelConfig, model: Model, source: Model,
                                    data: (latents: [Float], labels: [Int32], count: Int), used: [Int], options: Options,
                                    body: (_ features: [Float], _ targets: [Float], _ rows: Int, _ done: Int) -> Void) {
        let c = config.inChannels, s = config.inputSize, p = config.patchSize
        let perSample = c * s * s
        let layout = config.levelLayouts[level]
        let levelChannels = c * layout.channelFactor
        let grid = config.grid(level: level, latentSize: s)
        let tokens = grid.rows * grid.cols
        let predictionWidth = p * p * levelChannels
        let band = Verification.bands(thresholds: config.thresholds)[level]
        var rng = SeededRandom(seed: options.seed &+ 0x5EED &+ UInt64(level))
        var start = 0
        while start < used.count {
            let members = Array(used[start ..< min(start + options.batch, used.count)])
            let b = members.count
            var x = [Float](repeating: 0, count: b * perSample)          // [b, C, S, S]  x_t
            var t = [Float](repeating: 0, count: b)                     // [b]
            var y = [Int32](repeating: Int32(config.numClasses), count: b)
            for (j, index) in members.enumerated() {
                // Strictly inside the band (lower end excluded): the level's own t values.
                let tj = band.lowerBound + (band.upperBound - band.lowerBound) * (1 - rng.uniform())
                t[j] = Float(tj)
                if !data.labels.isEmpty { y[j] = data.labels[index] }
                for i in 0..<perSample {
                    let x0 = Float(rng.normal())
                    x[j * perSample + i] = Float(tj) * data.latents[index * perSample + i] + Float(1 - tj) * x0
                }
            }
            let features = model.finalFeatures(x: x, t: t, y: y, batch: b, level: level)   // [b·T, D]
            let sourceOut = source.forward(x: x, t: t, y: y, batch: b)                      // [b, Cout, S, S]
            var prediction = [Float](repeating: 0, count: b * perSample)                   // [b, C, S, S]
            let cout = source.config.outChannels
            for j in 0..<b {
                for i in 0..<perSample { prediction[j * perSample + i] = sourceOut[j * cout * s * s + i] }
            }
            var levelImage = [Float](repeating: 0, count: b * perSample)                   // [b, C·f, H_l, W_l]
            prediction.withUnsafeBufferPointer { src in levelImage.withUnsafeMutableBufferPointer { dst in
                switch layout {
                case .square: Kernels.downSquare(src.baseAddress!, dst.baseAddress!, batch: b, channels: c, height: s, width: s)
                case .width: Kernels.downW(src.baseAddress!, dst.baseAddress!, batch: b, channels: c, height: s, width: s)
                case .full: dst.baseAddress!.update(from: src.baseAddress!, count: src.count)
                }
            } }
            let levelHeight = grid.rows * p, levelWidth = grid.cols * p
            var targets = [Float](repeating: 0, count: b * tokens * predictionWidth)      // [b·T, p·p·C·f]
            for j in 0..<b {
                for gi in 0..<grid.rows { for gj in 0..<grid.cols {
                    let row = (j * tokens + gi * grid.cols + gj) * predictionWidth
                    for u in 0..<p { for v in 0..<p { for ch in 0..<levelChannels {
                        let pixel = ((j * levelChannels + ch) * levelHeight + gi * p + u) * levelWidth + gj * p + v
                        targets[row + (u * p + v) * levelChannels + ch] = levelImage[pixel]
                    } } }
                } }
            }
            start += b
            body(features, targets, b * tokens, start)
        }
    }

    /// Output-head row of prediction entry k ((u·p + v)·C·f + ch) in a head with `headChannels` = Cout·f
    /// channels per sub-pixel: the prediction channels come first in each sub-pixel's group.
    public static func headRow(_ k: Int, levelChannels: Int, headChannels: Int) -> Int {
        (k / levelChannels) * headChannels + k % levelChannels
    }
}
