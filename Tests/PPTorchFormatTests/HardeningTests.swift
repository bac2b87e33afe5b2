import Foundation
import PPFileIO
import PPTensor
@testable import PPTorchFormat
import XCTest

/// Hostile or broken inputs built from literal bytes: each must fail with a clear PPError naming
/// the file and the entry, and never execute, hang or crash.
final class HardeningTests: XCTestCase {
    var folder = ""
    override func setUp() { folder = makeTemporaryFolder() }
    override func tearDown() { FileOutput.removeTree(folder) }

    /// A torch-style archive `x/...` holding `pickle` and the given extra records.
    func archive(_ pickle: [UInt8], records: [(String, [UInt8])] = [], name: String = "bad.pt") throws -> String {
        let path = "\(folder)/\(name)"
        let zip = try TorchZipWriter(path: path)
        try zip.addRecord(name: "x/data.pkl", bytes: pickle)
        for (n, b) in records { try zip.addRecord(name: "x/\(n)", bytes: b) }
        try zip.addRecord(name: "x/version", bytes: Array("3\n".utf8))
        try zip.finish()
        return path
    }

    /// Pickle bytes spelled as text, one character per byte (latin-1).
    func pickle(_ text: String) -> [UInt8] { text.unicodeScalars.map { UInt8(truncatingIfNeeded: $0.value) } }

    /// Protocol-2 pickle of {'w': tensor} with the given storage numel, offset, size and stride.
    func tensorPickle(numel: Int, offset: Int, size: [Int], stride: [Int]) -> [UInt8] {
        func ints(_ v: [Int]) -> [UInt8] { [0x28] + v.flatMap { [0x4a] + TorchZipLayout.le32($0) } + [0x74] }
        var p: [UInt8] = [0x80, 2, 0x7d, 0x58] + TorchZipLayout.le32(1) + Array("w".utf8)
        p += Array("ctorch._utils\n_rebuild_tensor_v2\n(".utf8)
        p += [0x28, 0x58] + TorchZipLayout.le32(7) + Array("storage".utf8) + Array("ctorch\nFloatStorage\n".utf8)
        p += [0x58] + TorchZipLayout.le32(1) + Array("0".utf8) + [0x58] + TorchZipLayout.le32(3) + Array("cpu".utf8)
        p += [0x4a] + TorchZipLayout.le32(numel) + [0x74, 0x51]
        p += [0x4a] + TorchZipLayout.le32(offset) + ints(size) + ints(stride) + [0x89, 0x4e, 0x74, 0x52, 0x73, 0x2e]
        return p
    }

    func testValidHandBuiltTensorReads() throws {
        // Control for the negative cases below: the same construction with consistent numbers reads.
        let values: [Float] = [1, 2, 3, 4, 5, 6]
        let path = try archive(tensorPickle(numel: 6, offset: 1, size: [2, 2], stride: [1, 2]),
                               records: [("data/0", values.withUnsafeBytes { Array($0) })])
        let t = try XCTUnwrap(TorchCheckpoint.read(path: path).stateDict(at: "")?["w"])
        XCTAssertEqual(t.floats(), [2, 4, 3, 5])
    }

