import Foundation
import PPFileIO
import PPJSON
import PPKernels
import PPModel
import PPSample
import PPTensor

/// Sampling speed of PPFlow against its SiT: random-weight SiT-S/2 and SiT-B/2 and their 2- and 3-level
/// PPFlow versions (the same weights plus proj1/proj2/linear1/linear2), 32x32x4 latents, batch 8, the same
/// Euler steps, unguided. Timings are wall-clock on this machine; the FLOP ratios come from the architecture.
public enum SampleBenchmark {
    public struct Row: Sendable {
        /// "S/2" or "B/2".
        public var name: String
        public var sitSecondsPerImage: Double
        public var ppf2SecondsPerImage: Double
        public var ppf3SecondsPerImage: Double
        /// SiT time / PPFlow time.
        public var ppf2Speedup: Double { sitSecondsPerImage / ppf2SecondsPerImage }
        public var ppf3Speedup: Double { sitSecondsPerImage / ppf3SecondsPerImage }
        /// SiT FLOPs / PPFlow FLOPs over the same run (the ideal speedup).
        public var ppf2FlopRatio: Double
        public var ppf3FlopRatio: Double
        /// SiT forward FLOPs per image per step.
        public var sitFlopsPerEvaluation: Double
    }

    public struct Report: Sendable {
        public var threads: Int
        public var steps: Int
        public var batch: Int
        public var repeats: Int
        public var rows: [Row]

        /// `{"S/2": {"sit_s_per_image":..,"ppf2_speedup":..,"ppf3_speedup":..,"ppf2_flop_ratio":..,"ppf3_flop_ratio":..}, "B/2": {...}}`
        public var json: JSONValue {
            .object(JSONObject(rows.map { row in
                (row.name, JSONValue.object(JSONObject([
                    ("sit_s_per_image", .double(row.sitSecondsPerImage)),
                    ("ppf2_speedup", .double(row.ppf2Speedup)),
                    ("ppf3_speedup", .double(row.ppf3Speedup)),
                    ("ppf2_flop_ratio", .double(row.ppf2FlopRatio)),
                    ("ppf3_flop_ratio", .double(row.ppf3FlopRatio)),
                ])))
            }))
        }

        /// `json` as text, keys in the order above.
        public var jsonText: String { JSON.serialize(json, pretty: true) }

        public var text: String {
            var lines = ["sampling benchmark: 32x32x4 latents, batch \(batch), \(steps) Euler steps, \(threads) thread(s), random weights, unguided, best of \(repeats) rounds"]
            for row in rows {
                lines.append(String(format: "%@: SiT %.4f s/image (%.2f GFLOP/step); PPF-2 %.4f s/image, speedup %.2fx (FLOP ratio %.2f); PPF-3 %.4f s/image, speedup %.2fx (FLOP ratio %.2f)",
                                    row.name, row.sitSecondsPerImage, row.sitFlopsPerEvaluation / 1e9,
                                    row.ppf2SecondsPerImage, row.ppf2Speedup, row.ppf2FlopRatio,
                                    row.ppf3SecondsPerImage, row.ppf3Speedup, row.ppf3FlopRatio))
            }
            return lines.joined(separator: "\n")
        }
    }

    /// The released S and B shapes (depth 12; 6 and 12 heads) on 256 px latents, 1000 classes, learn_sigma.
    public static func config(_ name: String, levels: Int) -> ModelConfig {
        let hidden = name == "S/2" ? 384 : 768
        return ModelConfig(inChannels: 4, inputSize: 32, patchSize: 2, hiddenSize: hidden, depth: 12,
                           numHeads: ModelConfig.releasedHeads[hidden]!, numClasses: 1000, levels: levels)
    }

