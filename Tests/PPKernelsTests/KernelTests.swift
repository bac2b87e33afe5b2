import XCTest
import PPKernels

final class KernelTests: XCTestCase {
    // Every test runs in its own thread scope (1 unless it says otherwise); nothing to restore.
    override func invokeTest() { Parallel.withThreads(1) { super.invokeTest() } }

    /// Fast and reference kernels agree on shapes that are no multiple of any tile, with 1 and 2 threads.
    func testLinearMatchesReference() {
        var random = SeededValues(seed: 1)
        let rows = 37, inFeatures = 29, outFeatures = 53
        let x = random.values(rows * inFeatures), w = random.values(outFeatures * inFeatures), b = random.values(outFeatures)
        for threads in [1, 2] {
            Parallel.withThreads(threads) {
                for bias in [b, nil] as [[Float]?] {
                    var out = [Float](repeating: .nan, count: rows * outFeatures)
                    x.withUnsafeBufferPointer { xp in w.withUnsafeBufferPointer { wp in out.withUnsafeMutableBufferPointer { op in
                        if let bias {
                            bias.withUnsafeBufferPointer { Kernels.linear(input: xp.baseAddress!, weight: wp.baseAddress!, bias: $0.baseAddress!, output: op.baseAddress!, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures) }
                        } else {
                            Kernels.linear(input: xp.baseAddress!, weight: wp.baseAddress!, bias: nil, output: op.baseAddress!, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures)
                        }
                    } } }
                    let expected = Reference.linear(input: x, weight: w, bias: bias, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures)
                    assertClose(out, expected, tolerance: 1e-6, "linear threads \(threads) bias \(bias != nil)")
                }
            }
        }
    }

    func testLayerNormModulateResidualMatchReference() {
        var random = SeededValues(seed: 2)
        let batch = 3, tokens = 11, dim = 77
        let x = random.values(batch * tokens * dim, scale: 3).map { $0 + 0.5 }
        let shift = random.values(batch * 2 * dim), branch = random.values(batch * tokens * dim)
        Parallel.withThreads(2) {
            var normed = [Float](repeating: 0, count: x.count)
            var means = [Float](repeating: 0, count: batch * tokens), inverseStd = means
            x.withUnsafeBufferPointer { xp in normed.withUnsafeMutableBufferPointer { np in
                means.withUnsafeMutableBufferPointer { mp in inverseStd.withUnsafeMutableBufferPointer { sp in
                    Kernels.layerNorm(input: xp.baseAddress!, output: np.baseAddress!, rows: batch * tokens, dim: dim, eps: 1e-6,
                                      mean: mp.baseAddress!, inverseStd: sp.baseAddress!)
                } }
            } }
            let expectedNorm = Reference.layerNorm(x, rows: batch * tokens, dim: dim, eps: 1e-6)
            assertClose(normed, expectedNorm, tolerance: 1e-6, "layerNorm")
            let firstRowSum: Float = x[0..<dim].reduce(0, +)
            let firstRowMean = firstRowSum / Float(dim)
            XCTAssertEqual(means[0], firstRowMean, accuracy: 1e-5)

            // shift/scale/gate live as chunks of a [B, 2D] conditioning buffer: stride 2D.
            var modulated = normed
            var residual = x
            shift.withUnsafeBufferPointer { cp in
                modulated.withUnsafeMutableBufferPointer { mp in
                    Kernels.modulate(mp.baseAddress!, batch: batch, tokens: tokens, dim: dim, shift: cp.baseAddress!,
                                     scale: cp.baseAddress! + dim, conditionStride: 2 * dim)
                }
                residual.withUnsafeMutableBufferPointer { rp in branch.withUnsafeBufferPointer { bp in
                    Kernels.gatedResidual(rp.baseAddress!, branch: bp.baseAddress!, gate: cp.baseAddress! + dim,
                                          batch: batch, tokens: tokens, dim: dim, conditionStride: 2 * dim)
                } }
            }
            var shiftRows: [Float] = [], scaleRows: [Float] = []
            for b in 0..<batch {
                let rowStart: Int = b * 2 * dim
                shiftRows += shift[rowStart..<(rowStart + dim)]
                scaleRows += shift[(rowStart + dim)..<(rowStart + 2 * dim)]
            }
            assertClose(modulated, Reference.modulate(normed, batch: batch, tokens: tokens, dim: dim, shift: shiftRows, scale: scaleRows),
                        tolerance: 1e-7, "modulate")
            assertClose(residual, Reference.gatedResidual(x, branch: branch, gate: scaleRows, batch: batch, tokens: tokens, dim: dim),
                        tolerance: 1e-7, "gatedResidual")
        }
    }