    func testGlobalOsSystemIsRefusedNotRun() throws {
        let marker = "\(folder)/ran"
        let path = try archive(pickle("\u{80}\u{02}cos\nsystem\nX\(String(UnicodeScalar(UInt8(10 + marker.utf8.count))))\u{00}\u{00}\u{00}touch \(marker)\u{85}R."))
        assertPPError(.badInput, mentions: [path, "x/data.pkl", "os.system"]) { _ = try TorchCheckpoint.read(path: path) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: marker))
    }

    func testBuiltinsEvalViaReduceIsRefused() throws {
        let path = try archive(pickle("\u{80}\u{02}cbuiltins\neval\nX\u{04}\u{00}\u{00}\u{00}1+1\n\u{85}R."))
        assertPPError(.badInput, mentions: [path, "x/data.pkl", "builtins.eval"]) { _ = try TorchCheckpoint.read(path: path) }
        // Also through STACK_GLOBAL (protocol 4 spelling).
        let path4 = try archive([0x80, 4, 0x8c, 8] + Array("builtins".utf8) + [0x8c, 4] + Array("eval".utf8) + [0x93, 0x29, 0x52, 0x2e], name: "p4.pt")
        assertPPError(.badInput, mentions: [path4, "x/data.pkl", "builtins.eval"]) { _ = try TorchCheckpoint.read(path: path4) }
    }

    func testReduceOfAllowedTypeWithNonTupleArgumentsAndNonGlobalIsRefused() throws {
        // REDUCE where the callable is a plain string: nothing callable, refused.
        let path = try archive(pickle("\u{80}\u{02}X\u{01}\u{00}\u{00}\u{00}a)R."))
        assertPPError(.badInput, mentions: [path, "x/data.pkl", "REDUCE"]) { _ = try TorchCheckpoint.read(path: path) }
    }

    func testTruncatedPickle() throws {
        let full = tensorPickle(numel: 4, offset: 0, size: [4], stride: [1])
        for cut in [1, 5, 40, full.count - 1] {
            let path = try archive(Array(full.prefix(cut)), records: [("data/0", [UInt8](repeating: 0, count: 16))], name: "cut\(cut).pt")
            assertPPError(.badInput, mentions: [path, "x/data.pkl", "truncated"]) { _ = try TorchCheckpoint.read(path: path) }
        }
    }

    func testUnknownOpcodeNamesByteAndOffset() throws {
        let path = try archive([0x80, 2, 0x4e, 0xff, 0x2e])
        assertPPError(.badInput, mentions: [path, "x/data.pkl", "0xff", "offset 3"]) { _ = try TorchCheckpoint.read(path: path) }
        // INST (protocol 0, instantiates classes) is not supported either.
        let inst = try archive(pickle("\u{80}\u{02}(ios\nsystem\n."), name: "inst.pt")
        assertPPError(.badInput, mentions: [inst, "x/data.pkl", "0x69"]) { _ = try TorchCheckpoint.read(path: inst) }
    }

    func testMemoCycleDoesNotHang() throws {
        // l = []; l.append(l); d = {'a': l}; d['self'] = d
        let bytes: [UInt8] = [0x80, 2, 0x7d, 0x71, 0, 0x58, 1, 0, 0, 0, 0x61, 0x5d, 0x71, 1, 0x68, 1, 0x61, 0x73,
                              0x68, 0, 0x58, 4, 0, 0, 0] + Array("self".utf8) + [0x68, 0, 0x73, 0x2e]
        let path = try archive(bytes)
        let checkpoint = try TorchCheckpoint.read(path: path)
        XCTAssertTrue(checkpoint.stateDicts().isEmpty)
        let summary = checkpoint.root.summary()
        XCTAssertTrue(summary.contains("<cycle>"), summary)
        guard case .list(let l)? = checkpoint.root["a"] else { return XCTFail("a is not a list") }
        XCTAssertTrue(l.items.count == 1)
        guard case .list(let inner) = l.items[0] else { return XCTFail("not self-referencing") }
        XCTAssertTrue(inner === l, "memo must keep reference semantics")
        XCTAssertEqual(checkpoint.describeNonTensorEntries().count, 2)
    }

    func testMutationAfterMemoizationIsSeen() throws {
        // x = []; d = {'a': x, 'b': x}; then x.append(1) through the memo.
        let bytes: [UInt8] = [0x80, 2, 0x7d, 0x58, 1, 0, 0, 0, 0x61, 0x5d, 0x71, 7, 0x73, 0x58, 1, 0, 0, 0, 0x62, 0x68, 7, 0x73,
                              0x68, 7, 0x4b, 1, 0x61, 0x30, 0x2e]
        let root = try bytes.withUnsafeBytes { try Unpickler.load($0, origin: "mem", entry: "p") }
        XCTAssertEqual(root.summary(), "{'a': [1], 'b': [1]}")
    }

    func testHugeMemoIndexAndMissingMemo() throws {
        let huge = try archive([0x80, 2, 0x4e, 0x72, 0xff, 0xff, 0xff, 0x7f, 0x2e])
        assertPPError(.badInput, mentions: [huge, "x/data.pkl", "memo index 2147483647"]) { _ = try TorchCheckpoint.read(path: huge) }
        let missing = try archive([0x80, 2, 0x6a, 0x10, 0, 0, 0, 0x2e], name: "missing.pt")
        assertPPError(.badInput, mentions: [missing, "x/data.pkl", "never stored"]) { _ = try TorchCheckpoint.read(path: missing) }
    }

    func testDeepNestingIsRefused() throws {
        let deep = try archive([0x80, 2] + [UInt8](repeating: 0x5d, count: 5000) + [UInt8](repeating: 0x61, count: 4999) + [0x2e])
        assertPPError(.badInput, mentions: [deep, "x/data.pkl", "nest"]) { _ = try TorchCheckpoint.read(path: deep) }
        let marks = try archive([0x80, 2] + [UInt8](repeating: 0x28, count: 10000) + [0x2e], name: "marks.pt")
        assertPPError(.badInput, mentions: [marks, "x/data.pkl", "MARK"]) { _ = try TorchCheckpoint.read(path: marks) }
    }

    func testBigEndianByteOrderIsRefused() throws {
        let path = try archive(tensorPickle(numel: 1, offset: 0, size: [1], stride: [1]),
                               records: [("byteorder", Array("big".utf8)), ("data/0", [0, 0, 0x80, 0x3f])])
        assertPPError(.unsupported, mentions: [path, "x/byteorder", "big-endian"]) { _ = try TorchCheckpoint.read(path: path) }
    }

    func testStorageRecordTooShort() throws {
        let path = try archive(tensorPickle(numel: 4, offset: 0, size: [4], stride: [1]), records: [("data/0", [UInt8](repeating: 0, count: 12))])
        assertPPError(.badInput, mentions: [path, "x/data/0", "holds 12 bytes, expected 4 × 4 = 16"]) { _ = try TorchCheckpoint.read(path: path) }
    }

    func testStridesReachingOutsideTheStorage() throws {
        let storage = [UInt8](repeating: 0, count: 24)
        for (offset, size, stride) in [(0, [2, 3], [3, 2]), (5, [2], [1]), (0, [7], [1])] {
            let path = try archive(tensorPickle(numel: 6, offset: offset, size: size, stride: stride),
                                   records: [("data/0", storage)], name: "s\(offset)\(size.count)\(stride[0]).pt")
            assertPPError(.badInput, mentions: [path, "x/data.pkl", "6-element storage"]) { _ = try TorchCheckpoint.read(path: path) }
        }
    }

    // MARK: zip level

    func validArchiveBytes() throws -> [UInt8] {
        let path = try archive(tensorPickle(numel: 1, offset: 0, size: [1], stride: [1]), records: [("data/0", [0, 0, 0x80, 0x3f])], name: "ok.pt")
        return try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// Offset of the central record of `name`.
    func centralRecord(_ bytes: [UInt8], _ name: String) -> Int {
        let needle = Array(name.utf8)
        var i = 0
        while i + 46 + needle.count <= bytes.count {
            if bytes[i] == 0x50, bytes[i + 1] == 0x4b, bytes[i + 2] == 1, bytes[i + 3] == 2, Array(bytes[i + 46 ..< i + 46 + needle.count]) == needle { return i }
            i += 1
        }
        return -1
    }

    func write(_ bytes: [UInt8], _ name: String) throws -> String {
        let path = "\(folder)/\(name)"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    func testZipEntryWhoseSizesLie() throws {
        var bytes = try validArchiveBytes()
        let record = centralRecord(bytes, "x/data/0")
        XCTAssertGreaterThan(record, 0)
        for k in 0..<4 { bytes[record + 20 + k] = 0x7f; bytes[record + 24 + k] = 0x7f }  // ~2 GB claimed
        let path = try write(bytes, "lying.pt")
        assertPPError(.badInput, mentions: [path, "x/data/0", "more than the file holds"]) { _ = try TorchCheckpoint.read(path: path) }
        // Stored entry whose compressed and uncompressed sizes differ.
        var mixed = try validArchiveBytes()
        mixed[record + 24] &+= 1
        let mixedPath = try write(mixed, "mixed.pt")
        assertPPError(.badInput, mentions: [mixedPath, "x/data/0"]) { _ = try ZipArchive(path: mixedPath) }
    }

    func testOverlappingZipEntries() throws {
        var bytes = try validArchiveBytes()
        // Grow data.pkl's declared size so that its data runs over the next entry's header.
        let record = centralRecord(bytes, "x/data.pkl")
        let size = Int(bytes[record + 24]) | Int(bytes[record + 25]) << 8
        let grown = TorchZipLayout.le32(size + 40)
        for k in 0..<4 { bytes[record + 20 + k] = grown[k]; bytes[record + 24 + k] = grown[k] }
        let path = try write(bytes, "overlap.pt")
        assertPPError(.badInput, mentions: [path, "overlaps entry x/data.pkl"]) { _ = try TorchCheckpoint.read(path: path) }
    }

    func testEntryCountTheDirectoryCannotHold() throws {
        var bytes = try validArchiveBytes()
        // zip64 end record: entry counts at +24 and +32.
        var z = bytes.count - 22 - 20 - 56
        XCTAssertEqual(Array(bytes[z ..< z + 4]), [0x50, 0x4b, 6, 6])
        z += 24
        for k in 0..<8 { bytes[z + k] = 0x0f; bytes[z + 8 + k] = 0x0f }
        let path = try write(bytes, "count.pt")
        assertPPError(.badInput, mentions: [path, "entries"]) { _ = try ZipArchive(path: path) }
    }

    func testEmptyFileAndNotAZip() throws {
        let empty = try write([], "empty.pt")
        assertPPError(.badInput, mentions: [empty, "empty"]) { _ = try TorchCheckpoint.read(path: empty) }
        let text = try write(Array("just some text, no archive here".utf8), "text.pt")
        assertPPError(.badInput, mentions: [text, "not a zip"]) { _ = try TorchCheckpoint.read(path: text) }
        let truncated = try write(Array(try validArchiveBytes().prefix(200)), "truncated.pt")
        assertPPError(.badInput, mentions: [truncated]) { _ = try TorchCheckpoint.read(path: truncated) }
        assertPPError(.missingInput, mentions: ["\(folder)/absent.pt"]) { _ = try TorchCheckpoint.read(path: "\(folder)/absent.pt") }
    }

    func testNotATorchArchive() throws {
        let path = "\(folder)/flat.zip"
        let zip = try TorchZipWriter(path: path)
        try zip.addRecord(name: "readme.txt", bytes: Array("hi".utf8))
        try zip.finish()
        assertPPError(.badInput, mentions: [path, "readme.txt", "not inside a folder"]) { _ = try TorchCheckpoint.read(path: path) }
    }
}

/// Compressed entries: inflated into owned memory, with the declared size enforced.
final class DeflatedEntryTests: XCTestCase {
    /// Written by CPython's zipfile: one deflated entry `d/a.txt` = "hello deflate " × 20 (280 bytes).
    static let deflatedZipHex = "504b0304140000000800af207b5db9b8eeae140000001801000007000000642f612e747874cb48cdc9c95748494dcb492c4955c818e5417900504b01021403140000000800af207b5db9b8eeae1400000018010000070000000000000000000000800100000000642f612e747874504b0506000000000100010035000000390000000000"

    static func bytes(_ hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var it = hex.makeIterator()
        while let a = it.next(), let b = it.next() { out.append(UInt8(String([a, b]), radix: 16)!) }
        return out
    }

    func testDeflatedEntryInflates() throws {
        let archive = try ZipArchive(storage: ByteStorage(bytes: Self.bytes(Self.deflatedZipHex), origin: "deflated.zip"), origin: "deflated.zip")
        let entry = try XCTUnwrap(archive.entry(named: "d/a.txt"))
        XCTAssertFalse(entry.isStored)
        XCTAssertEqual(String(decoding: try archive.bytes(of: entry), as: UTF8.self), String(repeating: "hello deflate ", count: 20))
    }

    func testDeflatedEntryWithLyingSizeIsRefused() throws {
        var bytes = Self.bytes(Self.deflatedZipHex)
        // Central directory uncompressed size (offset 0x39 + 24): claim 281 instead of 280.
        let central = 0x39
        XCTAssertEqual(Array(bytes[central ..< central + 4]), [0x50, 0x4b, 1, 2])
        bytes[central + 24] = 0x19
        // Local and central headers disagree: libzip's consistency check refuses the archive.
        assertPPError(.badInput, mentions: ["lying.zip", "inconsistent"]) {
            _ = try ZipArchive(storage: ByteStorage(bytes: bytes, origin: "lying.zip"), origin: "lying.zip")
        }
        // Both headers lie the same way: inflation yields 280 bytes, not the declared 281.
        bytes[22] = 0x19
        let archive = try ZipArchive(storage: ByteStorage(bytes: bytes, origin: "lying.zip"), origin: "lying.zip")
        let entry = try XCTUnwrap(archive.entry(named: "d/a.txt"))
        assertPPError(.badInput, mentions: ["lying.zip", "d/a.txt"]) { _ = try archive.contents(of: entry) }
        // A declared size no deflate stream of 20 bytes can produce is refused before allocating it.
        for (k, v) in [UInt8](TorchZipLayout.le32(1 << 30)).enumerated() { bytes[22 + k] = v; bytes[central + 24 + k] = v }
        let bomb = try ZipArchive(storage: ByteStorage(bytes: bytes, origin: "bomb.zip"), origin: "bomb.zip")
        assertPPError(.badInput, mentions: ["bomb.zip", "d/a.txt", "only 20 compressed bytes"]) { _ = try bomb.contents(of: bomb.entries[0]) }
    }
}
