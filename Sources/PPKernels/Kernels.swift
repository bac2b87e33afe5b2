#if canImport(Glibc)
import Glibc
#endif

/// Float32 kernels over raw buffers. Pure functions: every input and output is passed in, nothing is
/// cached, so backward twins can be written next to them. Each has a plain twin in `Reference`.
public enum Kernels {
    // MARK: Linear algebra

    /// output[N, out] = input[N, in] · weight[out, in]ᵀ + bias[out]
    public static func linear(input: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                              output: UnsafeMutablePointer<Float>, rows: Int, inFeatures: Int, outFeatures: Int) {
        var beta: Float = 0
        if let bias {
            // Seed every output row with the bias, then accumulate the product on top (beta = 1).
            Parallel.forChunks(rows, minimumPerChunk: max(1, 16384 / max(outFeatures, 1))) { range in
                for r in range { (output + r * outFeatures).update(from: bias, count: outFeatures) }
            }
            beta = 1
        }
        BLAS.sgemm(transposeA: false, transposeB: true, m: rows, n: outFeatures, k: inFeatures,
                   a: input, lda: inFeatures, b: weight, ldb: inFeatures, beta: beta, c: output, ldc: outFeatures)
    }

    // MARK: Normalization and modulation

    /// LayerNorm without affine parameters over the last dimension: out[N, D] = (x - mean) / sqrt(var + eps).
    /// `mean` / `inverseStd` ([N]) receive the statistics a backward pass needs, when given.
    public static func layerNorm(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, rows: Int, dim: Int,
                                 eps: Float, mean: UnsafeMutablePointer<Float>? = nil,
                                 inverseStd: UnsafeMutablePointer<Float>? = nil) {
        Parallel.forChunks(rows, minimumPerChunk: max(1, 8192 / max(dim, 1))) { range in
            for r in range { layerNormRow(input + r * dim, output + r * dim, dim, eps, mean.map { $0 + r }, inverseStd.map { $0 + r }) }
        }
    }

    /// Mean and 1/sqrt(variance + eps) of x[count], in two passes in Double: the variance does not lose
    /// digits to cancellation (LayerNorm rows, GroupNorm groups of up to 10^6 values).
    @inline(__always)
    static func meanAndInverseStd(_ x: UnsafePointer<Float>, _ count: Int, _ eps: Float) -> (mean: Double, inverseStd: Double) {
        var sum = 0.0
        for i in 0..<count { sum += Double(x[i]) }
        let mean = sum / Double(count)
        var squares = 0.0
        for i in 0..<count { let d = Double(x[i]) - mean; squares += d * d }
        return (mean, 1.0 / (squares / Double(count) + Double(eps)).squareRoot())
    }

    @inline(__always)
    static func layerNormRow(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ dim: Int, _ eps: Float,
                             _ meanOut: UnsafeMutablePointer<Float>?, _ inverseStdOut: UnsafeMutablePointer<Float>?) {
        let (mean, inverseStd) = meanAndInverseStd(x, dim, eps)
        let m = Float(mean), s = Float(inverseStd)
        for i in 0..<dim { y[i] = (x[i] - m) * s }
        meanOut?.pointee = m
        inverseStdOut?.pointee = s
    }

    /// In place on x[B, T, D]: x = x * (1 + scale[b]) + shift[b]. shift/scale rows are `conditionStride` apart
    /// (they are chunks of the adaLN output [B, k·D]).
    public static func modulate(_ x: UnsafeMutablePointer<Float>, batch: Int, tokens: Int, dim: Int,
                                shift: UnsafePointer<Float>, scale: UnsafePointer<Float>, conditionStride: Int) {
        Parallel.forChunks(batch * tokens, minimumPerChunk: max(1, 16384 / max(dim, 1))) { range in
            for row in range {
                let b = row / tokens
                let sh = shift + b * conditionStride, sc = scale + b * conditionStride
                let p = x + row * dim
                for d in 0..<dim { p[d] = p[d] * (1 + sc[d]) + sh[d] }
            }
        }
    }

    /// residual[B, T, D] += gate[b] * branch[B, T, D]; gate rows are `conditionStride` apart.
    public static func gatedResidual(_ residual: UnsafeMutablePointer<Float>, branch: UnsafePointer<Float>,
                                     gate: UnsafePointer<Float>, batch: Int, tokens: Int, dim: Int, conditionStride: Int) {
        Parallel.forChunks(batch * tokens, minimumPerChunk: max(1, 16384 / max(dim, 1))) { range in
            for row in range {
                let g = gate + (row / tokens) * conditionStride
                let r = residual + row * dim, x = branch + row * dim
                for d in 0..<dim { r[d] += g[d] * x[d] }
            }
        }
    }

