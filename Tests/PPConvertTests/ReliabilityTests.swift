import Foundation
import PPCheckpoint
import PPFileIO
import PPJSON
import PPTensor
import PPTorchFormat
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Hostile inputs and damaged outputs through the executables: memory caps, integrity checks.
final class ReliabilityTests: XCTestCase {
    struct Run { var status: Int32; var stderr: String }

    /// Runs `ppconvert ARGS` with its address space capped at `memoryKiB` (ulimit -v).
    func ppconvert(_ arguments: [String], memoryKiB: Int? = nil) throws -> Run {
        let folder = Paths.scratch(self)
        let quoted = arguments.map { "'" + $0 + "'" }.joined(separator: " ")
        let cap = memoryKiB.map { "ulimit -v \($0); " } ?? ""
        let raw = system("sh -c \"\(cap)exec \(CommandLineTests.binaries)/ppconvert \(quoted) >/dev/null 2>\(folder)/err </dev/null\"")
        return Run(status: (raw >> 8) & 0xff, stderr: String(decoding: try fileBytes("\(folder)/err"), as: UTF8.self))
    }

    /// A zip whose one deflated entry (4 MiB of random bytes in stored deflate blocks) declares
    /// `declared` bytes uncompressed, in both headers.
    static func deflatedZip(declared: UInt32) -> [UInt8] {
        var random = SeededRandom(seed: 7)
        let data = (0..<(4 << 20)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        var deflated: [UInt8] = []
        var at = 0
        while at < data.count {
            let n = min(65535, data.count - at)
            deflated += [at + n == data.count ? 1 : 0, UInt8(n & 0xff), UInt8(n >> 8), UInt8(~n & 0xff), UInt8((~n >> 8) & 0xff)]
            deflated += data[at ..< at + n]
            at += n
        }
        func le16(_ v: Int) -> [UInt8] { [UInt8(v & 0xff), UInt8((v >> 8) & 0xff)] }
        func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
        let name = Array("model.safetensors".utf8)
        let crc = CRC32.checksum(data)
        let common = le16(20) + le16(0) + le16(8) + le16(0) + le16(0x21) + le32(crc) + le32(UInt32(deflated.count)) + le32(declared) + le16(name.count) + le16(0)
        let local = le32(0x0403_4b50) + common + name
        let central = le32(0x0201_4b50) + le16(20) + common + le16(0) + le16(0) + le16(0) + le32(0) + le32(0) + name
        let offset = local.count + deflated.count
        let end = le32(0x0605_4b50) + le16(0) + le16(0) + le16(1) + le16(1) + le32(UInt32(central.count)) + le32(UInt32(offset)) + le16(0)
        return local + deflated + central + end
    }

    /// 4 MiB of deflated data declaring 3.75 GiB (within deflate's 1032:1 ratio, so not refusable by
    /// arithmetic): with the address space capped at 1 GiB the reader must still end with one line
    /// and exit 65, because it counts the real inflated size before allocating anything that large.
    func testLyingDeflatedSizeUnderAMemoryCap() throws {
        let folder = Paths.scratch(self)
        let path = "\(folder)/lying.zip"
        try FileOutput.writeFile(path, bytes: Self.deflatedZip(declared: 0xF000_0000))
        let r = try ppconvert(["inspect", path], memoryKiB: 1 << 20)
        XCTAssertEqual(r.status, 65, r.stderr)
        XCTAssertTrue(r.stderr.contains("model.safetensors"), r.stderr)
        XCTAssertTrue(r.stderr.contains("inflates to 4194304 bytes but declares 4026531840"), r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
    }

    /// Integrity: one flipped byte in model.safetensors of a native folder is refused by every loader
    /// path (inspect, convert, verify) with a message naming the file and both hashes; --no-verify-hash
    /// lets it through.
    func testCorruptedNativeWeightsAreRefusedWithBothHashes() throws {
        let folder = Paths.scratch(self)
        let out = "\(folder)/ppf"
        let convert = try ppconvert(["from-dit", Paths.fixture("sit.pt"), "--heads", "4", "--objective", "velocity", "--out", out, "--no-verify"])
        XCTAssertEqual(convert.status, 0, convert.stderr)
        let config = try JSON.parse(file: "\(out)/config.json")
        let recorded = try XCTUnwrap(config["model_sha256"]?.stringValue)
        var bytes = try fileBytes("\(out)/model.safetensors")
        bytes[bytes.count - 1] ^= 0x40          // a weight, not the header: the file still parses
        try FileOutput.writeFile("\(out)/model.safetensors", bytes: bytes)
        let actual = bytes.withUnsafeBytes { SHA256.hash($0) }
        for args in [["inspect", out], ["convert", out, "\(folder)/x.safetensors", "--format", "safetensors"],
                     ["verify", out, "--against", Paths.fixture("sit.pt"), "--heads", "4"]] {
            let r = try ppconvert(args)
            XCTAssertEqual(r.status, 65, "\(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains("\(out)/model.safetensors"), r.stderr)
            XCTAssertTrue(r.stderr.contains(recorded) && r.stderr.contains(actual), r.stderr)
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(folder)/x.safetensors"))
        let skipped = try ppconvert(["inspect", out, "--no-verify-hash"])
        XCTAssertEqual(skipped.status, 0, skipped.stderr)
    }
}

/// Write failures (a full disk, injected here with a file-size limit so no mount is needed; the
/// tmpfs variant is scripts/disk-full-test.sh): one line, exit 74, nothing partial left, and an
/// existing output untouched.
final class WriteFailureTests: XCTestCase {
    func ppconvertLimited(_ arguments: [String], fileSizeKiB: Int, in folder: String) -> (status: Int32, stderr: String) {
        let quoted = arguments.map { "'" + $0 + "'" }.joined(separator: " ")
        // SIGXFSZ ignored: write() then fails with EFBIG instead of the process being killed.
        let raw = system("sh -c \"trap '' XFSZ; ulimit -f \(fileSizeKiB); exec \(CommandLineTests.binaries)/ppconvert \(quoted) >/dev/null 2>\(folder)/err </dev/null\"")
        let err = (try? fileBytes("\(folder)/err")).map { String(decoding: $0, as: UTF8.self) } ?? ""
        return ((raw >> 8) & 0xff, err)
    }

    func listing(_ folder: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0 != "err" }.sorted()
    }

    func testFailedWritesLeaveNoPartialOutput() throws {
        let logs = Paths.scratch(self)
        let folder = Paths.scratch(self)
        let source = Paths.digitsZip   // 2.9 MB of weights: over a 1 MiB limit
        for (args, name) in [(["from-dit", source, "--no-verify", "--out", "\(folder)/native"], "native"),
                             (["convert", source, "\(folder)/w.pt", "--format", "torch"], "w.pt"),
                             (["convert", source, "\(folder)/w.safetensors", "--format", "safetensors"], "w.safetensors")] {
            let r = ppconvertLimited(args, fileSizeKiB: 1024, in: logs)
            XCTAssertEqual(r.status, 74, "\(args): \(r.stderr)")
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
            XCTAssertTrue(r.stderr.contains("\(folder)/\(name)") && r.stderr.contains("File too large"), r.stderr)
            XCTAssertFalse(r.stderr.contains(".tmp-"), r.stderr)
            XCTAssertEqual(listing(folder), [], "left behind: \(listing(folder))")
        }
        // An existing native folder survives a failed replacement byte for byte.
        let good = ppconvertLimited(["from-dit", source, "--no-verify", "--out", "\(folder)/native"], fileSizeKiB: 1 << 20, in: logs)
        XCTAssertEqual(good.status, 0, good.stderr)
        let before = try fileBytes("\(folder)/native/model.safetensors") + fileBytes("\(folder)/native/config.json")
        let r = ppconvertLimited(["from-dit", source, "--levels", "3", "--no-verify", "--out", "\(folder)/native", "--force"], fileSizeKiB: 1024, in: logs)
        XCTAssertEqual(r.status, 74, r.stderr)
        XCTAssertEqual(try fileBytes("\(folder)/native/model.safetensors") + fileBytes("\(folder)/native/config.json"), before)
        XCTAssertEqual(listing(folder), ["native"])
    }
}
