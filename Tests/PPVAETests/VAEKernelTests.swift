import PPKernels
import PPTensor
import PPTestSupport
import XCTest

/// The blocked im2col convolution and the GroupNorm channel map against their plain twins in
/// `Reference`, on odd sizes, with row blocks small enough that every case runs several of them.
final class VAEKernelTests: XCTestCase {
    // Every test runs in its own thread scope (1 unless it says otherwise); nothing to restore.
    override func invokeTest() { Parallel.withThreads(1) { super.invokeTest() } }

    private func values(_ count: Int, _ random: inout SeededRandom, scale: Double = 1) -> [Float] {
        (0..<count).map { _ in Float(random.normal() * scale) }
    }

    /// Runs the fast convolution (optionally over `initial` output contents) and the reference.
    private func compare(_ g: Conv2DGeometry, transform: Bool, accumulate: Bool, bias: Bool, budget: Int,
                         algorithm: ConvolutionAlgorithm = .unrolled, file: StaticString = #filePath, line: UInt = #line) {
        var random = SeededRandom(seed: UInt64(g.inChannels * 1000 + g.height * 10 + g.width))
        let input = values(g.inChannels * g.height * g.width, &random)                          // [Cin, H, W]
        let weight = values(g.outChannels * g.patchLength, &random, scale: 0.3)                  // [Cout, Cin·k·k]
        let biasValues = bias ? values(g.outChannels, &random) : nil                              // [Cout]
        let scale = values(g.inChannels, &random), shift = values(g.inChannels, &random)         // [Cin] each
        let outCount = g.outChannels * g.outHeight * g.outWidth
        let initial = accumulate ? values(outCount, &random) : [Float](repeating: .nan, count: outCount)
        var fast = initial                                                                         // [Cout, Ho, Wo]
        scale.withUnsafeBufferPointer { s in shift.withUnsafeBufferPointer { b in
            let map = transform ? ChannelTransform(scale: s.baseAddress!, shift: b.baseAddress!, silu: true) : nil
            biasValues.withOptionalPointer { biasPointer in
                fast.withUnsafeMutableBufferPointer { out in
                    Kernels.conv2d(input: input, weight: weight, bias: biasPointer, output: out.baseAddress!, geometry: g,
                                   transform: map, accumulate: accumulate, algorithm: algorithm,
                                   columnBudget: budget, tileBudget: budget)
                }
            }
        } }
        var expected = Reference.conv2d(input: input, weight: weight, bias: biasValues, geometry: g,
                                        transform: transform ? (scale, shift, true) : nil)
        if accumulate { for i in expected.indices { expected[i] += initial[i] } }
        assertClose(fast, expected, tolerance: 1e-5, "conv \(g) \(algorithm)", file: file, line: line)
    }

    /// Winograd F(2x2, 3x3) against the definition: odd and even planes (a last tile half outside),
    /// padding on some sides only, the upsampled plane, the folded GroupNorm+SiLU, accumulation, and tile
    /// budgets small enough for one tile row per block.
    func testWinogradConvolutionEqualsReference() {
        for threads in [1, 2] {
            Parallel.withThreads(threads) {
                let odd = Conv2DGeometry.same(inChannels: 5, outChannels: 7, height: 9, width: 11, kernel: 3)
                compare(odd, transform: true, accumulate: false, bias: true, budget: 1, algorithm: .winograd)
                compare(odd, transform: false, accumulate: true, bias: false, budget: 16 * 7 * 6 * 2, algorithm: .winograd)
                compare(odd, transform: true, accumulate: true, bias: true, budget: 1 << 20, algorithm: .winograd)
                let even = Conv2DGeometry.same(inChannels: 16, outChannels: 16, height: 8, width: 6, kernel: 3)
                compare(even, transform: false, accumulate: false, bias: true, budget: 16 * 16 * 3 * 2, algorithm: .automatic)
                let up = Conv2DGeometry.same(inChannels: 3, outChannels: 5, height: 5, width: 6, kernel: 3, upsample: true)
                compare(up, transform: true, accumulate: false, bias: true, budget: 16 * 5 * 6, algorithm: .winograd)
                compare(up, transform: false, accumulate: true, bias: true, budget: 1, algorithm: .winograd)
                let lopsided = Conv2DGeometry(inChannels: 4, outChannels: 3, height: 7, width: 6, kernel: 3,
                                              padTop: 0, padLeft: 2, padBottom: 1, padRight: 0)
                XCTAssertEqual([lopsided.outHeight, lopsided.outWidth], [6, 6])
                compare(lopsided, transform: true, accumulate: false, bias: true, budget: 1, algorithm: .winograd)
                let tiny = Conv2DGeometry.same(inChannels: 2, outChannels: 3, height: 1, width: 1, kernel: 3)
                compare(tiny, transform: true, accumulate: false, bias: true, budget: 1 << 20, algorithm: .winograd)
            }
        }
    }