    /// Runs the benchmark: `steps` Euler steps (`steps + 1` grid points) per model, `repeats` rounds that
    /// time SiT, PPF-2 and PPF-3 one after the other (so load from other processes hits all three alike);
    /// each model's best round counts.
    public static func run(threads: Int, steps: Int, batch: Int = 8, repeats: Int = 2, models: [String] = ["S/2", "B/2"],
                           log: ((String) -> Void)? = nil) throws -> Report {
        guard threads >= 1, steps >= 1, batch >= 1, repeats >= 1 else {
            throw PPError(.usage, "threads, steps, batch and repeats must be at least 1")
        }
        if let unknown = models.first(where: { $0 != "S/2" && $0 != "B/2" }) {
            throw PPError(.usage, "no benchmark model \(unknown): the models are S/2 and B/2")
        }
        return try Parallel.withThreads(threads) {
            try measure(threads: threads, steps: steps, batch: batch, repeats: repeats, models: models, log: log)
        }
    }

    private static func measure(threads: Int, steps: Int, batch: Int, repeats: Int, models: [String],
                                log: ((String) -> Void)?) throws -> Report {
        let start = try SampleStart.seeded(7, batch: batch, channels: 4, side: 32, labels: nil, numClasses: 1000)
        var rows: [Row] = []
        for name in models {
            let sitConfig = config(name, levels: 1)
            let sit = ModelParameters(config: sitConfig)
            fillRandom(&sit.values, seed: 1)
            let fields = try [sit, pyramid(from: sit, levels: 2, seed: 2), pyramid(from: sit, levels: 3, seed: 3)].map { parameters in
                try VelocityModelField(model: Model(config: parameters.config, parameters: parameters), guidance: nil)
            }
            for field in fields {  // warm-up: scratch buffers and position tables of every level
                for t: Float in [0.3, 0.6, 0.9] { _ = try field.velocity(x: start.noise, t: t, labels: start.labels, batch: batch) }
            }
            var best = [Double](repeating: .infinity, count: 3)
            for round in 0..<repeats {
                for (index, field) in fields.enumerated() {
                    let begin = DispatchTime.now().uptimeNanoseconds
                    _ = try Sampler.run(field, start: start, method: .euler, points: steps + 1)
                    let elapsed = Double(DispatchTime.now().uptimeNanoseconds - begin) / 1e9
                    best[index] = min(best[index], elapsed / Double(batch))
                    log?(String(format: "%@ %@ round %d: %.3f s for %d images", name, index == 0 ? "SiT" : "PPF-\(index + 1)",
                                round + 1, elapsed, batch))
                }
            }
            let full = sitConfig.forwardFLOPs(level: 0, latentSide: 32)
            rows.append(Row(name: name, sitSecondsPerImage: best[0], ppf2SecondsPerImage: best[1], ppf3SecondsPerImage: best[2],
                            ppf2FlopRatio: full / SamplingCost.eulerAverageFLOPs(config: config(name, levels: 2), steps: steps, latentSide: 32),
                            ppf3FlopRatio: full / SamplingCost.eulerAverageFLOPs(config: config(name, levels: 3), steps: steps, latentSide: 32),
                            sitFlopsPerEvaluation: full))
        }
        return Report(threads: threads, steps: steps, batch: batch, repeats: repeats, rows: rows)
    }

    /// The SiT weights copied into a PPFlow layout; proj1/proj2/linear1/linear2 and the level embedding random.
    static func pyramid(from sit: ModelParameters, levels: Int, seed: UInt64) -> ModelParameters {
        var sitConfig = sit.config
        sitConfig.levels = levels
        sitConfig.thresholds = ModelConfig.officialThresholds(levels: levels)
        let parameters = ModelParameters(config: sitConfig)
        fillRandom(&parameters.values, seed: seed)
        for name in parameters.layout.names {
            guard let source = sit.layout.range(of: name), let target = parameters.layout.range(of: name) else { continue }
            parameters.values.replaceSubrange(target, with: sit.values[source])
        }
        return parameters
    }

    /// Uniform values in [-0.05, 0.05): weights whose size keeps activations ordinary (timing only).
    static func fillRandom(_ values: inout [Float], seed: UInt64) {
        var state = seed &* 0x9E37_79B9_7F4A_7C15
        for i in values.indices {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            values[i] = (Float(z >> 40) / Float(1 << 24) - 0.5) * 0.1
        }
    }
}