    func testActivationsAndSoftmax() {
        var random = SeededValues(seed: 3)
        let x = random.values(20011, scale: 6)
        Parallel.withThreads(2) {
            var gelu = x, silu = x
            gelu.withUnsafeMutableBufferPointer { Kernels.geluTanh($0.baseAddress!, $0.baseAddress!, count: x.count) }
            silu.withUnsafeMutableBufferPointer { Kernels.silu($0.baseAddress!, $0.baseAddress!, count: x.count) }
            // Independent closed forms in Double.
            let geluExpected = x.map { v -> Float in let d = Double(v); return Float(0.5 * d * (1 + tanh((2 / Double.pi).squareRoot() * (d + 0.044715 * d * d * d)))) }
            let siluExpected = x.map { v -> Float in let d = Double(v); return Float(d / (1 + exp(-d))) }
            assertClose(gelu, geluExpected, tolerance: 1e-6, "gelu")
            assertClose(silu, siluExpected, tolerance: 1e-6, "silu")
            XCTAssertEqual(Reference.geluTanh(0), 0)

            let rows = 13, cols = 31
            var scores = random.values(rows * cols, scale: 20)
            let expected = Reference.softmaxRows(scores, rows: rows, cols: cols)
            scores.withUnsafeMutableBufferPointer { Kernels.softmaxRows($0.baseAddress!, rows: rows, cols: cols) }
            assertClose(scores, expected, tolerance: 1e-6, "softmax")
        }
    }

    /// Fast attention (per-head sgemm, parallel heads, packed segments) against the masked definition.
    func testAttentionMatchesReference() {
        var random = SeededValues(seed: 4)
        let batch = 3, tokens = 23, dim = 30, heads = 5
        let qkv = random.values(batch * tokens * 3 * dim, scale: 2)
        for threads in [1, 2] {
            Parallel.withThreads(threads) {
                for segments in [nil, [7, 9, 7]] as [[Int]?] {
                    var out = [Float](repeating: .nan, count: batch * tokens * dim)
                    var probabilities = [Float](repeating: .nan, count: batch * heads * tokens * tokens)
                    qkv.withUnsafeBufferPointer { q in out.withUnsafeMutableBufferPointer { o in probabilities.withUnsafeMutableBufferPointer { p in
                        Kernels.attention(qkv: q.baseAddress!, output: o.baseAddress!, batch: batch, tokens: tokens, dim: dim, heads: heads,
                                          segments: segments, probabilities: p.baseAddress!)
                    } } }
                    let expected = Reference.attention(qkv: qkv, batch: batch, tokens: tokens, dim: dim, heads: heads, segments: segments)
                    assertClose(out, expected, tolerance: 1e-6, "attention threads \(threads) segments \(String(describing: segments))")
                    // Every query row's weights sum to one, and nothing leaks across segments.
                    let row = Array(probabilities[(tokens * 8)..<(tokens * 9)])  // batch 0, head 0, query 8
                    XCTAssertEqual(row.reduce(0, +), 1, accuracy: 1e-5)
                    if segments != nil { XCTAssertEqual(row[0..<7].reduce(0, +), 0); XCTAssertEqual(row[16..<23].reduce(0, +), 0) }
                }
            }
        }
        // A packed row equals running its segments as separate samples.
        Parallel.withThreads(2) {
            let packed = Reference.attention(qkv: qkv, batch: 1, tokens: tokens, dim: dim, heads: heads, segments: [7, 16])
            let alone = Reference.attention(qkv: Array(qkv[(7 * 3 * dim)..<(tokens * 3 * dim)]), batch: 1, tokens: 16, dim: dim, heads: heads)
            assertClose(Array(packed[(7 * dim)...]), alone, tolerance: 1e-12, "packed segment")
        }
    }

    func testTimestepFeatures() {
        let t: [Float] = [0, 0.37, 999]
        var out = [Float](repeating: 0, count: 3 * 256)
        t.withUnsafeBufferPointer { tp in out.withUnsafeMutableBufferPointer { Kernels.timestepFeatures(tp.baseAddress!, count: 3, output: $0.baseAddress!) } }
        // cos first: t = 0 gives ones then zeros.
        XCTAssertEqual(Array(out[0..<128]), [Float](repeating: 1, count: 128))
        XCTAssertEqual(Array(out[128..<256]), [Float](repeating: 0, count: 128))
        // Against the formula in Double: f_k = 10000^(-k/128).
        let expected = (0..<128).map { cos(0.37 * pow(10000.0, -Double($0) / 128)) } + (0..<128).map { sin(0.37 * pow(10000.0, -Double($0) / 128)) }
        assertClose(Array(out[256..<512]), expected.map(Float.init), tolerance: 1e-6, "time features t=0.37")
        // diffusers' shift: divisor 127 makes the last frequency exactly 1/10000.
        let diffusers = Kernels.timestepFrequencies(half: 128, divisor: 127)
        XCTAssertEqual(Double(diffusers[127]), 1e-4, accuracy: 1e-10)
        XCTAssertEqual(Double(Kernels.timestepFrequencies(half: 128, divisor: 128)[127]), pow(10000.0, -127.0 / 128), accuracy: 1e-9)
    }

