import PPCheckpoint
import PPJSON
import PPModel
import PPTensor

#if canImport(Glibc)
import Glibc
#endif

/// Runs a source DiT/SiT and a PPFlow model derived from it on the same deterministic inputs and
/// reports, per level, how far the PPFlow prediction is from the source's. The finest level must
/// reproduce the source (relative error <= 1e-5); coarser levels are a warm start, so their
/// deviation is reported, not judged.
public struct Verification {
    public struct LevelResult: Sendable {
        public var level: Int
        public var layout: String
        /// The band's centre; the samples' t are spread over the band.
        public var t: Double
        /// ||ppflow - source|| / ||source|| on the prediction channels, in the full layout (the level
        /// layouts are lossless rearrangements, so the number is the same in the level's layout).
        public var relativeError: Double
        public var maxAbsError: Double
        /// The same measure for the repeat-rule conversion on the same inputs, when it was given.
        public var repeatRelativeError: Double?
        public var required: Bool
        public var passed: Bool
    }

    public static let finestTolerance = 1e-5

    public var levels: [LevelResult] = []
    public var inputs: String
    public var passed: Bool { levels.allSatisfy(\.passed) }

    /// `data`: optional real latents [N,C,S,S] (+ labels) to use instead of random ones; `pool`: the rows of
    /// `data` to draw from (the calibration's held-out rows), all when nil or empty; `repeatRule`: the
    /// repeat-rule conversion of the same source, measured on the same inputs for comparison.
    /// The models run on their weights where they lie (a checkpoint's mapped tensors are not copied).
    public init(source sourceWeights: ModelWeights, ppflow ppflowWeights: ModelWeights,
                batch: Int = 4, seed: UInt64 = 0, data: (latents: [Float], labels: [Int32], count: Int)? = nil, pool: [Int]? = nil,
                repeatRule: ModelWeights? = nil) {
        let source = sourceWeights.config, ppflow = ppflowWeights.config
        let sourceModel = Model(weights: sourceWeights)
        let ppflowModel = Model(weights: ppflowWeights)
        let repeatModel = repeatRule.map { Model(weights: $0, config: ppflow) }
        let c = source.inChannels, s = source.inputSize
        let perSample = c * s * s
        var rng = SeededRandom(seed: seed)
        // Inputs: x_t = t*x1 + (1-t)*x0 with x1 from data when given (else Gaussian), x0 Gaussian.
        var x1 = [Float](repeating: 0, count: batch * perSample)   // [B, C, S, S]
        var labels = [Int32](repeating: 0, count: batch)            // [B]
        if let data, data.count > 0 {
            let rows = (pool ?? []).isEmpty ? Array(0..<data.count) : pool!
            for b in 0..<batch {
                let pick = rows[rng.below(rows.count)]
                for i in 0..<perSample { x1[b * perSample + i] = data.latents[pick * perSample + i] }
                labels[b] = data.labels.isEmpty ? Int32(source.numClasses) : data.labels[pick]
            }
            inputs = "\(batch) samples of the given latents\(rows.count < data.count ? " (from the \(rows.count) held out of the calibration)" : ""), seed \(seed)"
        } else {
            x1 = rng.normals(batch * perSample)
            for b in 0..<batch { labels[b] = Int32(rng.below(source.numClasses)) }
            inputs = "\(batch) Gaussian samples, seed \(seed)"
        }
        let x0 = rng.normals(batch * perSample)                     // [B, C, S, S]
        let bands = Verification.bands(thresholds: ppflow.thresholds)
        let layouts = ppflow.levels == 3 ? ["down_square", "down_w", "full"] : ["down_square", "full"]
        for level in 0..<ppflow.levels {
            // Spread over the level's band: t_i at the centres of `batch` equal slices.
            let band = bands[level]
            let times = (0..<batch).map { Float(band.lowerBound + (band.upperBound - band.lowerBound) * (Double($0) + 0.5) / Double(batch)) }
            let t = (band.lowerBound + band.upperBound) / 2
            var x = [Float](repeating: 0, count: batch * perSample)
            for b in 0..<batch {
                for i in 0..<perSample { x[b * perSample + i] = times[b] * x1[b * perSample + i] + (1 - times[b]) * x0[b * perSample + i] }
            }
            let expected = sourceModel.forward(x: x, t: times, y: labels, batch: batch)        // [B, Cout, S, S]
            let actual = ppflowModel.forward(x: x, t: times, y: labels, batch: batch, level: level)
            let (rel, maxAbs) = Verification.predictionError(actual, expected, batch: batch, channels: c,
                                                             outChannels: source.learnSigma ? 2 * c : c, pixels: s * s)
            let required = level == ppflow.levels - 1
            let repeatError = repeatModel.map { model in
                Verification.predictionError(model.forward(x: x, t: times, y: labels, batch: batch, level: level), expected, batch: batch,
                                             channels: c, outChannels: source.learnSigma ? 2 * c : c, pixels: s * s).0
            }
            levels.append(LevelResult(level: level, layout: layouts[level], t: t, relativeError: rel, maxAbsError: maxAbs,
                                      repeatRelativeError: repeatError, required: required, passed: !required || rel <= Verification.finestTolerance))
        }
    }

