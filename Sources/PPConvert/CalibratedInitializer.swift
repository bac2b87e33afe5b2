import PPCheckpoint
import PPFileIO
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
        /// Calibration images; nil: 2048, but at most 90 % of the data (the rest is held out for verification).
        public var samples: Int? = nil
        public var seed: UInt64 = 0
        /// λ = ridgeFactor × rows (the number of token rows in the fit).
        public var ridgeFactor = 1e-3
        public var batch = 32
        /// > 0: before the fit, the coarse patch embeddings also pass the within-group detail that the
        /// repeat rule averages away (see `injectDetail`), with this gain relative to the source's.
        public var detailScale = 0.0
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
        var fits: [LevelFit] = []

        if options.detailScale > 0 {
            for level in 0..<(config.levels - 1) {
                try injectDetail(into: &tensors, config: config, level: level, scale: options.detailScale, seed: options.seed)
            }
        }
        let model = Model(weights: try ModelWeights(config: config, tensors: tensors))
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

    /// Adds to the coarse patch embedding of `level` (`proj1` [D, 4C, p, p] or `proj2` [D, 2C, p, p]) the
    /// detail the repeat rule discards: for every (c, u, v) the zero-mean combinations of the f grouped
    /// sub-pixels (Haar patterns, orthonormal), each sent along its own direction of a seeded orthonormal
    /// set in the embedding, with gain `scale` x the source projection's RMS column norm. The coarse model
    /// then carries the fine detail of x_t to its final features, where the ridge fit can read it.
    public static func injectDetail(into tensors: inout TensorDict, config: ModelConfig, level: Int, scale: Double, seed: UInt64) throws {
        let name = config.patchEmbedName(level: level) + ".weight"
        guard let view = tensors[name] else { throw PPError.badInput(nil, entry: name, "missing from the converted model") }
        let d = config.hiddenSize, c = config.inChannels, p = config.patchSize
        let f = config.levelLayouts[level].channelFactor
        let inputs = f * c * p * p                                   // columns of the flattened weight
        var weight = view.floats()                                   // [D, f·C·p·p]
        // The source's gain: RMS column norm of the repeat-rule weight times f (its columns are W / f).
        var sumSquares = 0.0
        for w in weight { sumSquares += Double(w) * Double(w) }
        let gain = scale * Double(f) * (sumSquares / Double(inputs)).squareRoot()
        // Zero-mean patterns over the f grouped sub-pixels, orthonormal.
        let patterns: [[Double]] = f == 4 ? [[0.5, 0.5, -0.5, -0.5], [0.5, -0.5, 0.5, -0.5], [0.5, -0.5, -0.5, 0.5]]
                                          : [[(0.5 as Double).squareRoot(), -(0.5 as Double).squareRoot()]]
        let count = patterns.count * c * p * p
        guard count <= d else { throw PPError(.usage, entry: name, "the embedding (\(d)) is narrower than the detail (\(count))") }
        // Seeded orthonormal directions [count][D] (Gram-Schmidt on Gaussians).
        var rng = SeededRandom(seed: seed &+ 0xDE7A11 &+ UInt64(level))
        var directions: [[Double]] = []
        while directions.count < count {
            var v = (0..<d).map { _ in rng.normal() }
            for u in directions {
                let dot = zip(u, v).reduce(0) { $0 + $1.0 * $1.1 }
                for i in 0..<d { v[i] -= dot * u[i] }
            }
            let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
            if norm > 1e-6 { directions.append(v.map { $0 / norm }) }
        }
        var j = 0
        for ch in 0..<c { for u in 0..<p { for v in 0..<p { for pattern in patterns {
            for (k, a) in pattern.enumerated() {
                let column = ((ch * f + k) * p + u) * p + v
                for row in 0..<d { weight[row * inputs + column] += Float(gain * a * directions[j][row]) }
            }
            j += 1
        } } } }
        tensors[name] = TensorView(floats: weight, shape: view.shape, dtype: view.dtype)
    }

    /// The data rows that calibrate: the first `samples` of a seeded permutation (by default 2048, and at
    /// most 90 % of the data when it has 10 or more rows, so that some stay held out).
    public static func calibrationSamples(count: Int, options: Options) -> [Int] {
        var rng = SeededRandom(seed: options.seed)
        var order = Array(0..<count)
        for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, rng.below(i + 1)) }
        let cap = count >= 10 ? count - count / 10 : count
        return Array(order.prefix(options.samples.map { min($0, count) } ?? min(2048, cap)))
    }

    /// The data rows the calibration did not use, ascending: verification inputs that are really held out.
    public static func heldOutSamples(count: Int, options: Options) -> [Int] {
        let used = Set(calibrationSamples(count: count, options: options))
        return (0..<count).filter { !used.contains($0) }
    }

    /// The held-out rows of `dataPath` when `checkpoint` records a calibration on that very file (same
    /// sha256) in its provenance; nil otherwise (then every row is fair game).
    public static func heldOutSamples(recordedIn checkpoint: LoadedCheckpoint, dataPath: String, count: Int) throws -> [Int]? {
        guard let record = checkpoint.nativeConfig?["provenance"]?["initializer"],
              record["name"]?.stringValue == "calibrated",
              let recordedSHA = record["data_sha256"]?.stringValue,
              let samples = record["calibration_samples"]?.intValue, let seed = record["seed"]?.intValue else { return nil }
        guard try NativeCheckpoint.sha256(ofFile: dataPath) == recordedSHA else { return nil }
        var options = Options(dataPath: dataPath)
        options.samples = Int(samples)
        options.seed = UInt64(bitPattern: seed)
        return heldOutSamples(count: count, options: options)
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
