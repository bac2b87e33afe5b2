// libFuzzer target: the safetensors header and layout check (SafetensorsFile.parse).
import PPSafetensors
import PPTensor

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let storage = fuzzStorage(data, size)
    guard let file = try? SafetensorsFile.parse(storage, origin: "fuzz.safetensors") else { return 0 }
    // A file that parses is tiled exactly: the tensors cover the data buffer with no gap or overlap.
    precondition(8 + file.headerByteCount + file.tensors.totalBytes == size, "accepted a file whose tensors do not tile its data")
    touch(file.tensors)
    return 0
}
