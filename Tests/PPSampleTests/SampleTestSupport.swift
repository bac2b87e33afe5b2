@_exported import PPTestSupport
import PPFileIO
import XCTest
import PPTensor
import PPSafetensors
import PPTorchFormat

enum SampleFixtures {
    static let folder: String = {
        var path = "\(#filePath)"
        for _ in 0..<2 { path = String(path[..<path.lastIndex(of: "/")!]) }
        return path + "/Fixtures"
    }()

    static func safetensors(_ name: String) throws -> TensorDict { try SafetensorsFile.open(folder + "/" + name).tensors }

    /// A bare torch.save state dict.
    static func torchStateDict(_ name: String) throws -> TensorDict {
        let path = folder + "/" + name
        guard let dict = try TorchCheckpoint.read(path: path).stateDicts().first(where: { $0.path == "" })?.tensors else {
            throw PPError(.badInput, file: path, "no bare state dict")
        }
        return dict
    }
}

/// `count` values of a fixed, non-trivial pattern in [-1, 1] (no RNG, so tests read the same everywhere).
func pattern(_ count: Int, seed: Int = 1) -> [Float] {
    (0..<count).map { i in Float(sin(Double(i * 7 + seed * 13) * 0.37)) }
}
