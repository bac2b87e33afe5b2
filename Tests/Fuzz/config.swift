// libFuzzer target: config.json. Strict JSON (parse, serialize, parse again: same value), then the
// file as the config.json of a folder holding a small real PPFlow model: native-folder, diffusers and
// sidecar interpretation, and the model configuration the loaders derive from it.
@testable import PPCheckpoint
import PPFileIO
import PPJSON
import PPModel
import PPModelIO
import PPTensor

/// A folder with config.json (the input) and model.safetensors (a real 2-level PPFlow fixture).
struct FuzzTree: FileTree {
    static let weights: ByteStorage = {
        let path = "Tests/Fixtures/ppf2_from_sit.safetensors"
        guard let s = try? ByteStorage(mappingFile: path) else { fatalError("run from the repository root (needs \(path))") }
        return s
    }()
    let origin = "fuzz"
    let files: [String]
    let config: ByteStorage
    func open(_ relativePath: String) throws -> ByteStorage {
        relativePath.hasSuffix("model.safetensors") ? FuzzTree.weights : config
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    guard let value = try? JSON.parse(bytes, origin: "config.json") else { return 0 }
    for pretty in [false, true] {
        let text = JSON.serialize(value, pretty: pretty)
        guard let again = try? JSON.parse(text, origin: "reserialized") else { fatalError("serialized JSON does not parse: \(text.prefix(200))") }
        precondition(again == value, "JSON round trip changed the value: \(text.prefix(200))")
    }
    let config = fuzzStorage(data, size)
    for layout in [["config.json", "model.safetensors"], ["transformer/config.json", "transformer/model.safetensors"]] {
        guard let loaded = try? CheckpointLoader.loadTree(FuzzTree(files: layout, config: config), weights: nil, verifyHashes: false) else { continue }
        touch(loaded.tensors)
        if let config = try? ModelLoader.configuration(of: loaded) {
            _ = config.parameterShapes
        }
    }
    return 0
}
