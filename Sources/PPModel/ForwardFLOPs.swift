extension ModelConfig {
    /// Floating-point operations of one forward at `level` for `batch` samples of `latentSide` (default: the
    /// input size), 2·m·n·k for every matrix product: patch embedding, timestep MLP, per block the adaLN
    /// linear, qkv, Q·Kᵀ and attention·V over all heads, the output projection and the two MLP linears, then
    /// the final adaLN and output linear. Element-wise work, softmax and the norms are left out. The cost
    /// `ppsample eval` reports and the benchmarks' GFLOP/s both come from here.
    public func forwardFLOPs(level: Int, batch: Int = 1, latentSide: Int? = nil) -> Double {
        let cells = self.grid(level: level, latentSize: latentSide ?? inputSize)
        let tokens = Double(cells.rows * cells.cols), b = Double(batch), rows = b * tokens
        let d = Double(hiddenSize), hidden = Double(mlpHiddenSize)
        let factor = Double(levelLayouts[level].channelFactor)
        let p2 = Double(patchSize * patchSize)
        var total = 2 * rows * (Double(inChannels) * factor * p2) * d             // patch embedding
        total += 2 * b * 256 * d + 2 * b * d * d                                  // time embedder
        let perBlock = 2 * b * d * 6 * d                                          // adaLN
            + 2 * rows * d * 3 * d                                                // qkv
            + 2 * 2 * b * tokens * tokens * d                                     // q·kᵀ and p·v over all heads
            + 2 * rows * d * d                                                    // proj
            + 2 * 2 * rows * d * hidden                                           // fc1, fc2
        total += Double(depth) * perBlock
        total += 2 * b * d * 2 * d + 2 * rows * d * p2 * Double(outChannels) * factor  // final layer
        return total
    }
}
