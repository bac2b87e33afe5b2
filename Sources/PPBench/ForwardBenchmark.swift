#if canImport(Glibc)
import Glibc
#endif
import PPKernels
import PPModel

/// What `ForwardBenchmark.run` measured.
public struct ForwardBenchmarkReport: Sendable, CustomStringConvertible {
    public var threads: Int
    public var sgemmSize: Int
    public var sgemmGFLOPS: Double
    public var modelDescription: String
    /// Floating-point operations of one forward, counted analytically (2·m·n·k per product, attention included).
    public var forwardFLOPs: Double
    public var forwardSeconds: Double
    public var forwardGFLOPS: Double
    /// forwardGFLOPS / sgemmGFLOPS.
    public var efficiency: Double { forwardGFLOPS / sgemmGFLOPS }

    public var description: String {
        func f(_ v: Double) -> String { String(Int((v * 10).rounded()) / 10) + "." + String(Int((v * 10).rounded()) % 10) }
        return "threads \(threads): sgemm \(sgemmSize)^3 \(f(sgemmGFLOPS)) GFLOP/s; \(modelDescription) forward "
            + "\(f(forwardFLOPs / 1e9)) GFLOP in \(f(forwardSeconds * 1000)) ms = \(f(forwardGFLOPS)) GFLOP/s "
            + "(\(Int((efficiency * 100).rounded()))% of sgemm)"
    }
}

public enum ForwardBenchmark {
    /// SiT-B/2 on 32×32×4 latents (256 px).
    public static let sitB2 = ModelConfig(inChannels: 4, inputSize: 32, patchSize: 2, hiddenSize: 768, depth: 12, numHeads: 12, numClasses: 1000)

    /// Measures cblas_sgemm on a square product and one model forward (random weights), best of `repeats`.
    public static func run(threads: Int, sgemmSize: Int = 2048, config: ModelConfig = sitB2, batch: Int = 8, repeats: Int = 3) -> ForwardBenchmarkReport {
        Parallel.withThreads(threads) { measure(threads: threads, sgemmSize: sgemmSize, config: config, batch: batch, repeats: repeats) }
    }

    private static func measure(threads: Int, sgemmSize: Int, config: ModelConfig, batch: Int, repeats: Int) -> ForwardBenchmarkReport {
        var random = UInt64(12345)
        func next() -> Float {
            random = random &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: random >> 11) % 2001 - 1000) / 1000
        }

        // sgemm on n×n×n.
        let n = sgemmSize
        let a = (0..<(n * n)).map { _ in next() }, b = (0..<(n * n)).map { _ in next() }
        var c = [Float](repeating: 0, count: n * n)
        let sgemmSeconds = best(repeats) {
            a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
                BLAS.sgemm(transposeA: false, transposeB: false, m: n, n: n, k: n, a: ap.baseAddress!, lda: n, b: bp.baseAddress!, ldb: n,
                           c: cp.baseAddress!, ldc: n)
            } } }
        }

        // Model forward with small random weights.
        let parameters = ModelParameters(config: config)
        for i in 0..<parameters.values.count { parameters.values[i] = next() * 0.02 }
        let model = Model(config: config, parameters: parameters)
        let s = config.inputSize
        let x = (0..<(batch * config.inChannels * s * s)).map { _ in next() }
        let t = (0..<batch).map { Float($0 + 1) / Float(batch + 1) }
        let y = (0..<batch).map { Int32($0 % config.numClasses) }
        let level = config.levels - 1
        let forwardSeconds = best(repeats) { _ = model.forward(x: x, t: t, y: y, batch: batch, level: level) }
        let flops = config.forwardFLOPs(level: level, batch: batch)
        return ForwardBenchmarkReport(threads: threads, sgemmSize: n, sgemmGFLOPS: 2 * Double(n) * Double(n) * Double(n) / sgemmSeconds / 1e9,
                                      modelDescription: "D \(config.hiddenSize) depth \(config.depth) heads \(config.numHeads) "
                                          + "\(s)x\(s)x\(config.inChannels) batch \(batch)",
                                      forwardFLOPs: flops, forwardSeconds: forwardSeconds, forwardGFLOPS: flops / forwardSeconds / 1e9)
    }

    private static func best(_ repeats: Int, _ body: () -> Void) -> Double {
        body()  // warm-up: thread pools, page faults, scratch growth
        var fastest = Double.infinity
        for _ in 0..<max(1, repeats) {
            let start = now()
            body()
            fastest = min(fastest, now() - start)
        }
        return fastest
    }

    private static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }
}
