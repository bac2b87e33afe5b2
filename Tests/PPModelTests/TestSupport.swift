@_exported import PPTestSupport
import PPFileIO
import XCTest
import PPTensor
import PPSafetensors
import PPTorchFormat

enum Fixtures {
    static let folder: String = {
        var path = "\(#filePath)"
        for _ in 0..<2 { path = String(path[..<path.lastIndex(of: "/")!]) }
        return path + "/Fixtures"
    }()

    /// The tensors of a fixture file (.safetensors, or a torch.save state dict).
    static func tensors(_ name: String) throws -> TensorDict {
        let path = folder + "/" + name
        if name.hasSuffix(".safetensors") { return try SafetensorsFile.open(path).tensors }
        guard let dict = try TorchCheckpoint.read(path: path).stateDicts().first(where: { $0.path == "" })?.tensors else {
            throw PPError(.badInput, file: path, "no bare state dict")
        }
        return dict
    }

    /// The diffusers transformer weights inside dit_diffusers.zip.
    static func diffusersTransformer() throws -> TensorDict {
        let archive = try ZipArchive(path: folder + "/dit_diffusers.zip")
        let entry = archive.entry(named: "transformer/diffusion_pytorch_model.safetensors")!
        let bytes = try archive.bytes(of: entry)
        return try SafetensorsFile.parse(ByteStorage(bytes: bytes, origin: "dit_diffusers.zip"), origin: "dit_diffusers.zip").tensors
    }
}

extension TensorDict {
    func floats(_ name: String) -> [Float] { self[name]!.floats() }
    func labels(_ name: String) -> [Int32] { self[name]!.int64s().map { Int32($0) } }
}

/// Samples `range` of a [B, ...] buffer, each `size` long, keeping only the first `keep` values of each.
func samples(_ values: [Float], size: Int, range: Range<Int>, keep: Int? = nil) -> [Float] {
    var out: [Float] = []
    for i in range { out += values[(i * size)..<(i * size + (keep ?? size))] }
    return out
}