    // MARK: Activations

    /// GELU, tanh approximation (PyTorch `approximate="tanh"`), out[n] = gelu(x[n]); in place allowed.
    public static func geluTanh(_ input: UnsafePointer<Float>, _ output: UnsafeMutablePointer<Float>, count: Int) {
        Parallel.forChunks(count, minimumPerChunk: 16384) { range in
            for i in range { output[i] = geluTanhFast(input[i]) }
        }
    }

    /// GELU (tanh form) as x·σ(2u), u = √(2/π)(x + 0.044715x³): the same function, since
    /// ½(1 + tanh u) = σ(2u), with one expf instead of glibc's tanhf (whose expm1f took a quarter of the
    /// forward's time). Large |u| saturate correctly: exp overflows to +inf (σ = 0) or underflows to 0 (σ = 1).
    @inline(__always)
    public static func geluTanhFast(_ x: Float) -> Float {
        x * geluSigmoid(x)
    }

    /// σ(2u) of `geluTanhFast`; the backward pass reuses it.
    @inline(__always)
    public static func geluSigmoid(_ x: Float) -> Float {
        let u: Float = 0.7978845608028654 * (x + 0.044715 * x * x * x)
        return 1 / (1 + expf(-2 * u))
    }

    /// SiLU, out[n] = x / (1 + exp(-x)); in place allowed.
    public static func silu(_ input: UnsafePointer<Float>, _ output: UnsafeMutablePointer<Float>, count: Int) {
        Parallel.forChunks(count, minimumPerChunk: 16384) { range in
            for i in range { output[i] = Reference.silu(input[i]) }
        }
    }

    /// In place softmax of every row of x[rows, cols].
    public static func softmaxRows(_ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
        Parallel.forChunks(rows, minimumPerChunk: max(1, 8192 / max(cols, 1))) { range in
            for r in range { softmaxRow(x + r * cols, cols) }
        }
    }

    @inline(__always)
    static func softmaxRow(_ p: UnsafeMutablePointer<Float>, _ n: Int) {
        var maximum = -Float.infinity
        for i in 0..<n { maximum = max(maximum, p[i]) }
        var sum: Float = 0
        for i in 0..<n { let e = expf(p[i] - maximum); p[i] = e; sum += e }
        let inverse = 1 / sum
        for i in 0..<n { p[i] *= inverse }
    }

    // MARK: Attention

