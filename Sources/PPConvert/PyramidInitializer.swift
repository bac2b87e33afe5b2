import PPModel
import PPTensor

/// How the large-patch projections of a PPFlow model are derived from a pretrained DiT/SiT.
public enum InitializerKind: String, CaseIterable, Sendable {
    /// The official rule (PPFlow train.py `--initialize_from`): average-pool input, nearest-upsampled output.
    case `repeat`
    /// The repeat rule, then the coarse output projections refitted by ridge regression against the
    /// source model's velocity on calibration latents (needs `--data`).
    case calibrated
}

/// The official repeat rule on raw tensors (model-facts.md, "Initializing PPFlow").
public enum RepeatRule {
    /// Input projection for a level that stacks `factor` sub-pixels per channel (4: down_square, 2: down_w):
    /// `repeat_interleave(W / factor, factor, dim=1)`. W is [D, C, p, p]; the result [D, factor*C, p, p].
    /// Computed in float32 and rounded back to the source dtype, as PyTorch does on CPU.
    public static func inputProjection(_ weight: TensorView, factor: Int) -> TensorView {
        let shape = weight.shape                      // [D, C, p, p]
        let (d, c, pp) = (shape[0], shape[1], shape[2] * shape[3])
        let w = weight.floats()                       // [D, C, p*p]
        var out = [Float](repeating: 0, count: d * c * factor * pp)   // [D, factor*C, p*p]
        let scale = Float(factor)
        for row in 0..<d {
            for ch in 0..<c {
                for k in 0..<factor {
                    let dst = (row * c * factor + ch * factor + k) * pp
                    let src = (row * c + ch) * pp
                    for q in 0..<pp { out[dst + q] = w[src + q] / scale }
                }
            }
        }
        return TensorView(floats: out, shape: [d, c * factor, shape[2], shape[3]], dtype: floatDType(weight.dtype))
    }

    /// Output projection: `repeat_interleave(W, factor, dim=0)` for a weight [R, D] or a bias [R].
    /// Rows are copied byte for byte, so every dtype round-trips exactly.
    public static func outputProjection(_ tensor: TensorView, factor: Int) -> TensorView {
        let rows = tensor.shape[0]
        let rowBytes = tensor.byteCount / max(rows, 1)
        let src = tensor.rowMajorBytes()
        var out = [UInt8](repeating: 0, count: src.count * factor)
        for r in 0..<rows {
            for k in 0..<factor {
                let dst = (r * factor + k) * rowBytes
                out.replaceSubrange(dst ..< dst + rowBytes, with: src[r * rowBytes ..< (r + 1) * rowBytes])
            }
        }
        return TensorView(dtype: tensor.dtype, shape: [rows * factor] + tensor.shape.dropFirst(), bytes: out)
    }

    /// A zero tensor of the given shape and dtype.
    public static func zeros(shape: [Int], dtype: DType) -> TensorView {
        TensorView(dtype: dtype, shape: shape, bytes: [UInt8](repeating: 0, count: (TensorView.elementCount(shape) ?? 0) * dtype.byteSize))
    }

    static func floatDType(_ dtype: DType) -> DType { dtype.isFloatingPoint ? dtype : .f32 }
}

extension ModelConfig {
    /// The fixed sin-cos table of `level` at the training latent size ([tokens, D], row-major).
    func positionTable(level: Int) -> [Float] {
        ModelParameters.positionTable(config: self, level: level, latentSize: inputSize)
    }
}
