import PPFileIO
import PPKernels
import PPTensor

/// Mean and covariance of a set of feature vectors, in Double.
public struct FeatureStatistics: Sendable {
    public let dim: Int
    public let count: Int
    /// [D]
    public let mean: [Double]
    /// [D, D], unbiased (divided by N - 1, as numpy's `np.cov(rowvar=False)` that pytorch-fid uses).
    public let covariance: [Double]

    /// `features` [N, D] float32, N >= 2.
    public init(features: [Float], count: Int, dim: Int) {
        precondition(count >= 2 && dim >= 1 && features.count == count * dim, "FeatureStatistics: \(features.count) values for [\(count), \(dim)]")
        self.init(features: features.map(Double.init), count: count, dim: dim)
    }

    /// `features` [N, D] in Double, N >= 2.
    public init(features: [Double], count: Int, dim: Int) {
        precondition(count >= 2 && dim >= 1 && features.count == count * dim, "FeatureStatistics: \(features.count) values for [\(count), \(dim)]")
        self.dim = dim
        self.count = count
        var mean = [Double](repeating: 0, count: dim)
        for r in 0..<count { for j in 0..<dim { mean[j] += features[r * dim + j] } }
        for j in 0..<dim { mean[j] /= Double(count) }
        var centered = features                                        // [N, D] minus the mean
        for r in 0..<count { for j in 0..<dim { centered[r * dim + j] -= mean[j] } }
        var covariance = [Double](repeating: 0, count: dim * dim)      // [D, D] = centeredᵀ·centered / (N-1)
        centered.withUnsafeBufferPointer { c in
            covariance.withUnsafeMutableBufferPointer { s in
                BLAS.dgemm(transposeA: true, transposeB: false, m: dim, n: dim, k: count, alpha: 1 / Double(count - 1),
                           a: c.baseAddress!, lda: dim, b: c.baseAddress!, ldb: dim, c: s.baseAddress!, ldc: dim)
            }
        }
        self.mean = mean
        self.covariance = covariance
    }
}

public enum FrechetDistance {
    /// |μ1-μ2|² + tr S1 + tr S2 - 2·tr sqrt(sqrt(S1)·S2·sqrt(S1)): the Fréchet distance of two Gaussians.
    /// sqrt(S1)·S2·sqrt(S1) has the eigenvalues of S1·S2 (so its root's trace is pytorch-fid's
    /// tr sqrtm(S1·S2)) but is symmetric, so both roots come from LAPACK's symmetric eigensolver.
    public static func distance(_ a: FeatureStatistics, _ b: FeatureStatistics) throws -> Double {
        guard a.dim == b.dim else { throw PPError(.badInput, "feature dimensions differ: \(a.dim) and \(b.dim)") }
        let n = a.dim
        var meanTerm = 0.0
        for j in 0..<n { let d = a.mean[j] - b.mean[j]; meanTerm += d * d }
        var traces = 0.0
        for j in 0..<n { traces += a.covariance[j * n + j] + b.covariance[j * n + j] }
        guard let root = SymmetricEigen.squareRoot(a.covariance, n: n) else {
            throw PPError(.mismatch, "the eigendecomposition of the first covariance did not converge")
        }
        var product = [Double](repeating: 0, count: n * n)  // [n, n] = sqrt(S1)·S2
        var middle = [Double](repeating: 0, count: n * n)   // [n, n] = sqrt(S1)·S2·sqrt(S1)
        root.withUnsafeBufferPointer { r in
            b.covariance.withUnsafeBufferPointer { s in
                product.withUnsafeMutableBufferPointer { p in
                    BLAS.dgemm(transposeA: false, transposeB: false, m: n, n: n, k: n, a: r.baseAddress!, lda: n,
                               b: s.baseAddress!, ldb: n, c: p.baseAddress!, ldc: n)
                }
            }
            product.withUnsafeBufferPointer { p in
                middle.withUnsafeMutableBufferPointer { m in
                    BLAS.dgemm(transposeA: false, transposeB: false, m: n, n: n, k: n, a: p.baseAddress!, lda: n,
                               b: r.baseAddress!, ldb: n, c: m.baseAddress!, ldc: n)
                }
            }
        }
        // Symmetric up to rounding: average with the transpose so the solver sees one matrix.
        for i in 0..<n { for j in (i + 1)..<max(i + 1, n) {
            let v = 0.5 * (middle[i * n + j] + middle[j * n + i])
            middle[i * n + j] = v; middle[j * n + i] = v
        } }
        guard let (values, _) = SymmetricEigen.decompose(middle, n: n) else {
            throw PPError(.mismatch, "the eigendecomposition of sqrt(S1)·S2·sqrt(S1) did not converge")
        }
        let traceRoot = values.reduce(0.0) { $0 + max($1, 0).squareRoot() }
        return meanTerm + traces - 2 * traceRoot
    }
}
