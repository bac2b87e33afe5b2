#if canImport(Glibc)
import Glibc
#endif

/// Plain, single-threaded twins of the optimized kernels: direct loops in the definition's order,
/// for tests (and as the readable statement of what each kernel computes).
public enum Reference {
    /// output[N, out] = input[N, in] · weight[out, in]ᵀ + bias[out], accumulated in Double.
    public static func linear(input: [Float], weight: [Float], bias: [Float]?, rows: Int, inFeatures: Int, outFeatures: Int) -> [Float] {
        var out = [Float](repeating: 0, count: rows * outFeatures)
        for r in 0..<rows {
            for o in 0..<outFeatures {
                var sum = Double(bias?[o] ?? 0)
                for i in 0..<inFeatures { sum += Double(input[r * inFeatures + i]) * Double(weight[o * inFeatures + i]) }
                out[r * outFeatures + o] = Float(sum)
            }
        }
        return out
    }

    /// LayerNorm without affine over rows of x[N, D].
    public static func layerNorm(_ x: [Float], rows: Int, dim: Int, eps: Float) -> [Float] {
        var out = x
        for r in 0..<rows {
            let row = x[(r * dim)..<((r + 1) * dim)].map(Double.init)
            let mean = row.reduce(0, +) / Double(dim)
            let variance = row.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(dim)
            for i in 0..<dim { out[r * dim + i] = Float((row[i] - mean) / (variance + Double(eps)).squareRoot()) }
        }
        return out
    }

    /// x[B, T, D] * (1 + scale[B, D]) + shift[B, D]
    public static func modulate(_ x: [Float], batch: Int, tokens: Int, dim: Int, shift: [Float], scale: [Float]) -> [Float] {
        var out = x
        for b in 0..<batch { for t in 0..<tokens { for d in 0..<dim {
            let i = (b * tokens + t) * dim + d
            out[i] = x[i] * (1 + scale[b * dim + d]) + shift[b * dim + d]
        } } }
        return out
    }

    /// residual[B, T, D] + gate[B, D] * branch[B, T, D]
    public static func gatedResidual(_ residual: [Float], branch: [Float], gate: [Float], batch: Int, tokens: Int, dim: Int) -> [Float] {
        var out = residual
        for b in 0..<batch { for t in 0..<tokens { for d in 0..<dim {
            let i = (b * tokens + t) * dim + d
            out[i] = residual[i] + gate[b * dim + d] * branch[i]
        } } }
        return out
    }

    @inline(__always)
    public static func geluTanh(_ x: Float) -> Float {
        let c: Float = 0.7978845608028654  // sqrt(2/pi)
        return 0.5 * x * (1 + tanhf(c * (x + 0.044715 * x * x * x)))
    }

    @inline(__always)
    public static func silu(_ x: Float) -> Float { x / (1 + expf(-x)) }

    public static func softmaxRows(_ x: [Float], rows: Int, cols: Int) -> [Float] {
        var out = x
        for r in 0..<rows {
            let row = x[(r * cols)..<((r + 1) * cols)].map(Double.init)
            let m = row.max() ?? 0
            let e = row.map { Foundation_exp($0 - m) }
            let s = e.reduce(0, +)
            for i in 0..<cols { out[r * cols + i] = Float(e[i] / s) }
        }
        return out
    }

    /// Attention by definition with an explicit mask: token i may see token j only when both lie in the
    /// same segment. qkv[B, T, 3D] -> out[B, T, D].
    public static func attention(qkv: [Float], batch: Int, tokens: Int, dim: Int, heads: Int, segments: [Int]? = nil) -> [Float] {
        let headDim = dim / heads
        var segmentOf = [Int](repeating: 0, count: tokens)
        var position = 0
        for (index, length) in (segments ?? [tokens]).enumerated() {
            for _ in 0..<length { segmentOf[position] = index; position += 1 }
        }
        let scale = 1 / Double(headDim).squareRoot()
        var out = [Float](repeating: 0, count: batch * tokens * dim)
        for b in 0..<batch { for h in 0..<heads { for i in 0..<tokens {
            var scores = [Double](repeating: -Double.infinity, count: tokens)
            for j in 0..<tokens where segmentOf[j] == segmentOf[i] {
                var dot = 0.0
                let qBase = (b * tokens + i) * 3 * dim + h * headDim
                let kBase = (b * tokens + j) * 3 * dim + dim + h * headDim
                for d in 0..<headDim { dot += Double(qkv[qBase + d]) * Double(qkv[kBase + d]) }
                scores[j] = dot * scale
            }
            let m = scores.max()!
            let e = scores.map { $0 == -Double.infinity ? 0 : Foundation_exp($0 - m) }
            let s = e.reduce(0, +)
            for d in 0..<headDim {
                var acc = 0.0
                for j in 0..<tokens {
                    let vIndex: Int = (b * tokens + j) * 3 * dim + 2 * dim + h * headDim + d
                    acc += e[j] / s * Double(qkv[vIndex])
                }
                out[(b * tokens + i) * dim + h * headDim + d] = Float(acc)
            }
        } } }
        return out
    }
}

@inline(__always) private func Foundation_exp(_ x: Double) -> Double { exp(x) }
