import XCTest

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@testable import PPFileIO

final class SHA256Tests: XCTestCase {
    private var folder = ""
    override func setUp() { folder = makeTemporaryFolder() }
    override func tearDown() { FileOutput.removeTree(folder) }

    /// One shot and streamed byte by byte must both give `expected`.
    private func assertDigest(_ bytes: [UInt8], _ expected: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(SHA256.hash(bytes), expected, "one shot", file: file, line: line)
        guard bytes.count <= 1000 else { return }
        var h = SHA256()
        for b in bytes { h.update([b]) }
        XCTAssertEqual(h.finishHex(), expected, "byte by byte", file: file, line: line)
    }

    // FIPS 180-4 examples / NIST CAVP short and long messages.
    func testNISTVectors() {
        assertDigest([], "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        assertDigest(Array("abc".utf8), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        assertDigest(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8),
                     "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        assertDigest(Array(("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
                            + "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu").utf8),
                     "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1")
        assertDigest([UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000),
                     "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    func testStringAndRawUpdatesAgree() {
        var h = SHA256()
        h.update("ab")
        h.update("c")
        XCTAssertEqual(h.finishHex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(SHA256.hex([0x00, 0x0f, 0xa0, 0xff]), "000fa0ff")
        XCTAssertEqual(SHA256.hash(Array("abc".utf8)).count, 64)
    }

    func testChunkedUpdatesEqualOneShot() {
        let data = randomBytes(1000, seed: 1)
        let expected = SHA256.hash(data)
        for chunk in [1, 2, 7, 55, 56, 57, 63, 64, 65, 127, 128, 129, 191, 999, 1000] {
            var h = SHA256()
            var o = 0
            while o < data.count {
                let n = min(chunk, data.count - o)
                h.update(Array(data[o ..< o + n]))
                o += n
            }
            XCTAssertEqual(h.finishHex(), expected, "chunks of \(chunk)")
        }
        // One split at every point of the first 200 bytes, with an empty update in between.
        for split in 0...200 {
            var h = SHA256()
            h.update(Array(data[..<split]))
            h.update([])
            h.update(Array(data[split...]))
            XCTAssertEqual(h.finishHex(), expected, "split at \(split)")
        }
    }

    /// A value type: a copy taken mid-stream hashes on by itself, and finish() starts a hasher over.
    func testCopiesHashIndependently() {
        var a = SHA256()
        a.update("ab")
        var b = a
        a.update("c")
        b.update("d")
        XCTAssertEqual(a.finishHex(), SHA256.hash(Array("abc".utf8)))
        XCTAssertEqual(b.finishHex(), SHA256.hash(Array("abd".utf8)))
        a.update("abc")
        XCTAssertEqual(a.finishHex(), SHA256.hash(Array("abc".utf8)))
    }

    func testHashFileMatchesKnownDigestAndMemory() throws {
        let a = "\(folder)/a.bin"
        writeRawFile(a, [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000))
        XCTAssertEqual(try SHA256.hashFile(a), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")

        let empty = "\(folder)/empty.bin"
        writeRawFile(empty, [])
        XCTAssertEqual(try SHA256.hashFile(empty), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")

        // Longer than one 64 MiB hashing chunk and not a whole number of blocks.
        var big = [UInt8](repeating: 0, count: (64 << 20) + 100)
        for i in stride(from: 0, to: big.count, by: 4093) { big[i] = UInt8(truncatingIfNeeded: i / 4093) }
        let b = "\(folder)/big.bin"
        writeRawFile(b, big)
        XCTAssertEqual(try SHA256.hashFile(b), SHA256.hash(big))
    }

    func testHashFileMatchesSha256sum() throws {
        let tool = "/usr/bin/sha256sum"
        try XCTSkipUnless(access(tool, X_OK) == 0, "no \(tool)")
        let data = randomBytes(200_000, seed: 3)
        for n in [0, 1, 55, 56, 63, 64, 65, 119, 120, 4096, 200_000] {
            let path = "\(folder)/f\(n).bin"
            writeRawFile(path, Array(data[..<n]))
            XCTAssertEqual(try SHA256.hashFile(path), runSha256sum(tool, path), "length \(n)")
        }
    }

    func testHashFileErrors() {
        XCTAssertThrowsError(try SHA256.hashFile("\(folder)/missing.bin")) { error in
            XCTAssertEqual((error as? PPError)?.kind, .missingInput)
        }
        XCTAssertThrowsError(try SHA256.hashFile(folder)) { error in
            XCTAssertEqual((error as? PPError)?.kind, .badInput)
        }
    }

    /// The first field of `sha256sum path`.
    private func runSha256sum(_ tool: String, _ path: String) -> String? {
        guard let pipe = popen("\(tool) '\(path)'", "r") else { return nil }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 256)
        while true {
            let n = buffer.withUnsafeMutableBytes { fread($0.baseAddress!, 1, $0.count, pipe) }
            if n <= 0 { break }
            out += buffer[..<n]
        }
        guard pclose(pipe) == 0 else { return nil }
        return String(decoding: out, as: UTF8.self).split(separator: " ").first.map(String.init)
    }
}
