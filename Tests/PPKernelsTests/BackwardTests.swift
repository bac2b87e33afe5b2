import XCTest
import PPKernels

/// Finite-difference checks of every backward kernel on tiny odd shapes.
///
/// The kernels are Float-only, so the checks run in Float with central differences of step 1e-2 on a
/// scalar loss L = Σ w·f(x) (random w) accumulated in Double. Kernels that are linear in the checked input
/// (linear, modulate, gated residual, the permutations) have no truncation error, so only rounding
/// (about 1e-7·|L|/h) remains; for the curved ones (LayerNorm, GELU, SiLU, softmax attention) the
/// O(h²) truncation stays below 1e-4 relative on these scales. Tolerance 1e-3 relative over all indices:
/// a wrong term gives errors of order 1.
final class BackwardTests: XCTestCase {
    // Every test runs in its own thread scope (1 unless it says otherwise); nothing to restore.
    override func invokeTest() { Parallel.withThreads(1) { super.invokeTest() } }

    /// Checks `backward(x, w)` (the gradient of Σ w·forward(x)) against central differences over every index.
    private func checkGradient(_ what: String, input: [Float], forward: ([Float]) -> [Float],
                               backward: ([Float], [Float]) -> [Float], step: Float = 1e-2, tolerance: Double = 1e-3,
                               file: StaticString = #filePath, line: UInt = #line) {
        var random = SeededValues(seed: 99)
        let weights = random.values(forward(input).count)
        func loss(_ x: [Float]) -> Double { zip(forward(x), weights).reduce(0.0) { $0 + Double($1.0) * Double($1.1) } }
        let analytic = backward(input, weights)
        var numeric = [Float](repeating: 0, count: input.count)
        for i in 0..<input.count {
            var plus = input, minus = input
            plus[i] += step; minus[i] -= step
            let h = Double(plus[i]) - Double(minus[i])  // the step actually taken in Float
            numeric[i] = Float((loss(plus) - loss(minus)) / h)
        }
        assertClose(analytic, numeric, tolerance: tolerance, "\(what) gradient vs finite differences", file: file, line: line)
    }

    func testLinearBackward() {
        var random = SeededValues(seed: 1)
        let rows = 5, inF = 7, outF = 3
        let x = random.values(rows * inF), w = random.values(outF * inF), b = random.values(outF)
        func run(_ x: [Float], _ w: [Float], _ b: [Float]) -> [Float] {
            var out = [Float](repeating: 0, count: rows * outF)
            Kernels.linear(input: x, weight: w, bias: b, output: &out, rows: rows, inFeatures: inF, outFeatures: outF)
            return out
        }
        func grads(_ dy: [Float]) -> (dx: [Float], dw: [Float], db: [Float]) {
            var dx = [Float](repeating: 0, count: x.count), dw = [Float](repeating: 0, count: w.count), db = [Float](repeating: 0, count: b.count)
            Backward.linear(input: x, weight: w, dOutput: dy, dInput: &dx, dWeight: &dw, dBias: &db, rows: rows, inFeatures: inF, outFeatures: outF)
            return (dx, dw, db)
        }
        checkGradient("linear input", input: x, forward: { run($0, w, b) }, backward: { grads($1).dx })
        checkGradient("linear weight", input: w, forward: { run(x, $0, b) }, backward: { grads($1).dw })
        checkGradient("linear bias", input: b, forward: { run(x, w, $0) }, backward: { grads($1).db })
    }

    func testLayerNormBackward() {
        var random = SeededValues(seed: 2)
        let rows = 3, dim = 7
        let x = random.values(rows * dim, scale: 2).map { $0 + 0.3 }
        func run(_ x: [Float]) -> (y: [Float], inverseStd: [Float]) {
            var y = [Float](repeating: 0, count: x.count), s = [Float](repeating: 0, count: rows)
            Kernels.layerNorm(input: x, output: &y, rows: rows, dim: dim, eps: 1e-6, inverseStd: &s)
            return (y, s)
        }
        checkGradient("layerNorm", input: x, forward: { run($0).y }, backward: { x, dy in
            let (y, s) = run(x)
            var dx = [Float](repeating: 0, count: x.count)
            Backward.layerNorm(dOutput: dy, normalized: y, inverseStd: s, dInput: &dx, rows: rows, dim: dim)
            return dx
        })
    }