    func testPositionTable() {
        // dim 8: quarter 2, ω = [1, 0.01]; first half encodes the column, second half the row.
        let table = Kernels.sinCosPositionTable(dim: 8, rows: 2, cols: 3, rowStride: 2, colStride: 1)
        let token = 1 * 3 + 2  // row 1 (position 2), column 2 (position 2)
        let expected: [Double] = [sin(2), sin(0.02), cos(2), cos(0.02), sin(2), sin(0.02), cos(2), cos(0.02)]
        assertClose(Array(table[(token * 8)..<(token * 8 + 8)]), expected.map(Float.init), tolerance: 1e-7, "pos (1,2)")
        let token01 = 1  // row 0, column 1
        let expected01: [Double] = [sin(1), sin(0.01), cos(1), cos(0.01), 0, 0, 1, 1]
        assertClose(Array(table[(token01 * 8)..<(token01 * 8 + 8)]), expected01.map(Float.init), tolerance: 1e-7, "pos (0,1)")
    }

    func testPatchifyAndUnpatchifyOrders() {
        let batch = 2, channels = 3, height = 4, width = 6, p = 2
        let x = (0..<(batch * channels * height * width)).map { Float($0) }
        var patches = [Float](repeating: 0, count: x.count)
        x.withUnsafeBufferPointer { xp in patches.withUnsafeMutableBufferPointer {
            Kernels.patchify(xp.baseAddress!, $0.baseAddress!, batch: batch, channels: channels, height: height, width: width, patch: p)
        } }
        // Token (b=1, row 1, col 2) feature (c=2, i=1, j=0) = x[1, 2, 3, 4].
        let features = channels * p * p
        let token = (1 * 2 + 1) * 3 + 2
        XCTAssertEqual(patches[token * features + (2 * p + 1) * p + 0], x[((1 * channels + 2) * height + 3) * width + 4])
        // Unpatchify reads features in (i, j, c) order.
        var image = [Float](repeating: 0, count: x.count)
        patches.withUnsafeBufferPointer { pp in image.withUnsafeMutableBufferPointer {
            Kernels.unpatchify(pp.baseAddress!, $0.baseAddress!, batch: batch, channels: channels, gridRows: 2, gridCols: 3, patch: p)
        } }
        // image[b=1, ch=2, 2·1+1, 2·2+0] = tokens[b=1, row 1, col 2, u=1, v=0, ch=2]
        XCTAssertEqual(image[((1 * channels + 2) * height + 3) * width + 4], patches[token * features + (1 * p + 0) * channels + 2])
    }

    func testPyramidRearrangementsInvertAndFollowTheChannelOrder() {
        let batch = 2, channels = 3, height = 4, width = 6
        let x = (0..<(batch * channels * height * width)).map { Float($0) }
        var down = x, back = x
        x.withUnsafeBufferPointer { xp in down.withUnsafeMutableBufferPointer { Kernels.downSquare(xp.baseAddress!, $0.baseAddress!, batch: batch, channels: channels, height: height, width: width) } }
        // out[4c + 2a + b, y, x'] = in[c, 2y + a, 2x' + b] with c=1, a=1, b=0, y=1, x'=2 (batch 1).
        let squareOut: Int = ((1 * 12 + 4 * 1 + 2) * 2 + 1) * 3 + 2
        let squareIn: Int = ((1 * 3 + 1) * 4 + 3) * 6 + 4
        XCTAssertEqual(down[squareOut], x[squareIn])
        down.withUnsafeBufferPointer { dp in back.withUnsafeMutableBufferPointer { Kernels.upSquare(dp.baseAddress!, $0.baseAddress!, batch: batch, channels: channels, height: height, width: width) } }
        XCTAssertEqual(back, x)
        x.withUnsafeBufferPointer { xp in down.withUnsafeMutableBufferPointer { Kernels.downW(xp.baseAddress!, $0.baseAddress!, batch: batch, channels: channels, height: height, width: width) } }
        // out[2c + j, y, x'] = in[c, y, 2x' + j] with c=2, j=1, y=3, x'=1 (batch 0).
        let widthOut: Int = ((0 * 6 + 2 * 2 + 1) * 4 + 3) * 3 + 1
        let widthIn: Int = ((0 * 3 + 2) * 4 + 3) * 6 + 3
        XCTAssertEqual(down[widthOut], x[widthIn])
        back = [Float](repeating: 0, count: x.count)
        down.withUnsafeBufferPointer { dp in back.withUnsafeMutableBufferPointer { Kernels.upW(dp.baseAddress!, $0.baseAddress!, batch: batch, channels: channels, height: height, width: width) } }
        XCTAssertEqual(back, x)
    }
}
