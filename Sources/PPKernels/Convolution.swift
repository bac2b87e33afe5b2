#if canImport(Glibc)
import Glibc
#endif

/// Geometry of one 2-D convolution over a single image (batch 1, NCHW), square kernel.
///
/// The input may be upsampled (nearest, x2) before the convolution: the upsampled plane is never
/// stored, the gather reads source pixel (y/2, x/2). Padding is zeros around the (upsampled) plane and
/// may be asymmetric: diffusers' Downsample2D pads (left 0, right 1, top 0, bottom 1) before a stride-2
/// 3x3 convolution without padding.
public struct Conv2DGeometry: Equatable, Sendable {
    public var inChannels: Int
    public var outChannels: Int
    /// The stored input plane (before the optional x2 upsampling).
    public var height: Int
    public var width: Int
    public var kernel: Int
    public var stride: Int
    public var padTop: Int
    public var padLeft: Int
    public var padBottom: Int
    public var padRight: Int
    /// Nearest-neighbour x2 upsampling of the input before the convolution.
    public var upsample: Bool

    public init(inChannels: Int, outChannels: Int, height: Int, width: Int, kernel: Int, stride: Int = 1,
                padTop: Int, padLeft: Int, padBottom: Int, padRight: Int, upsample: Bool = false) {
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.height = height
        self.width = width
        self.kernel = kernel
        self.stride = stride
        self.padTop = padTop
        self.padLeft = padLeft
        self.padBottom = padBottom
        self.padRight = padRight
        self.upsample = upsample
    }

    /// A "same" convolution: stride 1, padding kernel/2 on every side (3x3 pad 1, 1x1 pad 0).
    public static func same(inChannels: Int, outChannels: Int, height: Int, width: Int, kernel: Int,
                            upsample: Bool = false) -> Conv2DGeometry {
        let p = kernel / 2
        return Conv2DGeometry(inChannels: inChannels, outChannels: outChannels, height: height, width: width,
                              kernel: kernel, padTop: p, padLeft: p, padBottom: p, padRight: p, upsample: upsample)
    }

    /// The plane the kernel slides over: the input, or the input upsampled x2.
    public var sourceHeight: Int { upsample ? 2 * height : height }
    public var sourceWidth: Int { upsample ? 2 * width : width }
    public var outHeight: Int { (sourceHeight + padTop + padBottom - kernel) / stride + 1 }
    public var outWidth: Int { (sourceWidth + padLeft + padRight - kernel) / stride + 1 }
    /// Rows of the unrolled (im2col) matrix: one per (input channel, ky, kx), the weight's row length.
    public var patchLength: Int { inChannels * kernel * kernel }
    /// True when the convolution is a plain matrix product over the stored pixels (1x1, stride 1, no padding).
    public var isPointwise: Bool {
        kernel == 1 && stride == 1 && !upsample && padTop == 0 && padLeft == 0 && padBottom == 0 && padRight == 0
    }
}

/// A per-channel affine map, optionally followed by SiLU, applied to a convolution's input as it is
/// read: GroupNorm (folded into scale/shift per channel) + SiLU + conv without storing the normalized
/// activation. Zero padding is applied after the transform, as PyTorch pads the activation it is given.
public struct ChannelTransform {
    /// [inChannels] each
    public var scale: UnsafePointer<Float>
    public var shift: UnsafePointer<Float>
    public var silu: Bool

    public init(scale: UnsafePointer<Float>, shift: UnsafePointer<Float>, silu: Bool) {
        self.scale = scale
        self.shift = shift
        self.silu = silu
    }
}

/// How `Kernels.conv2d` computes a convolution.
public enum ConvolutionAlgorithm: Sendable {
    /// Winograd where it applies and pays, the unrolled product elsewhere.
    case automatic
    /// Winograd F(2x2, 3x3) where it applies (3x3, stride 1), the unrolled product elsewhere.
    case winograd
    /// Always the unrolled (im2col) product.
    case unrolled
}

extension Kernels {
    /// Upper bound, in floats, of the unrolled-patch buffer of one `conv2d` row block (16 MiB). The
    /// whole unrolled matrix would be kernel² times the input (9x for 3x3); blocks of output rows keep
    /// it bounded while giving sgemm products at least a few thousand columns wide on VAE-sized planes.
    public static let convolutionColumnBudget = 1 << 22

