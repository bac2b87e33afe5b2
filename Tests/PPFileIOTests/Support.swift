import XCTest

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@testable import PPFileIO

/// A fresh folder under the system temp dir, removed by `tearDown` of the tests that use it.
func makeTemporaryFolder() -> String {
    var template = Array("/tmp/ppfileio-tests-XXXXXX".utf8CString)
    let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    precondition(made != nil, "cannot create a temporary folder")
    return template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
}

/// Names in `folder`, sorted, without "." and "..".
func listFolder(_ folder: String) -> [String] { FileOutput.entries(of: folder) }

func readWholeFile(_ path: String) throws -> [UInt8] {
    let s = try ByteStorage(mappingFile: path)
    return Array(s.bytes)
}

func writeRawFile(_ path: String, _ bytes: [UInt8]) {
    let f = fopen(path, "wb")!
    if !bytes.isEmpty { _ = bytes.withUnsafeBytes { fwrite($0.baseAddress!, 1, $0.count, f) } }
    fclose(f)
}

/// Deterministic bytes (SplitMix64, the generator of PPTensor's SeededRandom, which this layer sits below).
func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed
    return (0..<count).map { _ in
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return UInt8(truncatingIfNeeded: z ^ (z >> 31))
    }
}
