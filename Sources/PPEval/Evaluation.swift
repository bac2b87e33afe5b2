import Foundation
import PPCheckpoint
import PPFileIO
import PPKernels
import PPModel
import PPSample
import PPTensor

/// The scores of one set of samples against the real data.
public struct SampleScores: Sendable {
    public var count: Int
    /// Fréchet distance in the classifier's feature space to all real rows.
    public var frechetDistance: Double
    /// Share of the conditional samples (label < K) the classifier assigns their own label; nil when
    /// every sample is unconditional.
    public var accuracy: Double?
    public var conditionalCount: Int
}

/// What sampling the scored images cost.
public struct SampleCost: Sendable {
    /// Network evaluations per image (a guided level counts its unconditional pass).
    public var evaluationsPerImage: Double
    /// Multiply-add FLOPs (2 per multiply-add) per image over the whole ODE run, each evaluation at the
    /// level its t selects (`ModelConfig.forwardFLOPs`).
    public var flopsPerImage: Double
    public var secondsPerImage: Double
}

/// Scores samples against real data with a classifier: the real data's feature statistics are computed
/// once, then every `score` call compares a set of samples with them.
public struct Evaluator {
    public let classifier: DigitsClassifier
    public let real: FeatureStatistics
    public let realCount: Int
    let dataPath: String
    let classifierPath: String

    public init(classifier: DigitsClassifier, classifierPath: String, data: LabeledLatents, dataPath: String) throws {
        try Self.check(shape: data.shape, labels: data.labels, allowNull: false, classifier: classifier, classifierPath: classifierPath,
                       file: dataPath, what: "the real data")
        self.classifier = classifier
        self.classifierPath = classifierPath
        self.dataPath = dataPath
        realCount = data.count
        real = FeatureStatistics(features: classifier.features(data.values, batch: data.count), count: data.count, dim: classifier.featureDim)
    }

    /// Refuses images whose shape is not the classifier's input or labels outside its classes (K, the
    /// null class, is allowed for samples: they count for the FD, not for accuracy).
    static func check(shape: [Int], labels: [Int], allowNull: Bool, classifier: DigitsClassifier, classifierPath: String,
                      file: String, what: String) throws {
        guard shape.count == 4, Array(shape.dropFirst()) == classifier.inputShape else {
            throw PPError.badInput(file, "\(what) are \(shape.dropFirst().map(String.init).joined(separator: "x")) images, the classifier \(classifierPath) takes \(classifier.inputShape.map(String.init).joined(separator: "x"))")
        }
        guard shape[0] >= 2 else { throw PPError.badInput(file, "\(what): \(shape[0]) image(s); the Fréchet distance needs at least 2") }
        guard labels.count == shape[0] else { throw PPError.badInput(file, entry: "labels", "\(labels.count) labels for \(shape[0]) images") }
        let top = classifier.classes - (allowNull ? 0 : 1)
        if let bad = labels.first(where: { $0 < 0 || $0 > top }) {
            throw PPError.badInput(file, entry: "labels", "label \(bad) in \(what), but the classifier \(classifierPath) has \(classifier.classes) classes"
                + (allowNull ? " (\(classifier.classes) = unconditional)" : ""))
        }
    }

    /// FD and class accuracy of `samples`.
    public func score(_ samples: LabeledLatents, file: String) throws -> SampleScores {
        try Self.check(shape: samples.shape, labels: samples.labels, allowNull: true, classifier: classifier, classifierPath: classifierPath,
                       file: file, what: "the samples")
        let features = classifier.features(samples.values, batch: samples.count)
        let fd = try FrechetDistance.distance(FeatureStatistics(features: features, count: samples.count, dim: classifier.featureDim), real)
        let predicted = classifier.predict(samples.values, batch: samples.count)
        let conditional = samples.labels.indices.filter { samples.labels[$0] < classifier.classes }
        let right = conditional.filter { predicted[$0] == samples.labels[$0] }.count
        return SampleScores(count: samples.count, frechetDistance: fd,
                            accuracy: conditional.isEmpty ? nil : Double(right) / Double(conditional.count),
                            conditionalCount: conditional.count)
    }

    /// Refuses a model whose images or classes do not fit the classifier.
    public func check(model config: ModelConfig, path: String) throws {
        let shape = [config.inChannels, config.inputSize, config.inputSize]
        guard shape == classifier.inputShape else {
            throw PPError.badInput(path, "the model makes \(shape.map(String.init).joined(separator: "x")) images, the classifier \(classifierPath) takes \(classifier.inputShape.map(String.init).joined(separator: "x"))")
        }
        guard config.numClasses == classifier.classes else {
            throw PPError.badInput(path, "the model has \(config.numClasses) classes, the classifier \(classifierPath) \(classifier.classes)")
        }
    }
}

