/// Ridge regression by normal equations, accumulated in Double so that memory stays bounded by the
/// feature width (not the number of rows): G = AᵀA and R = AᵀY over A = [features, 1].
public struct RidgeRegression {
    public let features: Int            // D (a bias column is appended)
    public let outputs: Int             // K
    public private(set) var rows = 0
    /// [D+1, D+1] row-major, AᵀA.
    public private(set) var gram: [Double]
    /// [D+1, K] row-major, AᵀY.
    public private(set) var crossProducts: [Double]
    /// Σ y² per output, for residual reporting.
    public private(set) var targetSquares: [Double]

    public init(features: Int, outputs: Int) {
        self.features = features
        self.outputs = outputs
        gram = [Double](repeating: 0, count: (features + 1) * (features + 1))
        crossProducts = [Double](repeating: 0, count: (features + 1) * outputs)
        targetSquares = [Double](repeating: 0, count: outputs)
    }

    /// Adds `count` rows: x [count, D] (float32), y [count, K].
    public mutating func accumulate(x: UnsafePointer<Float>, y: UnsafePointer<Float>, count: Int) {
        let width = features + 1
        var a = [Double](repeating: 1, count: count * width)   // [count, D+1], last column = 1
        var targets = [Double](repeating: 0, count: count * outputs)  // [count, K]
        for r in 0..<count {
            for j in 0..<features { a[r * width + j] = Double(x[r * features + j]) }
            for k in 0..<outputs {
                let v = Double(y[r * outputs + k])
                targets[r * outputs + k] = v
                targetSquares[k] += v * v
            }
        }
        a.withUnsafeBufferPointer { ap in
            gram.withUnsafeMutableBufferPointer { g in
                BLAS.dgemm(transposeA: true, transposeB: false, m: width, n: width, k: count,
                           a: ap.baseAddress!, lda: width, b: ap.baseAddress!, ldb: width, beta: 1, c: g.baseAddress!, ldc: width)
            }
            targets.withUnsafeBufferPointer { tp in
                crossProducts.withUnsafeMutableBufferPointer { c in
                    BLAS.dgemm(transposeA: true, transposeB: false, m: width, n: outputs, k: count,
                               a: ap.baseAddress!, lda: width, b: tp.baseAddress!, ldb: outputs, beta: 1, c: c.baseAddress!, ldc: outputs)
                }
            }
        }
        rows += count
    }

    /// Solves (AᵀA + λI) w = AᵀY by Cholesky. Returns w [D+1, K] (last row = bias), or nil when the
    /// system is not positive definite (λ = 0 with collinear features).
    public func solve(lambda: Double) -> [Double]? {
        let n = features + 1
        var l = gram
        for i in 0..<n { l[i * n + i] += lambda }
        // Cholesky: l = L Lᵀ, lower triangle in place.
        for j in 0..<n {
            var diagonal = l[j * n + j]
            for k in 0..<j { diagonal -= l[j * n + k] * l[j * n + k] }
            guard diagonal > 0 else { return nil }
            let root = diagonal.squareRoot()
            l[j * n + j] = root
            for i in (j + 1)..<max(n, j + 1) {
                var s = l[i * n + j]
                for k in 0..<j { s -= l[i * n + k] * l[j * n + k] }
                l[i * n + j] = s / root
            }
        }
        var w = crossProducts                                       // [n, K]
        for k in 0..<outputs {
            // Forward substitution L z = b, then back substitution Lᵀ w = z.
            for i in 0..<n {
                var s = w[i * outputs + k]
                for j in 0..<i { s -= l[i * n + j] * w[j * outputs + k] }
                w[i * outputs + k] = s / l[i * n + i]
            }
            for i in stride(from: n - 1, through: 0, by: -1) {
                var s = w[i * outputs + k]
                for j in (i + 1)..<max(n, i + 1) { s -= l[j * n + i] * w[j * outputs + k] }
                w[i * outputs + k] = s / l[i * n + i]
            }
        }
        return w
    }

    /// Σ‖y − A w‖² over the accumulated rows (from the normal equations, without the rows).
    public func residualSquares(_ w: [Double]) -> Double {
        let n = features + 1
        var total = 0.0
        for k in 0..<outputs {
            // ‖y − Aw‖² = yᵀy − 2 wᵀAᵀy + wᵀAᵀA w
            var cross = 0.0, quadratic = 0.0
            for i in 0..<n {
                cross += w[i * outputs + k] * crossProducts[i * outputs + k]
                var gw = 0.0
                for j in 0..<n { gw += gram[i * n + j] * w[j * outputs + k] }
                quadratic += w[i * outputs + k] * gw
            }
            total += targetSquares[k] - 2 * cross + quadratic
        }
        return max(total, 0)
    }

    public var totalTargetSquares: Double { targetSquares.reduce(0, +) }
}
