import Foundation
import PPFileIO
import PPKernels
import PPSafetensors
import PPTensor
import PPTrain

/// Latents [N, C, H, W] with integer labels [N]: a data file (`latents`, `labels`) or a samples file
/// written by `ppsample` (`samples`, `labels`).
public struct LabeledLatents {
    /// [N, C, H, W]
    public var values: [Float]
    /// [N, C, H, W]
    public var shape: [Int]
    /// [N]
    public var labels: [Int]
    public var count: Int { shape[0] }
    public var itemSize: Int { shape.dropFirst().reduce(1, *) }

    public init(values: [Float], shape: [Int], labels: [Int]) {
        self.values = values; self.shape = shape; self.labels = labels
    }

    public static func read(_ path: String) throws -> LabeledLatents {
        let file = try SafetensorsFile.open(path)
        let name = file.tensors["latents"] != nil ? "latents" : "samples"
        guard let x = file.tensors[name] else {
            throw PPError.badInput(path, "no `latents` or `samples` tensor (need latents [N,C,H,W] and labels [N], as in a data file or ppsample's output)")
        }
        guard x.rank == 4, x.dtype.isFloatingPoint, x.shape.allSatisfy({ $0 > 0 }) else {
            throw PPError.badInput(path, entry: name, "\(x.dtype.shortName) \(x.shape) is not a float [N,C,H,W] tensor")
        }
        guard let y = file.tensors["labels"] else { throw PPError.badInput(path, entry: "labels", "missing (need labels [N])") }
        guard y.shape == [x.shape[0]], !y.dtype.isFloatingPoint else {
            throw PPError.badInput(path, entry: "labels", "\(y.dtype.shortName) \(y.shape) is not an integer [\(x.shape[0])] tensor")
        }
        return LabeledLatents(values: x.floats(), shape: x.shape, labels: y.int64s().map { Int(clamping: $0) })
    }

    /// The rows at `indices`.
    public func subset(_ indices: [Int]) -> LabeledLatents {
        let size = itemSize
        var values = [Float](); values.reserveCapacity(indices.count * size)
        for i in indices { values += self.values[(i * size)..<((i + 1) * size)] }
        return LabeledLatents(values: values, shape: [indices.count] + shape.dropFirst(), labels: indices.map { labels[$0] })
    }
}

/// How `ppsample train-classifier` trains the digits classifier. Everything is fixed by these numbers
/// and the data, and training runs on one thread, so the written file is the same bit for bit.
public struct ClassifierTrainingOptions: Sendable {
    public var hidden = [128, 64]
    public var seed: UInt64 = 0
    public var heldOutFraction = 0.2
    public var epochs = 40
    public var batch = 64
    public var learningRate: Float = 2e-3
    public var weightDecay: Float = 1e-4
    /// Random shifts of up to this many pixels in each direction (the background fills in).
    public var maxShift = 1
    public init() {}
}

public struct ClassifierTrainingReport: Sendable {
    public var trainCount: Int
    public var heldOutCount: Int
    public var heldOutAccuracy: Double
    public var trainAccuracy: Double
    /// The Fréchet distance between two seeded halves of the whole data: the metric's floor.
    public var realVsRealFD: Double
    public var finalLoss: Double
    public var seconds: Double
}

public enum ClassifierTraining {
    /// Indices 0..<n in a seeded order (Fisher-Yates on SplitMix64).
    public static func permutation(_ n: Int, seed: UInt64) -> [Int] {
        var order = Array(0..<n)
        var random = SeededRandom(seed: seed)
        if n > 1 { for i in stride(from: n - 1, to: 0, by: -1) { order.swapAt(i, random.below(i + 1)) } }
        return order
    }

    /// Held-out rows: the first round(fraction·N) of the seeded permutation; the rest trains.
    public static func split(count: Int, fraction: Double, seed: UInt64) -> (train: [Int], heldOut: [Int]) {
        let order = permutation(count, seed: seed)
        let held = max(1, Int((fraction * Double(count)).rounded()))
        return (Array(order[held...]).sorted(), Array(order[..<held]).sorted())
    }

    /// Trains on the data's training split, on one thread (so that the classifier comes out bit for bit
    /// the same on every machine), and fills the metadata with what a reader needs to trust the metric.
    public static func train(data: LabeledLatents, dataSHA256: String, options: ClassifierTrainingOptions,
                             log: ((String) -> Void)? = nil) throws -> (DigitsClassifier, ClassifierTrainingReport) {
        try Parallel.withThreads(1) { try trainOnOneThread(data: data, dataSHA256: dataSHA256, options: options, log: log) }
    }

