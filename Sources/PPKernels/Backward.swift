#if canImport(Glibc)
import Glibc
#endif

/// Backward twins of `Kernels`. Every gradient output ACCUMULATES (`+=`) into its buffer, so a tensor
/// used twice (a residual stream, the conditioning vector shared by all blocks) collects both uses;
/// the caller zeroes gradient buffers once per step.
public enum Backward {
    // MARK: Linear algebra

    /// Backward of output[N, out] = input[N, in] · weight[out, in]ᵀ + bias[out], given dOutput[N, out]:
    /// dInput[N, in] += dOutput · weight; dWeight[out, in] += dOutputᵀ · input; dBias[out] += Σ_rows dOutput.
    public static func linear(input: UnsafePointer<Float>, weight: UnsafePointer<Float>, dOutput: UnsafePointer<Float>,
                              dInput: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>?,
                              dBias: UnsafeMutablePointer<Float>?, rows: Int, inFeatures: Int, outFeatures: Int) {
        if let dInput {
            BLAS.sgemm(transposeA: false, transposeB: false, m: rows, n: inFeatures, k: outFeatures,
                       a: dOutput, lda: outFeatures, b: weight, ldb: inFeatures, beta: 1, c: dInput, ldc: inFeatures)
        }
        if let dWeight {
            BLAS.sgemm(transposeA: true, transposeB: false, m: outFeatures, n: inFeatures, k: rows,
                       a: dOutput, lda: outFeatures, b: input, ldb: inFeatures, beta: 1, c: dWeight, ldc: inFeatures)
        }
        if let dBias {
            // Column sums, split over output columns so threads write disjoint memory.
            Parallel.forChunks(outFeatures, minimumPerChunk: 64) { columns in
                for r in 0..<rows {
                    let row = dOutput + r * outFeatures
                    for o in columns { dBias[o] += row[o] }
                }
            }
        }
    }

    // MARK: Normalization and modulation

    /// Backward of LayerNorm without affine: with x̂ = normalized[N, D] and inverseStd[N] saved by the forward,
    /// dInput[N, D] += inverseStd · (dOutput - mean(dOutput) - x̂ · mean(dOutput · x̂)).
    public static func layerNorm(dOutput: UnsafePointer<Float>, normalized: UnsafePointer<Float>, inverseStd: UnsafePointer<Float>,
                                 dInput: UnsafeMutablePointer<Float>, rows: Int, dim: Int) {
        Parallel.forChunks(rows, minimumPerChunk: max(1, 8192 / max(dim, 1))) { range in
            for r in range {
                let dy = dOutput + r * dim, xh = normalized + r * dim, dx = dInput + r * dim
                var sumDy: Float = 0, sumDyXh: Float = 0
                for i in 0..<dim { sumDy += dy[i]; sumDyXh += dy[i] * xh[i] }
                let meanDy = sumDy / Float(dim), meanDyXh = sumDyXh / Float(dim), s = inverseStd[r]
                for i in 0..<dim { dx[i] += s * (dy[i] - meanDy - xh[i] * meanDyXh) }
            }
        }
    }

    /// Backward of y[B, T, D] = x · (1 + scale[b]) + shift[b] (rows of shift/scale `conditionStride` apart):
    /// dInput[B, T, D] += dOutput · (1 + scale); dShift[b] += Σ_t dOutput; dScale[b] += Σ_t dOutput · x.
    /// `input` is the forward's x (before modulation). dShift/dScale rows are also `conditionStride` apart.
    public static func modulate(dOutput: UnsafePointer<Float>, input: UnsafePointer<Float>, scale: UnsafePointer<Float>,
                                dInput: UnsafeMutablePointer<Float>, dShift: UnsafeMutablePointer<Float>,
                                dScale: UnsafeMutablePointer<Float>, batch: Int, tokens: Int, dim: Int, conditionStride: Int) {
        // Split over feature columns: each thread owns a slice of dShift/dScale.
        Parallel.forChunks(dim, minimumPerChunk: 64) { columns in
            for b in 0..<batch {
                let sc = scale + b * conditionStride
                let dsh = dShift + b * conditionStride, dsc = dScale + b * conditionStride
                for t in 0..<tokens {
                    let offset = (b * tokens + t) * dim
                    let dy = dOutput + offset, x = input + offset, dx = dInput + offset
                    for d in columns {
                        dx[d] += dy[d] * (1 + sc[d])
                        dsh[d] += dy[d]
                        dsc[d] += dy[d] * x[d]
                    }
                }
            }
        }
    }

