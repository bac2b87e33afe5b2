import PPFileIO
import PPSafetensors
import PPTensor

/// Latents for verification and calibration: a safetensors file with `latents` [N,C,H,W] (f32/f16/bf16)
/// and optionally `labels` [N] (integers).
public enum VerificationData {
    public static func load(_ path: String, channels: Int, size: Int) throws -> (latents: [Float], labels: [Int32], count: Int) {
        let file = try SafetensorsFile.open(path)
        guard let latents = file.tensors["latents"] else {
            throw PPError.badInput(path, entry: "latents", "missing (expected latents [N,C,H,W] and optional labels [N])")
        }
        guard latents.rank == 4, latents.shape[1] == channels, latents.shape[2] == size, latents.shape[3] == size,
              latents.dtype.isFloatingPoint else {
            throw PPError.badInput(path, entry: "latents", "\(latents.dtype.shortName) \(latents.shape) does not fit the model's [N,\(channels),\(size),\(size)] float latents")
        }
        let n = latents.shape[0]
        var labels: [Int32] = []
        if let l = file.tensors["labels"] {
            guard l.shape == [n], !l.dtype.isFloatingPoint else {
                throw PPError.badInput(path, entry: "labels", "\(l.dtype.shortName) \(l.shape) is not an integer vector of length \(n)")
            }
            labels = l.int64s().map { Int32(clamping: $0) }
        }
        return (latents.floats(), labels, n)
    }
}