    /// output[Cout, Ho·Wo] = weight[Cout, Cin·k·k] · unrolled(transform(input[Cin, H, W])) + bias[Cout],
    /// or += when `accumulate` (output already holds a residual or another branch).
    ///
    /// The unrolled matrix is built in blocks of output rows (`columnBudget` floats at most), each
    /// multiplied with one sgemm whose result lands directly in the output rows of that block. When a
    /// transform is given, the input rows a block needs are transformed once into a staging buffer
    /// (about 1/k² of the unrolled block) and gathered from there, so the transform (an expf for SiLU)
    /// runs once per pixel rather than k² times.
    ///
    /// `algorithm`: `.automatic` takes Winograd's F(2x2, 3x3) (`conv2dWinograd`, 4/9 of the multiplications)
    /// for 3x3 stride-1 convolutions between at least 16 channels, where the sgemm time is; the unrolled
    /// product (always used for other shapes) stays as the plain twin it is tested against.
    public static func conv2d(input: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                              output: UnsafeMutablePointer<Float>, geometry g: Conv2DGeometry,
                              transform: ChannelTransform? = nil, accumulate: Bool = false,
                              algorithm: ConvolutionAlgorithm = .automatic,
                              columnBudget: Int = convolutionColumnBudget, tileBudget: Int = winogradTileBudget) {
        let outPlane = g.outHeight * g.outWidth
        guard outPlane > 0, g.outChannels > 0 else { return }
        let winograd = switch algorithm {
        case .automatic: winogradApplies(g) && g.inChannels >= 16 && g.outChannels >= 16
        case .winograd: winogradApplies(g)
        case .unrolled: false
        }
        if winograd {
            conv2dWinograd(input: input, weight: weight, bias: bias, output: output, geometry: g, transform: transform,
                           accumulate: accumulate, tileBudget: tileBudget)
            return
        }
        if g.isPointwise && transform == nil {
            seedBias(output, bias: bias, channels: g.outChannels, plane: outPlane, columns: 0..<outPlane, accumulate: accumulate)
            BLAS.sgemm(transposeA: false, transposeB: false, m: g.outChannels, n: outPlane, k: g.inChannels,
                       a: weight, lda: g.inChannels, b: input, ldb: g.height * g.width,
                       beta: 1, c: output, ldc: outPlane)
            return
        }
        let wo = g.outWidth, ho = g.outHeight
        // Equal blocks (32 rows in a budget of 28 -> 2 x 16, not 28 + 4): no thin last product.
        let widestBlock = max(1, min(ho, columnBudget / max(1, g.patchLength * wo)))
        let blockCount = (ho + widestBlock - 1) / widestBlock
        let rowsPerBlock = (ho + blockCount - 1) / blockCount
        // Staging holds the input rows one block of output rows reads: [Cin, stagedRows, W].
        let stagedRowsMax = min(g.height, stagedSourceRows(rowsPerBlock, g))
        let staging: UnsafeMutablePointer<Float>? = transform == nil
            ? nil : UnsafeMutablePointer<Float>.allocate(capacity: g.inChannels * stagedRowsMax * g.width)
        defer { staging?.deallocate() }
        // columns[Cin·k·k, rows·Wo] for one block of output rows
        let columns = UnsafeMutablePointer<Float>.allocate(capacity: g.patchLength * rowsPerBlock * wo)
        defer { columns.deallocate() }

        var y0 = 0
        while y0 < ho {
            let rows = min(rowsPerBlock, ho - y0)
            // Input rows [firstRow, lastRow) of the stored plane this block reads.
            let (firstRow, lastRow) = sourceRowRange(outputRows: y0 ..< y0 + rows, g)
            var source = input
            var sourceRowOffset = 0          // stored row held at row 0 of `source`
            var sourceChannelStride = g.height * g.width
            if let transform, let staging, lastRow > firstRow {
                let stagedRows = lastRow - firstRow
                let w = g.width
                Parallel.forChunks(g.inChannels, minimumPerChunk: max(1, 8192 / max(1, stagedRows * w))) { channels in
                    for c in channels {
                        let a = transform.scale[c], b = transform.shift[c]
                        let from = input + (c * g.height + firstRow) * w
                        let to = staging + c * stagedRows * w
                        if transform.silu {
                            for i in 0..<(stagedRows * w) { to[i] = Reference.silu(from[i] * a + b) }
                        } else {
                            for i in 0..<(stagedRows * w) { to[i] = from[i] * a + b }
                        }
                    }
                }
                source = UnsafePointer(staging)
                sourceRowOffset = firstRow
                sourceChannelStride = stagedRows * w
            }
            unroll(source: source, channelStride: sourceChannelStride, rowOffset: sourceRowOffset,
                   columns: columns, outputRows: y0 ..< y0 + rows, geometry: g)
            let block = y0 * wo ..< (y0 + rows) * wo
            seedBias(output, bias: bias, channels: g.outChannels, plane: outPlane, columns: block, accumulate: accumulate)
            BLAS.sgemm(transposeA: false, transposeB: false, m: g.outChannels, n: rows * wo, k: g.patchLength,
                       a: weight, lda: g.patchLength, b: columns, ldb: rows * wo,
                       beta: 1, c: output + y0 * wo, ldc: outPlane)
            y0 += rows
        }
    }