    /// Backward of residual[B, T, D] += gate[b] · branch[B, T, D], given dResidual (the gradient of the
    /// sum, which also flows on unchanged to the residual input): dBranch[B, T, D] += gate · dResidual;
    /// dGate[b] += Σ_t dResidual · branch.
    public static func gatedResidual(dResidual: UnsafePointer<Float>, branch: UnsafePointer<Float>, gate: UnsafePointer<Float>,
                                     dBranch: UnsafeMutablePointer<Float>, dGate: UnsafeMutablePointer<Float>,
                                     batch: Int, tokens: Int, dim: Int, conditionStride: Int) {
        Parallel.forChunks(dim, minimumPerChunk: 64) { columns in
            for b in 0..<batch {
                let g = gate + b * conditionStride, dg = dGate + b * conditionStride
                for t in 0..<tokens {
                    let offset = (b * tokens + t) * dim
                    let dr = dResidual + offset, x = branch + offset, dx = dBranch + offset
                    for d in columns {
                        dx[d] += g[d] * dr[d]
                        dg[d] += dr[d] * x[d]
                    }
                }
            }
        }
    }

    // MARK: Activations

    /// dInput[n] += gelu'(input[n]) · dOutput[n], tanh approximation.
    public static func geluTanh(input: UnsafePointer<Float>, dOutput: UnsafePointer<Float>, dInput: UnsafeMutablePointer<Float>, count: Int) {
        Parallel.forChunks(count, minimumPerChunk: 16384) { range in
            for i in range { dInput[i] += geluTanhDerivative(input[i]) * dOutput[i] }
        }
    }

    /// d/dx of 0.5·x·(1 + tanh(c·(x + 0.044715·x³))) = s + 2·x·s·(1 − s)·c·(1 + 3·0.044715·x²) with
    /// s = σ(2u) = ½(1 + tanh u) (so 1 − tanh² u = 4s(1 − s)); one expf, like the forward.
    @inline(__always)
    public static func geluTanhDerivative(_ x: Float) -> Float {
        let c: Float = 0.7978845608028654
        let s = Kernels.geluSigmoid(x)
        return s + 2 * x * s * (1 - s) * c * (1 + 3 * 0.044715 * x * x)
    }

    /// dInput[n] += silu'(input[n]) · dOutput[n], silu'(x) = σ(x)·(1 + x·(1 - σ(x))).
    public static func silu(input: UnsafePointer<Float>, dOutput: UnsafePointer<Float>, dInput: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count {
            let x = input[i], sigma = 1 / (1 + expf(-x))
            dInput[i] += sigma * (1 + x * (1 - sigma)) * dOutput[i]
        }
    }

    // MARK: Attention

