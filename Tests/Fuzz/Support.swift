// Shared by the fuzz entry files (compiled into each target).
import PPFileIO
import PPTensor

/// The bytes libFuzzer hands over, copied into a heap storage of exactly their size, so that any read
/// past the end is an AddressSanitizer report.
func fuzzStorage(_ data: UnsafePointer<UInt8>, _ size: Int) -> ByteStorage {
    ByteStorage(copying: UnsafeRawBufferPointer(start: data, count: size), origin: "fuzz-input")
}

/// Every byte a view can reach must lie inside its storage: checks the lowest and highest element
/// offset (strides may be anything a file declares) and reads both bytes, so a bad view crashes here.
func touch(_ t: TensorView) {
    guard let count = TensorView.elementCount(t.shape) else { fatalError("a reader returned a tensor whose element count overflows") }
    if count == 0 { return }
    var low = t.byteOffset, high = t.byteOffset
    for (n, s) in zip(t.shape, t.strides) {
        let reach = (n - 1) * s * t.dtype.byteSize
        if reach < 0 { low += reach } else { high += reach }
    }
    high += t.dtype.byteSize - 1
    precondition(low >= 0 && high < t.storage.count, "tensor view reaches bytes [\(low), \(high)] of a \(t.storage.count)-byte storage")
    var sink = t.storage.bytes[low] ^ t.storage.bytes[high]
    withUnsafeMutablePointer(to: &sink) { _ = $0 }
}

func touch(_ tensors: TensorDict) {
    for (_, t) in tensors.items { touch(t) }
}