    /// Stored input rows that output rows `rows` read (clamped to the plane; empty when all padding).
    static func sourceRowRange(outputRows rows: Range<Int>, _ g: Conv2DGeometry) -> (Int, Int) {
        let top = rows.lowerBound * g.stride - g.padTop                      // in the (upsampled) source plane
        let bottom = (rows.upperBound - 1) * g.stride + g.kernel - 1 - g.padTop
        let lo = max(0, top), hi = min(g.sourceHeight - 1, bottom)
        guard lo <= hi else { return (0, 0) }
        return g.upsample ? (lo / 2, hi / 2 + 1) : (lo, hi + 1)
    }

    /// Stored rows one block of `rows` output rows can read at most.
    static func stagedSourceRows(_ rows: Int, _ g: Conv2DGeometry) -> Int {
        let span = (rows - 1) * g.stride + g.kernel
        return g.upsample ? span / 2 + 2 : span
    }

    /// output[c, columns] = bias[c] (or += when accumulating; nothing to do without a bias then).
    static func seedBias(_ output: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?, channels: Int, plane: Int,
                         columns: Range<Int>, accumulate: Bool) {
        guard bias != nil || !accumulate else { return }
        Parallel.forChunks(channels, minimumPerChunk: max(1, 16384 / max(1, columns.count))) { range in
            for c in range {
                let row = output + c * plane
                let value = bias?[c] ?? 0
                if accumulate {
                    for i in columns { row[i] += value }
                } else {
                    for i in columns { row[i] = value }
                }
            }
        }
    }

    /// columns[(c·k + ky)·k + kx, r·Wo + ox] = source pixel under kernel tap (ky, kx) of output pixel
    /// (y0 + r, ox), or 0 in the padding. `source` holds stored rows from `rowOffset` on, channels
    /// `channelStride` apart.
    static func unroll(source: UnsafePointer<Float>, channelStride: Int, rowOffset: Int,
                       columns: UnsafeMutablePointer<Float>, outputRows: Range<Int>, geometry g: Conv2DGeometry) {
        let k = g.kernel, wo = g.outWidth, s = g.stride
        let sh = g.sourceHeight, sw = g.sourceWidth
        let rows = outputRows.count
        let up = g.upsample ? 1 : 0                                          // shift from source to stored coordinates
        Parallel.forChunks(g.patchLength, minimumPerChunk: max(1, 4096 / max(1, rows * wo))) { taps in
            for tap in taps {
                let c = tap / (k * k), ky = (tap / k) % k, kx = tap % k
                let line = columns + tap * rows * wo
                // Output columns whose tap lands inside the plane: 0 <= ox·s + kx - padLeft < sw.
                let firstX = min(wo, max(0, (g.padLeft - kx + s - 1) / s))
                let lastReach = sw - 1 - kx + g.padLeft            // ox·s may be at most this
                let endX = lastReach < 0 ? firstX : max(firstX, min(wo, lastReach / s + 1))
                for r in 0..<rows {
                    let out = line + r * wo
                    let iy = (outputRows.lowerBound + r) * s + ky - g.padTop
                    guard iy >= 0 && iy < sh else {
                        out.update(repeating: 0, count: wo)
                        continue
                    }
                    let sourceRow = source + c * channelStride + ((iy >> up) - rowOffset) * g.width
                    if firstX > 0 { out.update(repeating: 0, count: firstX) }
                    if endX < wo { (out + endX).update(repeating: 0, count: wo - endX) }
                    if up == 1 {
                        for ox in firstX..<endX { out[ox] = sourceRow[(ox * s + kx - g.padLeft) >> 1] }
                    } else if s == 1 {
                        (out + firstX).update(from: sourceRow + (firstX + kx - g.padLeft), count: endX - firstX)
                    } else {
                        for ox in firstX..<endX { out[ox] = sourceRow[ox * s + kx - g.padLeft] }
                    }
                }
            }
        }
    }

