import PPModel
#if canImport(Glibc)
import Glibc
#endif

/// Hyper-parameters of `torch.optim.AdamW`.
public struct AdamWOptions: Sendable, Equatable {
    public var learningRate: Float
    public var beta1: Float
    public var beta2: Float
    public var eps: Float
    public var weightDecay: Float
    /// Clip the gradient to this global L2 norm first (`torch.nn.utils.clip_grad_norm_`); nil = no clipping.
    public var maxGradNorm: Float?

    public init(learningRate: Float = 1e-4, beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8,
                weightDecay: Float = 0, maxGradNorm: Float? = nil) {
        self.learningRate = learningRate; self.beta1 = beta1; self.beta2 = beta2; self.eps = eps
        self.weightDecay = weightDecay; self.maxGradNorm = maxGradNorm
    }
}

/// AdamW as `torch.optim.AdamW` computes it on CPU (the single-tensor path), in the same float32 order:
/// p *= 1 - lr·wd; m = lerp(m, g, 1-β1); v = β2·v + (1-β2)·g²;
/// p -= lr/(1-β1^k) · m / (sqrt(v)/sqrt(1-β2^k) + eps). Frozen tensors are skipped.
public struct AdamW {
    public var options: AdamWOptions
    /// [P] first and second moments in the parameter layout.
    public var firstMoment: [Float]
    public var secondMoment: [Float]
    /// Number of `update` calls.
    public internal(set) var step = 0
    /// Updates each tensor has received, by the start of its flat range. As in torch, a tensor that starts
    /// training later (a later phase) starts its own bias correction at 1.
    public var tensorSteps: [Int: Int] = [:]

    public init(options: AdamWOptions, parameterCount: Int) {
        self.options = options
        firstMoment = [Float](repeating: 0, count: parameterCount)
        secondMoment = [Float](repeating: 0, count: parameterCount)
    }

    /// One update of every learnable tensor of `layout` (all but the fixed position tables).
    @discardableResult
    public mutating func update(parameters: inout [Float], gradients: inout [Float], layout: ParameterLayout) -> Double {
        update(parameters: &parameters, gradients: &gradients, tensors: layout.ranges(of: layout.learnableNames))
    }

    /// One update of the tensors at `trainable` (flat ranges, one per tensor; the others are left exactly
    /// as they are, like tensors with requires_grad=False), gradients clipped in place first when asked.
    /// Returns the global gradient norm (over `trainable`) before clipping.
    @discardableResult
    public mutating func update(parameters: inout [Float], gradients: inout [Float], tensors trainable: [Range<Int>]) -> Double {
        // Global norm as torch: the norm of the per-tensor norms.
        var squares = 0.0
        for e in trainable {
            var tensorSquares = 0.0
            for i in e { tensorSquares += Double(gradients[i]) * Double(gradients[i]) }
            let norm = Float(tensorSquares.squareRoot())
            squares += Double(norm) * Double(norm)
        }
        let totalNorm = squares.squareRoot()
        if let maxNorm = options.maxGradNorm {
            let coefficient = min(Float(Double(maxNorm) / (totalNorm + 1e-6)), 1)
            for e in trainable { for i in e { gradients[i] *= coefficient } }
        }
        step += 1
        let o = options
        let decay = Float(1 - Double(o.learningRate) * Double(o.weightDecay))
        let weight1 = Float(1 - Double(o.beta1)), weight2 = Float(1 - Double(o.beta2)), beta2 = o.beta2
        parameters.withUnsafeMutableBufferPointer { p in
            gradients.withUnsafeBufferPointer { g in
                firstMoment.withUnsafeMutableBufferPointer { m in
                    secondMoment.withUnsafeMutableBufferPointer { v in
                        for e in trainable {
                            let k = (tensorSteps[e.lowerBound] ?? 0) + 1
                            tensorSteps[e.lowerBound] = k
                            let biasCorrection1 = 1 - pow(Double(o.beta1), Double(k))
                            let biasCorrection2 = 1 - pow(Double(o.beta2), Double(k))
                            let stepSize = Float(Double(o.learningRate) / biasCorrection1)
                            let correction2Sqrt = Float(biasCorrection2.squareRoot())
                            for i in e {
                                if o.weightDecay != 0 { p[i] *= decay }
                                let gi = g[i]
                                // torch lerp: weight < 0.5 ? self + w·(end - self) : end - (end - self)·(1 - w)
                                m[i] = weight1 < 0.5 ? m[i] + weight1 * (gi - m[i]) : gi - (gi - m[i]) * (1 - weight1)
                                v[i] = v[i] * beta2 + weight2 * gi * gi  // addcmul: self + value·t1·t2
                                let denominator = v[i].squareRoot() / correction2Sqrt + o.eps
                                p[i] += -stepSize * m[i] / denominator  // addcdiv: self + value·t1/t2
                            }
                        }
                    }
                }
            }
        }
        return totalNorm
    }
}

/// Exponential moving average of the parameters: ema = d·ema + (1-d)·param, over every tensor (the
/// official trainer's EMA walks all named parameters, frozen `pos_embed*` included, which leaves them
/// unchanged up to rounding).
public struct ExponentialMovingAverage {
    /// [P] averaged parameters in the layout.
    public var values: [Float]
    public var decay: Float

    public init(initial: [Float], decay: Float) {
        values = initial
        self.decay = decay
    }

    public mutating func update(with parameters: [Float]) {
        let d = decay, complement = Float(1 - Double(decay))
        values.withUnsafeMutableBufferPointer { e in
            parameters.withUnsafeBufferPointer { p in
                for i in 0..<e.count { e[i] = e[i] * d + complement * p[i] }
            }
        }
    }
}