    private static func trainOnOneThread(data: LabeledLatents, dataSHA256: String, options: ClassifierTrainingOptions,
                                         log: ((String) -> Void)?) throws -> (DigitsClassifier, ClassifierTrainingReport) {
        let classes = (data.labels.max() ?? 0) + 1
        guard data.count >= 20, classes >= 2, data.labels.allSatisfy({ $0 >= 0 }) else {
            throw PPError(.badInput, "need at least 20 labelled rows with labels 0..<K, K >= 2")
        }
        let begin = Date()
        var model = DigitsClassifier(inputShape: Array(data.shape.dropFirst()), hidden: options.hidden, classes: classes)
        model.initialize(seed: options.seed)
        let (trainRows, heldRows) = split(count: data.count, fraction: options.heldOutFraction, seed: options.seed)
        let train = data.subset(trainRows), held = data.subset(heldRows)
        var optimizer = AdamW(options: AdamWOptions(learningRate: options.learningRate, weightDecay: options.weightDecay),
                              parameterCount: model.parameters.count)
        var random = SeededRandom(seed: options.seed &+ 0x5EED)
        let stepsPerEpoch = (train.count + options.batch - 1) / options.batch
        let totalSteps = stepsPerEpoch * options.epochs
        let background = data.values.min() ?? 0
        var step = 0
        var lastLoss = 0.0
        for epoch in 0..<options.epochs {
            let order = permutation(train.count, seed: options.seed &+ UInt64(epoch + 1))
            var epochLoss = 0.0
            for s in 0..<stepsPerEpoch {
                let rows = Array(order[(s * options.batch)..<min(train.count, (s + 1) * options.batch)])
                let batch = train.subset(rows)
                let x = shifted(batch, maxShift: options.maxShift, background: background, random: &random)
                // Cosine decay from the peak to zero over the whole run.
                optimizer.options.learningRate = options.learningRate * Float(0.5 * (1 + cos(Double.pi * Double(step) / Double(totalSteps))))
                var (loss, gradient) = model.lossAndGradient(x, labels: batch.labels, batch: rows.count)
                optimizer.update(parameters: &model.parameters, gradients: &gradient, tensors: [0..<model.parameters.count])
                epochLoss += Double(loss) * Double(rows.count)
                step += 1
            }
            lastLoss = epochLoss / Double(train.count)
            if epoch % 10 == 9 || epoch == options.epochs - 1 {
                log?("epoch \(epoch + 1)/\(options.epochs): loss \(String(format: "%.4f", lastLoss))")
            }
        }
        func accuracy(_ d: LabeledLatents) -> Double {
            let predicted = model.predict(d.values, batch: d.count)
            return Double(zip(predicted, d.labels).filter { $0 == $1 }.count) / Double(d.count)
        }
        let heldAccuracy = accuracy(held), trainAccuracy = accuracy(train)
        // The floor: two seeded halves of all the data against each other.
        let halves = permutation(data.count, seed: options.seed &+ 1)
        let half = data.count / 2
        let a = data.subset(Array(halves[..<half]).sorted()), b = data.subset(Array(halves[half...]).sorted())
        let floor = try FrechetDistance.distance(
            FeatureStatistics(features: model.features(a.values, batch: a.count), count: a.count, dim: model.featureDim),
            FeatureStatistics(features: model.features(b.values, batch: b.count), count: b.count, dim: model.featureDim))
        let report = ClassifierTrainingReport(trainCount: train.count, heldOutCount: held.count, heldOutAccuracy: heldAccuracy,
                                              trainAccuracy: trainAccuracy, realVsRealFD: floor, finalLoss: lastLoss,
                                              seconds: Date().timeIntervalSince(begin))
        model.metadata = [
            ("architecture", "mlp " + model.widths.map(String.init).joined(separator: "-") + ", relu; features = last hidden layer (after relu)"),
            ("data_sha256", dataSHA256),
            ("training", "seed \(options.seed), held-out fraction \(options.heldOutFraction) (seeded permutation), \(options.epochs) epochs, batch \(options.batch), "
                + "AdamW lr \(options.learningRate) cosine to 0, weight decay \(options.weightDecay), shifts up to \(options.maxShift) px, 1 thread"),
            ("held_out_rows", "\(held.count)"),
            ("held_out_accuracy", String(format: "%.4f", heldAccuracy)),
            ("train_accuracy", String(format: "%.4f", trainAccuracy)),
            ("real_vs_real_fd", String(format: "%.4f", floor)),
            ("real_vs_real_rows", "\(a.count) vs \(b.count)"),
        ]
        return (model, report)
    }

    /// Each sample moved by a random whole-pixel shift in [-maxShift, maxShift]² (per sample), the vacated
    /// pixels set to `background`: [B, C, H, W] -> [B, C·H·W].
    static func shifted(_ batch: LabeledLatents, maxShift: Int, background: Float, random: inout SeededRandom) -> [Float] {
        guard maxShift > 0 else { return batch.values }
        let (c, h, w) = (batch.shape[1], batch.shape[2], batch.shape[3])
        var out = [Float](repeating: background, count: batch.values.count)  // [B, C, H, W]
        for n in 0..<batch.count {
            let dy = random.below(2 * maxShift + 1) - maxShift, dx = random.below(2 * maxShift + 1) - maxShift
            for ch in 0..<c {
                let base = (n * c + ch) * h * w
                for y in 0..<h where (0..<h).contains(y - dy) {
                    for x in 0..<w where (0..<w).contains(x - dx) {
                        out[base + y * w + x] = batch.values[base + (y - dy) * w + (x - dx)]
                    }
                }
            }
        }
        return out
    }
}