    // MARK: GroupNorm

    /// GroupNorm statistics of x[C, P] (one image, P pixels) folded with the affine parameters into a
    /// per-channel map: normalized·gamma + beta = x·scale[c] + shift[c]. Mean and variance of each group
    /// are accumulated in Double (two passes), as the groups hold up to C/G·P = 10^6 values.
    public static func groupNormChannelMap(_ x: UnsafePointer<Float>, channels: Int, plane: Int, groups: Int, eps: Float,
                                           gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>,
                                           scale: UnsafeMutablePointer<Float>, shift: UnsafeMutablePointer<Float>) {
        precondition(groups > 0 && channels % groups == 0, "groupNorm: groups must divide channels")
        let perGroup = channels / groups
        let count = perGroup * plane
        Parallel.forChunks(groups) { range in
            for g in range {
                let (mean, inverseStd) = meanAndInverseStd(x + g * count, count, eps)
                for c in (g * perGroup)..<((g + 1) * perGroup) {
                    let a = inverseStd * Double(gamma[c])
                    scale[c] = Float(a)
                    shift[c] = Float(Double(beta[c]) - mean * a)
                }
            }
        }
    }

    /// out[c, p] = x[c, p]·scale[c] + shift[c], then SiLU when asked; in place allowed.
    public static func applyChannelMap(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, channels: Int, plane: Int,
                                       scale: UnsafePointer<Float>, shift: UnsafePointer<Float>, silu: Bool) {
        Parallel.forChunks(channels, minimumPerChunk: max(1, 16384 / max(1, plane))) { range in
            for c in range {
                let a = scale[c], b = shift[c]
                let from = x + c * plane, to = out + c * plane
                if silu {
                    for i in 0..<plane { to[i] = Reference.silu(from[i] * a + b) }
                } else {
                    for i in 0..<plane { to[i] = from[i] * a + b }
                }
            }
        }
    }
}

extension Reference {
    /// The convolution by definition, one output at a time, accumulated in Double: out[Cout, Ho, Wo].
    /// `transform` (per input channel: scale, shift, SiLU) applies to stored pixels before padding and
    /// upsampling, as in `Kernels.conv2d`.
    public static func conv2d(input: [Float], weight: [Float], bias: [Float]?, geometry g: Conv2DGeometry,
                              transform: (scale: [Float], shift: [Float], silu: Bool)? = nil) -> [Float] {
        let k = g.kernel
        func pixel(_ c: Int, _ y: Int, _ x: Int) -> Double {
            // (y, x) in the padded, possibly upsampled plane.
            let sy = y - g.padTop, sx = x - g.padLeft
            guard sy >= 0, sy < g.sourceHeight, sx >= 0, sx < g.sourceWidth else { return 0 }
            let ry = g.upsample ? sy / 2 : sy, rx = g.upsample ? sx / 2 : sx
            var v = input[(c * g.height + ry) * g.width + rx]
            if let transform {
                v = v * transform.scale[c] + transform.shift[c]
                if transform.silu { v = silu(v) }
            }
            return Double(v)
        }
        var out = [Float](repeating: 0, count: g.outChannels * g.outHeight * g.outWidth)
        for o in 0..<g.outChannels {
            for y in 0..<g.outHeight {
                for x in 0..<g.outWidth {
                    var sum = Double(bias?[o] ?? 0)
                    for c in 0..<g.inChannels {
                        for ky in 0..<k {
                            for kx in 0..<k {
                                sum += Double(weight[((o * g.inChannels + c) * k + ky) * k + kx]) * pixel(c, y * g.stride + ky, x * g.stride + kx)
                            }
                        }
                    }
                    out[(o * g.outHeight + y) * g.outWidth + x] = Float(sum)
                }
            }
        }
        return out
    }

    /// GroupNorm by definition on x[C, P] with affine parameters (statistics in Double).
    public static func groupNorm(_ x: [Float], channels: Int, plane: Int, groups: Int, eps: Float,
                                 gamma: [Float], beta: [Float]) -> [Float] {
        var out = x
        let perGroup = channels / groups
        for g in 0..<groups {
            let range = (g * perGroup * plane)..<((g + 1) * perGroup * plane)
            let values = x[range].map(Double.init)
            let mean = values.reduce(0, +) / Double(values.count)
            let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(values.count)
            for i in range {
                let c = i / plane
                out[i] = Float((Double(x[i]) - mean) / (variance + Double(eps)).squareRoot() * Double(gamma[c]) + Double(beta[c]))
            }
        }
        return out
    }
}