/// How `ppsample eval` samples a model.
public struct EvalSampling: Sendable {
    public var count = 1000
    public var points = 50
    public var method: ODEMethod = .euler
    public var seed: UInt64 = 0
    /// nil or all 1: no guidance.
    public var guidance: Guidance?
    /// Samples per model call; one seeded noise chunk per call (seed + chunk index), as `ppsample`.
    public var batch = 100
    /// What happens to the noise a coarse level cannot see (`UnseenNoise`), as `ppsample`.
    public var unseenNoise: UnseenNoise = .drop
    public init() {}
}

/// A velocity field that also adds up FLOPs: every call costs the evaluations it spent times one
/// forward at the level its t selects.
final class CostMeter: VelocityField {
    let inner: VelocityField
    let config: ModelConfig
    private(set) var flops = 0.0
    var channels: Int { inner.channels }
    var count: EvaluationCount { inner.count }

    init(_ inner: VelocityField, config: ModelConfig) {
        self.inner = inner
        self.config = config
    }

    func velocity(x: [Float], t: Float, labels: [Int32], batch: Int) throws -> [Float] {
        let before = inner.count.evaluations
        let v = try inner.velocity(x: x, t: t, labels: labels, batch: batch)
        // The level the sampler ran for this t (the one rule, compared in float32).
        flops += Double(inner.count.evaluations - before) * config.forwardFLOPs(level: config.level(forTime: t))
        return v
    }
}

public enum ModelSampling {
    /// Loads nothing: samples `net` (already configured, thresholds included) for `objective`, labels
    /// 0, 1, ..., K-1, 0, 1, ... (balanced classes), and reports the cost. `progress(done, total)` counts solver steps.
    /// `unseenNoise`: the plan for `net` under `settings.unseenNoise` (found once per model by the caller).
    public static func sample(_ net: Model, objective: Objective, settings: EvalSampling, unseenNoise: UnseenNoisePlan?,
                              progress: ((Int, Int) -> Void)? = nil) throws -> (LabeledLatents, SampleCost) {
        let config = net.config
        let field = CostMeter(try SampleFields.field(model: net, objective: objective, guidance: settings.guidance), config: config)
        let labels = (0..<settings.count).map { Int32($0 % config.numClasses) }
        var values = [Float](); values.reserveCapacity(settings.count * config.inChannels * config.inputSize * config.inputSize)
        let chunks = (settings.count + settings.batch - 1) / settings.batch
        let stepsPerChunk = settings.points - 1
        let begin = Date()
        for chunk in 0..<chunks {
            let part = Array(labels[(chunk * settings.batch)..<min(settings.count, (chunk + 1) * settings.batch)])
            let start = try SampleStart.seeded(settings.seed &+ UInt64(chunk), batch: part.count, channels: config.inChannels,
                                               side: config.inputSize, labels: part, numClasses: config.numClasses)
            let result = try Sampler.run(field, start: start, method: settings.method, points: settings.points,
                                         unseenNoise: unseenNoise) { done, _ in
                progress?(chunk * stepsPerChunk + done, chunks * stepsPerChunk)
            }
            values += result.samples
        }
        let seconds = Date().timeIntervalSince(begin)
        let n = Double(settings.count)
        let samples = LabeledLatents(values: values, shape: [settings.count, config.inChannels, config.inputSize, config.inputSize],
                                     labels: labels.map(Int.init))
        return (samples, SampleCost(evaluationsPerImage: Double(field.count.evaluations) / n, flopsPerImage: field.flops / n,
                                    secondsPerImage: seconds / n))
    }

    /// `config` with other switch points: one threshold per level boundary, strictly increasing in (0, 1).
    public static func withThresholds(_ config: ModelConfig, _ thresholds: [Double]) throws -> ModelConfig {
        guard thresholds.count == config.levels - 1 else {
            throw PPError(.usage, entry: "--thresholds", "the model has \(config.levels) level(s): give \(config.levels - 1) threshold(s)")
        }
        guard thresholds.allSatisfy({ $0 > 0 && $0 < 1 }), zip(thresholds, thresholds.dropFirst()).allSatisfy({ $0 < $1 }) else {
            throw PPError(.usage, entry: "--thresholds", "thresholds must increase strictly within (0, 1)")
        }
        var c = config
        c.thresholds = thresholds
        return c
    }
}
