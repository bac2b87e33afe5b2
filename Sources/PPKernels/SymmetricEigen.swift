import COpenBLAS

/// Eigendecomposition of a real symmetric matrix by LAPACK's `dsyevd` (in Double): what the Fréchet
/// distance needs for its matrix square roots.
public enum SymmetricEigen {
    /// `matrix` [n, n] (symmetric; only its lower triangle in column-major order, i.e. the upper one in
    /// row-major order, is read) -> eigenvalues [n] ascending and eigenvectors [n, n] with eigenvector j in
    /// row j. Nil when LAPACK reports that the iteration failed to converge (or on a bad argument).
    public static func decompose(_ matrix: [Double], n: Int) -> (values: [Double], vectors: [Double])? {
        precondition(n >= 0 && matrix.count == n * n, "SymmetricEigen: \(matrix.count) values for a \(n)x\(n) matrix")
        if n == 0 { return ([], []) }
        var a = matrix                                   // [n, n]; on exit column j (= our row j) is eigenvector j
        var w = [Double](repeating: 0, count: n)         // [n] eigenvalues, ascending
        var order = Int32(n), lda = Int32(n), info: Int32 = 0
        var jobz = CChar(UInt8(ascii: "V")), uplo = CChar(UInt8(ascii: "L"))
        // Workspace query first (lwork = liwork = -1), then the real call.
        var workSize = 0.0, iworkSize: Int32 = 0, query: Int32 = -1
        dsyevd_(&jobz, &uplo, &order, &a, &lda, &w, &workSize, &query, &iworkSize, &query, &info, 1, 1)
        guard info == 0 else { return nil }
        var lwork = Int32(workSize.rounded(.up)), liwork = max(1, iworkSize)
        var work = [Double](repeating: 0, count: Int(max(1, lwork)))
        var iwork = [Int32](repeating: 0, count: Int(liwork))
        dsyevd_(&jobz, &uplo, &order, &a, &lda, &w, &work, &lwork, &iwork, &liwork, &info, 1, 1)
        guard info == 0 else { return nil }
        return (w, a)
    }

    /// The symmetric square root V·diag(sqrt(max(λ, 0)))·Vᵀ of a symmetric positive semi-definite matrix
    /// [n, n]; eigenvalues below zero (rounding) count as zero.
    public static func squareRoot(_ matrix: [Double], n: Int) -> [Double]? {
        guard let (values, vectors) = decompose(matrix, n: n) else { return nil }
        var scaled = vectors                             // [n, n]: row j = sqrt(λ_j)·v_j
        for j in 0..<n {
            let s = max(values[j], 0).squareRoot()
            for i in 0..<n { scaled[j * n + i] *= s }
        }
        var root = [Double](repeating: 0, count: n * n)  // Σ_j sqrt(λ_j) v_j v_jᵀ = scaledᵀ · vectors
        scaled.withUnsafeBufferPointer { s in
            vectors.withUnsafeBufferPointer { v in
                root.withUnsafeMutableBufferPointer { r in
                    BLAS.dgemm(transposeA: true, transposeB: false, m: n, n: n, k: n,
                               a: s.baseAddress!, lda: n, b: v.baseAddress!, ldb: n, c: r.baseAddress!, ldc: n)
                }
            }
        }
        return root
    }
}
