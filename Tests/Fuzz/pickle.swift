// libFuzzer target: the restricted unpickler, then what the loaders do with its result
// (state-dict discovery, summaries of non-tensor entries, Namespace attributes).
import PPFileIO
@testable import PPTorchFormat
import PPTensor

/// Serves every storage record from one zero-filled 1 MiB block (records larger than that are refused,
/// as a real archive without such a record would be).
final class ZeroResolver: TorchStorageResolver {
    static let block = ByteStorage(count: 1 << 20, origin: "zeros") { _ in }
    func storage(key: String, dtype: DType, numel: Int) throws -> (storage: ByteStorage, offset: Int) {
        let (bytes, overflow) = numel.multipliedReportingOverflow(by: dtype.byteSize)
        guard !overflow, bytes <= ZeroResolver.block.count else { throw PPError.badInput("fuzz", entry: key, "record too large") }
        return (ZeroResolver.block, 0)
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    guard let root = try? Unpickler.load(bytes, origin: "fuzz.pt", entry: "archive/data.pkl", resolver: ZeroResolver()) else { return 0 }
    let checkpoint = TorchCheckpoint(path: "fuzz.pt", root: root, archiveName: "archive")
    for (_, tensors) in checkpoint.stateDicts() { touch(tensors) }
    _ = checkpoint.describeNonTensorEntries()
    _ = root.summary()
    if case .dict(let d) = root { for item in d.items { _ = item.key.keyText; _ = item.value["prediction"] } }
    return 0
}