    func testModulateAndGatedResidualBackward() {
        var random = SeededValues(seed: 3)
        let batch = 2, tokens = 3, dim = 5, stride = 3 * dim  // chunks of a [B, 3D] conditioning buffer
        let x = random.values(batch * tokens * dim), condition = random.values(batch * stride), branch = random.values(batch * tokens * dim)
        func modulated(_ x: [Float], _ c: [Float]) -> [Float] {
            var y = x
            c.withUnsafeBufferPointer { cp in
                Kernels.modulate(&y, batch: batch, tokens: tokens, dim: dim, shift: cp.baseAddress! + dim, scale: cp.baseAddress! + 2 * dim, conditionStride: stride)
            }
            return y
        }
        func modulateGrads(_ dy: [Float]) -> (dx: [Float], dc: [Float]) {
            var dx = [Float](repeating: 0, count: x.count), dc = [Float](repeating: 0, count: condition.count)
            condition.withUnsafeBufferPointer { cp in dc.withUnsafeMutableBufferPointer { dp in
                Backward.modulate(dOutput: dy, input: x, scale: cp.baseAddress! + 2 * dim, dInput: &dx, dShift: dp.baseAddress! + dim,
                                  dScale: dp.baseAddress! + 2 * dim, batch: batch, tokens: tokens, dim: dim, conditionStride: stride)
            } }
            return (dx, dc)
        }
        checkGradient("modulate input", input: x, forward: { modulated($0, condition) }, backward: { modulateGrads($1).dx })
        checkGradient("modulate shift/scale", input: condition, forward: { modulated(x, $0) }, backward: { modulateGrads($1).dc })

        func residual(_ r: [Float], _ branch: [Float], _ c: [Float]) -> [Float] {
            var out = r
            c.withUnsafeBufferPointer { cp in
                Kernels.gatedResidual(&out, branch: branch, gate: cp.baseAddress! + dim, batch: batch, tokens: tokens, dim: dim, conditionStride: stride)
            }
            return out
        }
        func residualGrads(_ dy: [Float]) -> (dBranch: [Float], dc: [Float]) {
            var db = [Float](repeating: 0, count: branch.count), dc = [Float](repeating: 0, count: condition.count)
            condition.withUnsafeBufferPointer { cp in dc.withUnsafeMutableBufferPointer { dp in
                Backward.gatedResidual(dResidual: dy, branch: branch, gate: cp.baseAddress! + dim, dBranch: &db, dGate: dp.baseAddress! + dim,
                                       batch: batch, tokens: tokens, dim: dim, conditionStride: stride)
            } }
            return (db, dc)
        }
        checkGradient("gated residual branch", input: branch, forward: { residual(x, $0, condition) }, backward: { residualGrads($1).dBranch })
        checkGradient("gated residual gate", input: condition, forward: { residual(x, branch, $0) }, backward: { residualGrads($1).dc })
    }

    func testActivationBackward() {
        var random = SeededValues(seed: 4)
        let x = random.values(37, scale: 4)
        checkGradient("geluTanh", input: x, forward: { x in
            var y = x; Kernels.geluTanh(x, &y, count: x.count); return y
        }, backward: { x, dy in
            var dx = [Float](repeating: 0, count: x.count); Backward.geluTanh(input: x, dOutput: dy, dInput: &dx, count: x.count); return dx
        })
        checkGradient("silu", input: x, forward: { x in
            var y = x; Kernels.silu(x, &y, count: x.count); return y
        }, backward: { x, dy in
            var dx = [Float](repeating: 0, count: x.count); Backward.silu(input: x, dOutput: dy, dInput: &dx, count: x.count); return dx
        })
    }

