import Foundation
import PPCheckpoint
import PPModel
import PPModelIO
import PPSafetensors
import PPSample
import PPTensor

/// What `ppsample eval` does, in-process: score a samples file, or sample a model once per seed and
/// score each run, against the real data in the classifier's feature space.
public struct EvalJob {
    public var input: String
    public var dataPath: String
    public var classifierPath: String
    public var sampling = EvalSampling()
    public var seeds: [UInt64] = [0]
    /// Other switch points for a pyramid model (nil: the model's own).
    public var thresholds: [Double]?
    /// Objective for a checkpoint that records none.
    public var objective: Objective?
    public var heads: Int?
    public var weights: WeightsChoice?
    /// Check a native model's weights against the sha256 in its config.json.
    public var verifyHashes = true

    public init(input: String, dataPath: String, classifierPath: String) {
        self.input = input; self.dataPath = dataPath; self.classifierPath = classifierPath
    }

    public struct Run: Sendable {
        public var seed: UInt64?
        public var scores: SampleScores
        public var cost: SampleCost?
    }

    public struct Report: Sendable {
        public var kind: String            // "samples" or "model"
        public var levels: Int?
        public var thresholds: [Double]?
        /// Per level, the patch directions it cannot see whose noise the sampler removed (nil: none removed).
        public var unseenDimensions: [Int]?
        public var realCount: Int
        public var classifierMetadata: [(String, String)]
        public var runs: [Run]

        public var fdValues: [Double] { runs.map(\.scores.frechetDistance) }
        public var accuracyValues: [Double] { runs.compactMap(\.scores.accuracy) }
    }

    /// A safetensors file holding a `samples` tensor is a samples file; anything else is a model.
    public static func isSamplesFile(_ path: String) -> Bool {
        guard path.hasSuffix(".safetensors"), let file = try? SafetensorsFile.open(path) else { return false }
        return file.tensors["samples"] != nil
    }

    public func run(progress: ((String, Int, Int) -> Void)? = nil) throws -> Report {
        let classifier = try DigitsClassifier.read(classifierPath)
        let evaluator = try Evaluator(classifier: classifier, classifierPath: classifierPath, data: try LabeledLatents.read(dataPath), dataPath: dataPath)
        if Self.isSamplesFile(input) {
            let samples = try LabeledLatents.read(input)
            let scores = try evaluator.score(samples, file: input)
            return Report(kind: "samples", levels: nil, thresholds: nil, unseenDimensions: nil, realCount: evaluator.realCount,
                          classifierMetadata: classifier.metadata, runs: [Run(seed: nil, scores: scores, cost: nil)])
        }
        let loaded = try ModelLoader.load(input, weights: weights, heads: heads, verifyHashes: verifyHashes)
        var config = loaded.config
        try evaluator.check(model: config, path: input)
        if let thresholds { config = try ModelSampling.withThresholds(config, thresholds) }
        var objective = loaded.checkpoint.objective
        if objective == .unknown, let given = self.objective { objective = given }
        let unseenNoise = UnseenNoisePlan(model: Model(weights: loaded.weights, config: config), objective: objective,
                                          mode: sampling.unseenNoise)
        var runs: [Run] = []
        for seed in seeds {
            var settings = sampling
            settings.seed = seed
            let net = Model(weights: loaded.weights, config: config)
            let (samples, cost) = try ModelSampling.sample(net, objective: objective, settings: settings,
                                                           unseenNoise: unseenNoise) { done, total in
                progress?("seed \(seed)", done, total)
            }
            runs.append(Run(seed: seed, scores: try evaluator.score(samples, file: input), cost: cost))
        }
        return Report(kind: "model", levels: config.levels, thresholds: config.levels > 1 ? config.thresholds : nil,
                      unseenDimensions: unseenNoise?.dimensions, realCount: evaluator.realCount, classifierMetadata: classifier.metadata, runs: runs)
    }
}