    /// The t interval of each level: [0, t1], (t1, t2], (t2, 1].
    public static func bands(thresholds: [Double]) -> [ClosedRange<Double>] {
        let edges = [0.0] + thresholds + [1.0]
        return (0..<(edges.count - 1)).map { edges[$0]...edges[$0 + 1] }
    }

    /// Relative L2 error and max |a-e| over the first `channels` (prediction) channels.
    static func predictionError(_ actual: [Float], _ expected: [Float], batch: Int, channels: Int, outChannels: Int, pixels: Int) -> (Double, Double) {
        var diff2 = 0.0, ref2 = 0.0, maxAbs = 0.0
        for b in 0..<batch {
            for ch in 0..<channels {
                let base = (b * outChannels + ch) * pixels
                for i in base ..< base + pixels {
                    let d = Double(actual[i]) - Double(expected[i])
                    diff2 += d * d
                    ref2 += Double(expected[i]) * Double(expected[i])
                    maxAbs = max(maxAbs, abs(d))
                }
            }
        }
        return ((diff2 / max(ref2, 1e-30)).squareRoot(), maxAbs)
    }

    public var json: JSONValue {
        .object(JSONObject([
            ("passed", .bool(passed)),
            ("inputs", .string(inputs)),
            ("finest_tolerance", .double(Verification.finestTolerance)),
            ("levels", .array(levels.map { r in
                .object(JSONObject([
                    ("level", .int(Int64(r.level))), ("layout", .string(r.layout)), ("t", .double(r.t)),
                    ("relative_error", .double(r.relativeError)), ("max_abs_error", .double(r.maxAbsError)),
                    ("repeat_rule_relative_error", r.repeatRelativeError.map { .double($0) } ?? .null),
                    ("required", .bool(r.required)), ("passed", .bool(r.passed)),
                ]))
            })),
        ]))
    }

    /// The inputs line first: the numbers depend on them (`ppconvert verify` gives the same numbers as
    /// `from-dit` only on the same inputs).
    public func lines() -> [String] {
        ["verification inputs: \(inputs)"] + levels.map { r in
            let verdict = r.required ? (r.passed ? "ok (must match the source)" : "FAILED (must match the source to \(Verification.finestTolerance))")
                                     : "deviation from the source (warm start; fine-tuning closes it)"
            let baseline = r.repeatRelativeError.map { " (repeat rule: \(Self.fourDigits($0)), ratio \((r.relativeError / max($0, 1e-30) * 1000).rounded() / 1000))" } ?? ""
            return "level \(r.level) \(r.layout.padding(11)) t~\(r.t): relative error \(Self.fourDigits(r.relativeError))\(baseline), max |diff| \(Self.fourDigits(r.maxAbsError))  \(verdict)"
        }
    }

    /// Four significant digits ("0.7567", "3.29", "1.2e-07"): the digits beyond depend on the BLAS kernels
    /// of the machine (sums in another order); `json` keeps every digit.
    static func fourDigits(_ value: Double) -> String {
        guard value != 0 else { return "0" }
        var buffer = [CChar](repeating: 0, count: 40)
        _ = withVaList([value]) { vsnprintf(&buffer, buffer.count, "%.4g", $0) }
        return String(cString: buffer)
    }
}

extension Verification {
    /// `target` with every tensor that is byte-identical to the same-named tensor of `source` replaced by
    /// the source's view. A converted model stores its own copy of the tensors it shares with its source;
    /// checking it against the source would otherwise keep both files resident (twice the checkpoint).
    /// Compared in 64 MiB pieces, the target's pages dropped behind the comparison.
    public static func sharingSource(_ target: TensorDict, source: TensorDict) -> (tensors: TensorDict, sharedBytes: Int) {
        var out = TensorDict()
        var shared = 0
        for (name, tensor) in target.items {
            guard let original = source[name], original.dtype == tensor.dtype, original.shape == tensor.shape,
                  let a = tensor.contiguousBytes, let b = original.contiguousBytes, let range = tensor.contiguousByteRange else {
                out[name] = tensor
                continue
            }
            let piece = 64 << 20
            var same = true, offset = 0
            while same && offset < a.count {
                let n = min(piece, a.count - offset)
                same = memcmp(a.baseAddress! + offset, b.baseAddress! + offset, n) == 0
                tensor.storage.dropPages(range.lowerBound + offset ..< range.lowerBound + offset + n)
                offset += n
            }
            out[name] = same ? original : tensor
            if same { shared += a.count }
        }
        return (out, shared)
    }
}
