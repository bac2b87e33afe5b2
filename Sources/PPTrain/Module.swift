// Module PPTrain: the training engine (pyramid flow-matching loss, hand-written backward, AdamW, EMA).
// PPSafetensors and PPTorchFormat reach PPTrain through PPCheckpoint's dependencies; `TensorFiles`
// wraps the little of them that training and its tests need.
import PPFileIO
import PPSafetensors
import PPTorchFormat
import PPTensor

public enum TensorFiles {
    /// The tensors of a `.safetensors` file, or the first (root) state dict of a torch.save file.
    public static func read(path: String) throws -> TensorDict {
        if path.hasSuffix(".safetensors") { return try SafetensorsFile.open(path).tensors }
        let checkpoint = try TorchCheckpoint.read(path: path)
        guard let first = checkpoint.stateDicts().first else {
            throw PPError.badInput(path, "no state dict found in the checkpoint")
        }
        return first.tensors
    }

    /// Writes tensors as one safetensors file (atomically, deterministic bytes).
    public static func writeSafetensors(_ tensors: TensorDict, to path: String, metadata: [(String, String)] = []) throws {
        try SafetensorsWriter.write(tensors, metadata: metadata, to: path)
    }
}
