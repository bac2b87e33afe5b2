import PPKernels

/// The part of the latent a pyramid level cannot see: the directions of each patch that its patch
/// projection maps to zero. The repeat rule's coarse projection averages each group of pixels it merges
/// (`repeat_interleave(W / 4, 4, dim=1)`), so the differences within a group are invisible to it; after
/// fine-tuning the projection sees every direction and the space is empty.
public struct UnseenInput: Sendable {
    public let config: ModelConfig
    public let level: Int
    /// [k, n] orthonormal rows spanning the null space of the level's patch projection, n = Cl·p·p in
    /// `Kernels.patchify`'s (c, i, j) feature order; k = 0 when the level sees everything.
    public let basis: [Float]
    /// k
    public let dimensions: Int
    /// p
    public let patchSize: Int

    /// A direction counts as unseen when its squared gain through the projection is below this share of the
    /// largest one. The repeat rule's null directions are exact (digits conversion: 1e-16, float rounding);
    /// after fine-tuning the weakest direction has 0.08 (`digits-ppf2`, 300 steps) to 0.2 (1000 steps).
    public static let relativeTolerance = 1e-9

    /// The unseen space of `level`, from the level's patch-embedding weight [D, Cl, p, p].
    public init(weights: ModelWeights, level: Int) {
        config = weights.config
        self.level = level
        let geometry = config.geometry(level: level)
        let p = config.patchSize
        patchSize = p
        let n = geometry.channels * p * p
        let w = weights.floats(geometry.embedKey + ".weight")!  // [D, n]
        let d = w.count / n
        // Gram matrix WᵀW [n, n] in Double: its zero eigenvalues are the projection's null space.
        var gram = [Double](repeating: 0, count: n * n)
        for row in 0..<d {
            let r = row * n
            for i in 0..<n {
                let a = Double(w[r + i])
                if a == 0 { continue }
                for j in 0..<n { gram[i * n + j] += a * Double(w[r + j]) }
            }
        }
        var rows: [Float] = []
        if let (values, vectors) = SymmetricEigen.decompose(gram, n: n), let largest = values.last, largest > 0 {
            for k in 0..<n where values[k] <= largest * Self.relativeTolerance {
                rows += vectors[(k * n)..<((k + 1) * n)].map { Float($0) }
            }
        }
        basis = rows
        dimensions = rows.count / n
    }

    /// The component of x [B, C, S, S] (full layout, any side the model takes) in the unseen space,
    /// [B, C, S, S]; zeros when k = 0.
    public func project(_ x: [Float], batch: Int) -> [Float] {
        let side = Int(Double(x.count / (batch * config.inChannels)).squareRoot())
        let g = config.geometry(level: level, side: side), patch = patchSize
        var out = [Float](repeating: 0, count: x.count)  // [B, C, S, S]
        guard dimensions > 0 else { return out }
        let n = g.channels * patch * patch, tokens = g.tokens
        var levelImage = [Float](repeating: 0, count: batch * g.channels * g.height * g.width)  // [B, Cl, Hl, Wl]
        var patches = [Float](repeating: 0, count: batch * tokens * n)                     // [B, T, n]
        x.withUnsafeBufferPointer { source in levelImage.withUnsafeMutableBufferPointer { g.rearrange(source.baseAddress!, into: $0.baseAddress!, batch: batch) } }
        levelImage.withUnsafeBufferPointer { l in patches.withUnsafeMutableBufferPointer {
            Kernels.patchify(l.baseAddress!, $0.baseAddress!, batch: batch, channels: g.channels, height: g.height, width: g.width, patch: patch)
        } }
        // Each patch v -> Σ_k (b_k·v) b_k.
        var projected = [Float](repeating: 0, count: patches.count)  // [B, T, n]
        for token in 0..<(batch * tokens) {
            let v = token * n
            for k in 0..<dimensions {
                let b = k * n
                var dot: Float = 0
                for i in 0..<n { dot += basis[b + i] * patches[v + i] }
                for i in 0..<n { projected[v + i] += dot * basis[b + i] }
            }
        }
        // patchify is a permutation, so its backward into zeros scatters the patches back.
        for i in levelImage.indices { levelImage[i] = 0 }
        projected.withUnsafeBufferPointer { pr in levelImage.withUnsafeMutableBufferPointer {
            Backward.patchify(dPatches: pr.baseAddress!, dImage: $0.baseAddress!, batch: batch, channels: g.channels,
                              height: g.height, width: g.width, patch: patch)
        } }
        levelImage.withUnsafeBufferPointer { l in out.withUnsafeMutableBufferPointer { g.restoreLayout(l.baseAddress!, into: $0.baseAddress!, batch: batch) } }
        return out
    }
}