    /// Multi-head self-attention: qkv[B, T, 3D] (q, k, v stacked; head h uses columns h·D/H ..< (h+1)·D/H
    /// of each) -> out[B, T, D], scale 1/sqrt(D/H).
    /// `segments`: lengths of consecutive token blocks inside each row (summing to T); tokens attend only
    /// within their block, so samples packed into one row never see each other. nil = one block of T.
    /// `probabilities` ([B, H, T, T], optional): receives the attention weights (zero outside the blocks),
    /// the intermediate a backward pass needs.
    public static func attention(qkv: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, batch: Int, tokens: Int,
                                 dim: Int, heads: Int, segments: [Int]? = nil,
                                 probabilities: UnsafeMutablePointer<Float>? = nil) {
        let headDim = dim / heads
        let blocks = segments ?? [tokens]
        precondition(blocks.reduce(0, +) == tokens && dim % heads == 0, "attention: segments must cover the row")
        var starts: [Int] = []
        var s = 0
        for length in blocks { starts.append(s); s += length }
        let longest = blocks.max() ?? 0
        let scale = 1 / Float(headDim).squareRoot()
        if let probabilities { probabilities.initialize(repeating: 0, count: batch * heads * tokens * tokens) }
        let tasks = batch * heads
        // Scores for one task at a time per thread: [longest, longest].
        let threads = min(Parallel.threads, tasks)
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: max(1, threads * longest * longest))
        defer { scratch.deallocate() }
        let perThread = (tasks + threads - 1) / threads
        Parallel.withSingleThreadedBLAS {
            Parallel.forEach(threads) { worker in
                let scores = scratch + worker * longest * longest
                for task in (worker * perThread)..<min(tasks, (worker + 1) * perThread) {
                    let b = task / heads, h = task % heads
                    let rowBase = qkv + b * tokens * 3 * dim
                    for (blockIndex, length) in blocks.enumerated() {
                        let start = starts[blockIndex]
                        let q = rowBase + start * 3 * dim + h * headDim
                        let k = q + dim, v = q + 2 * dim
                        // scores[i, j] = scale · q_i · k_j
                        BLAS.sgemm(transposeA: false, transposeB: true, m: length, n: length, k: headDim, alpha: scale,
                                   a: q, lda: 3 * dim, b: k, ldb: 3 * dim, beta: 0, c: scores, ldc: length)
                        for i in 0..<length { softmaxRow(scores + i * length, length) }
                        // out[i, h·hd ..< (h+1)·hd] = Σ_j p[i, j] v_j
                        BLAS.sgemm(transposeA: false, transposeB: false, m: length, n: headDim, k: length,
                                   a: scores, lda: length, b: v, ldb: 3 * dim, beta: 0,
                                   c: output + (b * tokens + start) * dim + h * headDim, ldc: dim)
                        if let probabilities {
                            let base = probabilities + ((b * heads + h) * tokens + start) * tokens + start
                            for i in 0..<length { (base + i * tokens).update(from: scores + i * length, count: length) }
                        }
                    }
                }
            }
        }
    }

    // MARK: Embeddings

    /// Sinusoidal time features out[B, 2·half] = [cos(t·f_k), sin(t·f_k)], f_k = exp(-ln(maxPeriod)·k/divisor),
    /// computed in float32 step by step as PyTorch does (divisor 128 original DiT/SiT, 127 diffusers).
    public static func timestepFeatures(_ t: UnsafePointer<Float>, count: Int, output: UnsafeMutablePointer<Float>,
                                        half: Int = 128, divisor: Float = 128, maxPeriod: Double = 10000) {
        let frequencies = timestepFrequencies(half: half, divisor: divisor, maxPeriod: maxPeriod)
        for b in 0..<count {
            let row = output + b * 2 * half
            for k in 0..<half {
                let argument = t[b] * frequencies[k]  // float32 product, as torch
                row[k] = Float(cos(Double(argument)))
                row[half + k] = Float(sin(Double(argument)))
            }
        }
    }

    /// f_k as float32: (Float(-ln(maxPeriod)) · k) / divisor, then exp.
    public static func timestepFrequencies(half: Int, divisor: Float, maxPeriod: Double = 10000) -> [Float] {
        let negativeLog = Float(-log(maxPeriod))
        return (0..<half).map { k in
            let exponent = (negativeLog * Float(k)) / divisor
            return Float(exp(Double(exponent)))
        }
    }

    /// 2-D sin-cos position table [rows·cols, dim] (MAE recipe as used by DiT/SiT/PPFlow): token (i, j)
    /// sits at row position i·rowStride and column position j·colStride; the first dim/2 values encode the
    /// column position, the last dim/2 the row position; each half is [sin(q·ω_k), cos(q·ω_k)],
    /// ω_k = 10000^(-k/(dim/4)). Computed in Double, stored as Float.
    public static func sinCosPositionTable(dim: Int, rows: Int, cols: Int, rowStride: Int = 1, colStride: Int = 1) -> [Float] {
        precondition(dim % 4 == 0, "position table needs dim divisible by 4")
        let quarter = dim / 4
        let omega = (0..<quarter).map { 1.0 / pow(10000.0, Double($0) / Double(quarter)) }
        var table = [Float](repeating: 0, count: rows * cols * dim)
        for i in 0..<rows {
            for j in 0..<cols {
                let base = (i * cols + j) * dim
                let columnPosition = Double(j * colStride), rowPosition = Double(i * rowStride)
                for k in 0..<quarter {
                    table[base + k] = Float(sin(columnPosition * omega[k]))
                    table[base + quarter + k] = Float(cos(columnPosition * omega[k]))
                    table[base + 2 * quarter + k] = Float(sin(rowPosition * omega[k]))
                    table[base + 3 * quarter + k] = Float(cos(rowPosition * omega[k]))
                }
            }
        }
        return table
    }

    // MARK: Patches

    /// x[B, C, H, W] -> patches[B, (H/p)·(W/p), C·p·p], token m = row·(W/p) + col, features in (c, i, j)
    /// order, so a stride-p conv with weight [D, C, p, p] is `linear` with weight [D, C·p·p].
    public static func patchify(_ x: UnsafePointer<Float>, _ patches: UnsafeMutablePointer<Float>,
                                batch: Int, channels: Int, height: Int, width: Int, patch p: Int) {
        let gh = height / p, gw = width / p, features = channels * p * p
        Parallel.forChunks(batch * gh, minimumPerChunk: 4) { range in
            for bRow in range {
                let b = bRow / gh, row = bRow % gh
                for col in 0..<gw {
                    let out = patches + ((b * gh + row) * gw + col) * features
                    for c in 0..<channels {
                        for i in 0..<p {
                            let src = x + ((b * channels + c) * height + row * p + i) * width + col * p
                            for j in 0..<p { out[(c * p + i) * p + j] = src[j] }
                        }
                    }
                }
            }
        }
    }

    /// tokens[B, gh·gw, p·p·c] read as (B, gh, gw, p, p, c) -> image[B, c, gh·p, gw·p] (`nhwpqc -> nchpwq`).
    public static func unpatchify(_ tokens: UnsafePointer<Float>, _ image: UnsafeMutablePointer<Float>,
                                  batch: Int, channels c: Int, gridRows gh: Int, gridCols gw: Int, patch p: Int) {
        let height = gh * p, width = gw * p
        Parallel.forChunks(batch * gh, minimumPerChunk: 4) { range in
            for bRow in range {
                let b = bRow / gh, row = bRow % gh
                for col in 0..<gw {
                    let src = tokens + ((b * gh + row) * gw + col) * p * p * c
                    for u in 0..<p {
                        for v in 0..<p {
                            for ch in 0..<c {
                                image[((b * c + ch) * height + row * p + u) * width + col * p + v] = src[(u * p + v) * c + ch]
                            }
                        }
                    }
                }
            }
        }
    }

    // MARK: Pyramid rearrangements (lossless pixel-unshuffles of PPFlow)

    /// x[B, C, H, W] -> out[B, 4C, H/2, W/2], out[4c + 2a + b', y, x'] = in[c, 2y + a, 2x' + b'].
    public static func downSquare(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, batch: Int, channels: Int, height: Int, width: Int) {
        let h2 = height / 2, w2 = width / 2
        for bc in 0..<(batch * channels) {
            let src = x + bc * height * width
            for a in 0..<2 { for b in 0..<2 {
                let dst = out + (bc * 4 + 2 * a + b) * h2 * w2
                for y in 0..<h2 { for xx in 0..<w2 { dst[y * w2 + xx] = src[(2 * y + a) * width + 2 * xx + b] } }
            } }
        }
    }

    /// Inverse of `downSquare`: x[B, 4C, H/2, W/2] -> out[B, C, H, W].
    public static func upSquare(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, batch: Int, channels: Int, height: Int, width: Int) {
        let h2 = height / 2, w2 = width / 2
        for bc in 0..<(batch * channels) {
            let dst = out + bc * height * width
            for a in 0..<2 { for b in 0..<2 {
                let src = x + (bc * 4 + 2 * a + b) * h2 * w2
                for y in 0..<h2 { for xx in 0..<w2 { dst[(2 * y + a) * width + 2 * xx + b] = src[y * w2 + xx] } }
            } }
        }
    }

    /// x[B, C, H, W] -> out[B, 2C, H, W/2], out[2c + j, y, x'] = in[c, y, 2x' + j].
    public static func downW(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, batch: Int, channels: Int, height: Int, width: Int) {
        let w2 = width / 2
        for bc in 0..<(batch * channels) {
            let src = x + bc * height * width
            for j in 0..<2 {
                let dst = out + (bc * 2 + j) * height * w2
                for y in 0..<height { for xx in 0..<w2 { dst[y * w2 + xx] = src[y * width + 2 * xx + j] } }
            }
        }
    }

    /// Inverse of `downW`: x[B, 2C, H, W/2] -> out[B, C, H, W].
    public static func upW(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, batch: Int, channels: Int, height: Int, width: Int) {
        let w2 = width / 2
        for bc in 0..<(batch * channels) {
            let dst = out + bc * height * width
            for j in 0..<2 {
                let src = x + (bc * 2 + j) * height * w2
                for y in 0..<height { for xx in 0..<w2 { dst[y * width + 2 * xx + j] = src[y * w2 + xx] } }
            }
        }
    }
}