    /// Backward of `Kernels.attention` (one block of T tokens per row: samples never see each other),
    /// given qkv[B, T, 3D], the saved probabilities[B, H, T, T] and dOutput[B, T, D]; dQKV[B, T, 3D] += ...
    /// Per head: dP = dO·Vᵀ, dV = Pᵀ·dO, dS = P ⊙ (dP - rowsum(dP ⊙ P)), dQ = scale·dS·K, dK = scale·dSᵀ·Q.
    public static func attention(qkv: UnsafePointer<Float>, probabilities: UnsafePointer<Float>, dOutput: UnsafePointer<Float>,
                                 dQKV: UnsafeMutablePointer<Float>, batch: Int, tokens: Int, dim: Int, heads: Int) {
        let headDim = dim / heads, T = tokens
        let scale = 1 / Float(headDim).squareRoot()
        let tasks = batch * heads
        let threads = min(Parallel.threads, tasks)
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: max(1, threads * T * T))  // [threads, T, T]
        defer { scratch.deallocate() }
        let perThread = (tasks + threads - 1) / threads
        Parallel.withSingleThreadedBLAS {
            Parallel.forEach(threads) { worker in
                let dScores = scratch + worker * T * T  // [T, T]
                for task in (worker * perThread)..<min(tasks, (worker + 1) * perThread) {
                    let b = task / heads, h = task % heads
                    let q = qkv + b * T * 3 * dim + h * headDim, k = q + dim, v = q + 2 * dim
                    let dq = dQKV + b * T * 3 * dim + h * headDim, dk = dq + dim, dv = dq + 2 * dim
                    let dO = dOutput + b * T * dim + h * headDim
                    let p = probabilities + (b * heads + h) * T * T
                    // dP[i, j] = dO_i · v_j
                    BLAS.sgemm(transposeA: false, transposeB: true, m: T, n: T, k: headDim,
                               a: dO, lda: dim, b: v, ldb: 3 * dim, beta: 0, c: dScores, ldc: T)
                    // dV[j] += Σ_i P[i, j] dO_i
                    BLAS.sgemm(transposeA: true, transposeB: false, m: T, n: headDim, k: T,
                               a: p, lda: T, b: dO, ldb: dim, beta: 1, c: dv, ldc: 3 * dim)
                    // softmax backward, then fold in the score scale.
                    for i in 0..<T {
                        let pr = p + i * T, dr = dScores + i * T
                        var dot: Float = 0
                        for j in 0..<T { dot += pr[j] * dr[j] }
                        for j in 0..<T { dr[j] = pr[j] * (dr[j] - dot) * scale }
                    }
                    BLAS.sgemm(transposeA: false, transposeB: false, m: T, n: headDim, k: T,
                               a: dScores, lda: T, b: k, ldb: 3 * dim, beta: 1, c: dq, ldc: 3 * dim)
                    BLAS.sgemm(transposeA: true, transposeB: false, m: T, n: headDim, k: T,
                               a: dScores, lda: T, b: q, ldb: 3 * dim, beta: 1, c: dk, ldc: 3 * dim)
                }
            }
        }
    }

    // MARK: Embeddings

    /// Backward of an embedding lookup out[B, D] = table[index[b]]: dTable[index[b]] += dOutput[b].
    public static func embedding(indices: [Int], dOutput: UnsafePointer<Float>, dTable: UnsafeMutablePointer<Float>, dim: Int) {
        for (b, row) in indices.enumerated() {
            let src = dOutput + b * dim, dst = dTable + row * dim
            for d in 0..<dim { dst[d] += src[d] }
        }
    }

    // MARK: Patches and pyramid rearrangements (permutations: the backward is the inverse gather)

    /// Backward of `Kernels.patchify`: dPatches[B, (H/p)(W/p), C·p·p] -> dImage[B, C, H, W] (+=).
    public static func patchify(dPatches: UnsafePointer<Float>, dImage: UnsafeMutablePointer<Float>,
                                batch: Int, channels: Int, height: Int, width: Int, patch p: Int) {
        let gh = height / p, gw = width / p, features = channels * p * p
        for b in 0..<batch { for row in 0..<gh { for col in 0..<gw {
            let src = dPatches + ((b * gh + row) * gw + col) * features
            for c in 0..<channels { for i in 0..<p { for j in 0..<p {
                dImage[((b * channels + c) * height + row * p + i) * width + col * p + j] += src[(c * p + i) * p + j]
            } } }
        } } }
    }

    /// Backward of `Kernels.unpatchify`: dImage[B, c, gh·p, gw·p] -> dTokens[B, gh·gw, p·p·c] (+=).
    public static func unpatchify(dImage: UnsafePointer<Float>, dTokens: UnsafeMutablePointer<Float>,
                                  batch: Int, channels c: Int, gridRows gh: Int, gridCols gw: Int, patch p: Int) {
        let height = gh * p, width = gw * p
        for b in 0..<batch { for row in 0..<gh { for col in 0..<gw {
            let dst = dTokens + ((b * gh + row) * gw + col) * p * p * c
            for u in 0..<p { for v in 0..<p { for ch in 0..<c {
                dst[(u * p + v) * c + ch] += dImage[((b * c + ch) * height + row * p + u) * width + col * p + v]
            } } }
        } } }
    }

    /// Backward of `Kernels.downSquare`: dOut[B, 4C, H/2, W/2] -> dInput[B, C, H, W] (+=).
    public static func downSquare(dOutput: UnsafePointer<Float>, dInput: UnsafeMutablePointer<Float>,
                                  batch: Int, channels: Int, height: Int, width: Int) {
        let h2 = height / 2, w2 = width / 2
        for bc in 0..<(batch * channels) {
            let dst = dInput + bc * height * width
            for a in 0..<2 { for b in 0..<2 {
                let src = dOutput + (bc * 4 + 2 * a + b) * h2 * w2
                for y in 0..<h2 { for x in 0..<w2 { dst[(2 * y + a) * width + 2 * x + b] += src[y * w2 + x] } }
            } }
        }
    }

    /// Backward of `Kernels.downW`: dOut[B, 2C, H, W/2] -> dInput[B, C, H, W] (+=).
    public static func downW(dOutput: UnsafePointer<Float>, dInput: UnsafeMutablePointer<Float>,
                             batch: Int, channels: Int, height: Int, width: Int) {
        let w2 = width / 2
        for bc in 0..<(batch * channels) {
            let dst = dInput + bc * height * width
            for j in 0..<2 {
                let src = dOutput + (bc * 2 + j) * height * w2
                for y in 0..<height { for x in 0..<w2 { dst[y * width + 2 * x + j] += src[y * w2 + x] } }
            }
        }
    }
}