    func testFastConvolutionEqualsReference() {
        for threads in [1, 2] {
            Parallel.withThreads(threads) {
                // 3x3 pad 1 with GroupNorm+SiLU folded in, 2 output rows per block.
                let same = Conv2DGeometry.same(inChannels: 5, outChannels: 7, height: 9, width: 11, kernel: 3)
                compare(same, transform: true, accumulate: false, bias: true, budget: same.patchLength * 11 * 2)
                compare(same, transform: false, accumulate: true, bias: false, budget: same.patchLength * 11 * 3)
                compare(same, transform: true, accumulate: true, bias: true, budget: 1)                 // one row per block
                // diffusers Downsample2D: pad right and bottom by 1, 3x3 stride 2 without padding.
                let down = Conv2DGeometry(inChannels: 4, outChannels: 6, height: 10, width: 8, kernel: 3, stride: 2,
                                          padTop: 0, padLeft: 0, padBottom: 1, padRight: 1)
                XCTAssertEqual([down.outHeight, down.outWidth], [5, 4])
                compare(down, transform: false, accumulate: false, bias: true, budget: down.patchLength * 4 * 2)
                // Upsample2D: nearest x2 then 3x3 pad 1, the upsampled plane never stored.
                let up = Conv2DGeometry.same(inChannels: 3, outChannels: 5, height: 5, width: 6, kernel: 3, upsample: true)
                XCTAssertEqual([up.outHeight, up.outWidth], [10, 12])
                compare(up, transform: false, accumulate: false, bias: true, budget: up.patchLength * 12 * 3)
                compare(up, transform: true, accumulate: false, bias: true, budget: up.patchLength * 12)
                // 1x1: a plain product (shortcut, quant convs), and through the gather when transformed.
                let pointwise = Conv2DGeometry.same(inChannels: 6, outChannels: 4, height: 3, width: 7, kernel: 1)
                compare(pointwise, transform: false, accumulate: false, bias: true, budget: 1 << 20)
                compare(pointwise, transform: false, accumulate: true, bias: true, budget: 1 << 20)
                compare(pointwise, transform: true, accumulate: false, bias: true, budget: 6 * 7)
                // A plane smaller than the kernel's reach: all-padding taps.
                let tiny = Conv2DGeometry.same(inChannels: 2, outChannels: 3, height: 1, width: 1, kernel: 3)
                compare(tiny, transform: true, accumulate: false, bias: true, budget: 1 << 20)
            }
        }
    }

    func testGroupNormChannelMapEqualsReference() {
        var random = SeededRandom(seed: 5)
        let channels = 12, plane = 35, groups = 3
        let x = values(channels * plane, &random, scale: 3).map { $0 + 2 }                      // [C, P], off-centre
        let gamma = values(channels, &random), beta = values(channels, &random)
        var scale = [Float](repeating: 0, count: channels), shift = scale
        Kernels.groupNormChannelMap(x, channels: channels, plane: plane, groups: groups, eps: 1e-6,
                                    gamma: gamma, beta: beta, scale: &scale, shift: &shift)
        var fast = [Float](repeating: 0, count: channels * plane)
        Kernels.applyChannelMap(x, &fast, channels: channels, plane: plane, scale: scale, shift: shift, silu: false)
        let expected = Reference.groupNorm(x, channels: channels, plane: plane, groups: groups, eps: 1e-6, gamma: gamma, beta: beta)
        assertClose(fast, expected, tolerance: 1e-6, "group norm")
        Kernels.applyChannelMap(x, &fast, channels: channels, plane: plane, scale: scale, shift: shift, silu: true)
        assertClose(fast, expected.map(Reference.silu), tolerance: 1e-6, "group norm + silu")
    }
}

extension Optional where Wrapped == [Float] {
    /// The array's base address for the duration of `body`, or nil.
    func withOptionalPointer<R>(_ body: (UnsafePointer<Float>?) -> R) -> R {
        switch self {
        case .some(let array): return array.withUnsafeBufferPointer { body($0.baseAddress) }
        case .none: return body(nil)
        }
    }
}
