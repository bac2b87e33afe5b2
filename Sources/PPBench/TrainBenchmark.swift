#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import PPFileIO
import PPKernels
import PPModel
import PPTensor
import PPTrain

/// What `TrainBenchmark.run` measured.
public struct TrainBenchmarkReport: Sendable, CustomStringConvertible {
    public var threads: Int
    public var sgemmSize: Int
    public var sgemmGFLOPS: Double
    public var parameterCount: Int
    /// Matrix-product FLOPs of one step (forward + backward, 2·m·n·k each, attention included).
    public var stepFLOPs: Double
    /// Seconds per step (forward, backward, AdamW), best of the timed steps.
    public var secondsPerStep: Double
    public var stepGFLOPS: Double { stepFLOPs / secondsPerStep / 1e9 }
    public var efficiency: Double { stepGFLOPS / sgemmGFLOPS }
    public var activationBytes: Int
    /// VmHWM of the process (peak resident memory) in bytes, 0 where /proc is unavailable.
    public var peakResidentBytes: Int

    public var description: String {
        func f(_ v: Double) -> String { String(format1(v)) }
        return "threads \(threads): sgemm \(sgemmSize)^3 \(f(sgemmGFLOPS)) GFLOP/s; PPFlow-B-2 train step (\(parameterCount) params, "
            + "batch 8 = 4 coarse + 4 full): \(f(secondsPerStep * 1000)) ms, \(f(stepFLOPs / 1e9)) GFLOP = \(f(stepGFLOPS)) GFLOP/s "
            + "(\(Int((efficiency * 100).rounded()))% of sgemm); activations \(activationBytes >> 20) MiB, peak RSS \(peakResidentBytes >> 20) MiB"
    }
}

private func format1(_ v: Double) -> String {
    let tenths = Int((v * 10).rounded())
    return "\(tenths / 10).\(abs(tenths % 10))"
}

public enum TrainBenchmark {
    /// PPFlow-B-2: D 768, depth 12, heads 12, 32×32×4 latents, 2 levels.
    public static let ppflowB2 = TrainConfig(hidden: 768, depth: 12, heads: 12, patch: 2, channels: 4, side: 32, classes: 1000, levels: 2)

    /// One warm-up step, then `steps` timed training steps (forward, backward, AdamW) on random weights,
    /// next to cblas_sgemm on a square product measured in the same run.
    public static func run(threads: Int, config: TrainConfig = ppflowB2, steps: Int = 2, sgemmSize: Int = 2048) throws -> TrainBenchmarkReport {
        try Parallel.withThreads(threads) { try measure(threads: threads, config: config, steps: steps, sgemmSize: sgemmSize) }
    }

    private static func measure(threads: Int, config: TrainConfig, steps: Int, sgemmSize: Int) throws -> TrainBenchmarkReport {
        var state = UInt64(2024)
        func next() -> Float {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: state >> 11) % 2001 - 1000) / 1000
        }

        // sgemm reference rate.
        let n = sgemmSize
        let sgemmSeconds: Double
        do {
            let a = (0..<(n * n)).map { _ in next() }, b = (0..<(n * n)).map { _ in next() }
            var c = [Float](repeating: 0, count: n * n)
            sgemmSeconds = bestTime(3) {
                BLAS.sgemm(transposeA: false, transposeB: false, m: n, n: n, k: n, a: a, lda: n, b: b, ldb: n, c: &c, ldc: n)
            }
        }

        let layout = ParameterLayout(config: config.model)
        var parameters = [Float](repeating: 0, count: layout.totalCount)  // [P]
        for i in 0..<parameters.count { parameters[i] = next() * 0.02 }
        let model = TrainingModel(config: config, parameters: parameters)
        parameters = []
        let B = 8, sample = config.channels * config.side * config.side
        let batch = TrainBatch(x1: (0..<(B * sample)).map { _ in next() }, x0: (0..<(B * sample)).map { _ in next() },
                               t: [0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9], y: (0..<B).map { ($0 * 37) % config.classes })
        var optimizer = AdamW(options: AdamWOptions(learningRate: 1e-4), parameterCount: layout.totalCount)
        let seconds = try bestTimeThrowing(steps + 1) {
            _ = try model.forwardBackward(batch)
            optimizer.update(parameters: &model.parameters, gradients: &model.gradients, layout: model.layout)
        }
        return TrainBenchmarkReport(threads: threads, sgemmSize: n, sgemmGFLOPS: 2 * Double(n) * Double(n) * Double(n) / sgemmSeconds / 1e9,
                                    parameterCount: layout.totalCount, stepFLOPs: model.matmulFlops, secondsPerStep: seconds,
                                    activationBytes: model.activationBytes, peakResidentBytes: peakResidentBytes())
    }

    /// Peak resident memory (VmHWM), in bytes; 0 when unavailable.
    public static func peakResidentBytes() -> Int { PeakMemory.residentHighWaterMark() }

    private static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    private static func bestTime(_ repeats: Int, _ body: () -> Void) -> Double {
        var best = Double.infinity
        for _ in 0..<repeats { let start = now(); body(); best = min(best, now() - start) }
        return best
    }

    /// Best of `repeats - 1` timed runs after one untimed warm-up.
    private static func bestTimeThrowing(_ repeats: Int, _ body: () throws -> Void) rethrows -> Double {
        try body()
        var best = Double.infinity
        for _ in 1..<max(2, repeats) { let start = now(); try body(); best = min(best, now() - start) }
        return best
    }
}
