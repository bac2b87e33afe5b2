// libFuzzer target: zip bytes through the checkpoint loader (ZipArchive over libzip plus its own
// central-directory reading; torch.save archives; zipped folders: native, diffusers, sharded, single
// weights file with config.json), and every entry of the archive read.
@testable import PPCheckpoint
import PPTensor
import PPTorchFormat

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let storage = fuzzStorage(data, size)
    // Odd and even sizes take both paths of native folders (hash checked and not).
    if let loaded = try? CheckpointLoader.loadFile(storage, name: "fuzz.zip", origin: "fuzz.zip", weights: nil, verifyHashes: size % 2 == 0) {
        touch(loaded.tensors)
    }
    if let archive = try? ZipArchive(storage: storage, origin: "fuzz.zip") {
        for entry in archive.entries {
            guard let (s, offset, count) = try? archive.contents(of: entry) else { continue }
            precondition(offset >= 0 && count >= 0 && offset + count <= s.count, "entry \(entry.name) lies outside its storage")
            if count > 0 { _ = s.bytes[offset] ^ s.bytes[offset + count - 1] }
        }
    }
    return 0
}