    func testAttentionBackward() {
        var random = SeededValues(seed: 5)
        let batch = 2, tokens = 5, dim = 6, heads = 2
        let qkv = random.values(batch * tokens * 3 * dim, scale: 1.5)
        func run(_ qkv: [Float]) -> (out: [Float], probabilities: [Float]) {
            var out = [Float](repeating: 0, count: batch * tokens * dim), p = [Float](repeating: 0, count: batch * heads * tokens * tokens)
            Kernels.attention(qkv: qkv, output: &out, batch: batch, tokens: tokens, dim: dim, heads: heads, probabilities: &p)
            return (out, p)
        }
        for threads in [1, 2] {
            Parallel.withThreads(threads) {
                checkGradient("attention (\(threads) threads)", input: qkv, forward: { run($0).out }, backward: { qkv, dy in
                    let p = run(qkv).probabilities
                    var dqkv = [Float](repeating: 0, count: qkv.count)
                    Backward.attention(qkv: qkv, probabilities: p, dOutput: dy, dQKV: &dqkv, batch: batch, tokens: tokens, dim: dim, heads: heads)
                    return dqkv
                })
            }
        }
    }

    func testEmbeddingBackwardAccumulatesRepeatedRows() {
        var random = SeededValues(seed: 6)
        let rows = 4, dim = 3, indices = [2, 0, 2]
        let table = random.values(rows * dim)
        checkGradient("embedding", input: table, forward: { t in indices.flatMap { Array(t[($0 * dim)..<(($0 + 1) * dim)]) } },
                      backward: { _, dy in
            var dt = [Float](repeating: 0, count: table.count)
            Backward.embedding(indices: indices, dOutput: dy, dTable: &dt, dim: dim)
            return dt
        })
    }

    func testRearrangementBackwards() {
        var random = SeededValues(seed: 7)
        let batch = 2, channels = 3, height = 6, width = 4, p = 2
        let image = random.values(batch * channels * height * width)
        checkGradient("patchify", input: image, forward: { x in
            var out = [Float](repeating: 0, count: x.count)
            Kernels.patchify(x, &out, batch: batch, channels: channels, height: height, width: width, patch: p); return out
        }, backward: { _, dy in
            var dx = [Float](repeating: 0, count: image.count)
            Backward.patchify(dPatches: dy, dImage: &dx, batch: batch, channels: channels, height: height, width: width, patch: p); return dx
        })
        checkGradient("unpatchify", input: image, forward: { tokens in
            var out = [Float](repeating: 0, count: tokens.count)
            Kernels.unpatchify(tokens, &out, batch: batch, channels: channels, gridRows: height / p, gridCols: width / p, patch: p); return out
        }, backward: { _, dy in
            var dx = [Float](repeating: 0, count: image.count)
            Backward.unpatchify(dImage: dy, dTokens: &dx, batch: batch, channels: channels, gridRows: height / p, gridCols: width / p, patch: p); return dx
        })
        checkGradient("downSquare", input: image, forward: { x in
            var out = [Float](repeating: 0, count: x.count)
            Kernels.downSquare(x, &out, batch: batch, channels: channels, height: height, width: width); return out
        }, backward: { _, dy in
            var dx = [Float](repeating: 0, count: image.count)
            Backward.downSquare(dOutput: dy, dInput: &dx, batch: batch, channels: channels, height: height, width: width); return dx
        })
        checkGradient("downW", input: image, forward: { x in
            var out = [Float](repeating: 0, count: x.count)
            Kernels.downW(x, &out, batch: batch, channels: channels, height: height, width: width); return out
        }, backward: { _, dy in
            var dx = [Float](repeating: 0, count: image.count)
            Backward.downW(dOutput: dy, dInput: &dx, batch: batch, channels: channels, height: height, width: width); return dx
        })
    }

    /// Backward kernels add to what the buffer holds (a tensor used twice collects both uses).
    func testBackwardAccumulates() {
        var random = SeededValues(seed: 8)
        let x = random.values(12, scale: 3), dy = random.values(12)
        var once = [Float](repeating: 0, count: 12), twice = once
        Backward.geluTanh(input: x, dOutput: dy, dInput: &once, count: 12)
        Backward.geluTanh(input: x, dOutput: dy, dInput: &twice, count: 12)
        Backward.geluTanh(input: x, dOutput: dy, dInput: &twice, count: 12)
        assertClose(twice, once.map { 2 * $0 }, tolerance: 1e-7, "accumulation")
    }
}
