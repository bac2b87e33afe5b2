import Foundation
import PPFileIO
import PPTensor
@testable import PPTorchFormat
import XCTest

final class TorchWriterTests: XCTestCase {
    var folder = ""
    override func setUp() { folder = makeTemporaryFolder() }
    override func tearDown() { FileOutput.removeTree(folder) }

    /// One small tensor of every writable dtype, with distinct byte patterns.
    func sampleTensors() -> TensorDict {
        var dict = TensorDict()
        for (i, dtype) in [DType.f32, .f16, .bf16, .f64, .i64, .i32, .i16, .i8, .u8, .bool].enumerated() {
            let count = 6
            let bytes = (0 ..< count * dtype.byteSize).map { UInt8(truncatingIfNeeded: ($0 * 37 + i * 11) & (dtype == .bool ? 1 : 0xff)) }
            dict["t.\(dtype.shortName)"] = TensorView(dtype: dtype, shape: [2, 3], bytes: bytes)
        }
        dict["scalar"] = TensorView(floats: [2.5], shape: [])
        dict["empty"] = TensorView(floats: [], shape: [0, 4])
        return dict
    }

    func testRoundTripEveryDTypeAndByteIdenticalRewrite() throws {
        let tensors = sampleTensors()
        let first = "\(folder)/a.pt", second = "\(folder)/b.pt"
        try TorchWriter.write(.stateDict(tensors), to: first, archiveName: "model")
        try TorchWriter.write(.stateDict(tensors), to: second, archiveName: "model")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: first)), try Data(contentsOf: URL(fileURLWithPath: second)))

        let back = try XCTUnwrap(TorchCheckpoint.read(path: first).stateDict(at: ""))
        XCTAssertEqual(back.names, tensors.names)
        for (name, view) in tensors.items {
            let read = try XCTUnwrap(back[name])
            XCTAssertEqual(read.dtype, view.dtype, name)
            XCTAssertEqual(read.shape, view.shape, name)
            XCTAssertEqual(read.rowMajorBytes(), view.rowMajorBytes(), name)
        }
        // Reading what we wrote and writing it again gives the same file.
        let third = "\(folder)/c.pt"
        try TorchWriter.write(.stateDict(back), to: third, archiveName: "model")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: first)), try Data(contentsOf: URL(fileURLWithPath: third)))
    }

    func testLayoutMatchesTorch() throws {
        let path = "\(folder)/sd.pt"
        try TorchWriter.write(.stateDict(sampleTensors()), to: path, archiveName: "sd")
        let archive = try ZipArchive(path: path)
        let names = archive.entries.map(\.name)
        XCTAssertEqual(Array(names.prefix(4)), ["sd/data.pkl", "sd/.format_version", "sd/.storage_alignment", "sd/byteorder"])
        XCTAssertEqual(Array(names.suffix(2)), ["sd/version", "sd/.data/serialization_id"])
        XCTAssertEqual(names.filter { $0.hasPrefix("sd/data/") }, (0 ..< 12).map { "sd/data/\($0)" })
        for e in archive.entries {
            XCTAssertTrue(e.isStored, e.name)
            XCTAssertEqual(e.dataOffset % 64, 0, e.name)
        }
        XCTAssertEqual(try archive.bytes(of: archive.entry(named: "sd/version")!), Array("3\n".utf8))
        let id = String(decoding: try archive.bytes(of: archive.entry(named: "sd/.data/serialization_id")!), as: UTF8.self)
        XCTAssertEqual(id.count, 40)
        XCTAssertTrue(id.allSatisfy(\.isNumber))
        // Storages follow each other as torch's offset calculation assumes: data + 16-byte descriptor, then the next header.
        let storages = archive.entries.filter { $0.name.hasPrefix("sd/data/") && $0.uncompressedSize > 0 }
        for (a, b) in zip(storages, storages.dropFirst()) where b.name != "sd/data/11" {
            XCTAssertEqual(b.localHeaderOffset, a.dataOffset + a.uncompressedSize + 16, b.name)
        }
        // The CRCs in the central directory are real.
        for e in archive.entries { XCTAssertEqual(CRC32.checksum(try archive.bytes(of: e)), e.crc32, e.name) }
    }

    func testSitRewriteReadsBackIdentically() throws {
        let source = try XCTUnwrap(TorchCheckpoint.read(path: Fixtures.path("sit.pt")).stateDict(at: ""))
        let path = "\(folder)/sit.pt"
        try TorchWriter.write(.dict([("ema", .stateDict(source)), ("step", .int(70000)), ("lr", .float(1e-4)),
                                     ("tags", .list([.string("a"), .bool(true), .none, .tuple([.int(-5), .int(1 << 40)])]))]),
                              to: path, archiveName: "sit")
        let checkpoint = try TorchCheckpoint.read(path: path)
        let back = try XCTUnwrap(checkpoint.stateDict(at: "ema"))
        XCTAssertEqual(back.names, source.names)
        for (name, view) in source.items { XCTAssertEqual(back[name]?.rowMajorBytes(), view.rowMajorBytes(), name) }
        XCTAssertEqual(checkpoint.root["step"]?.intValue, 70000)
        guard case .float(let lr)? = checkpoint.root["lr"] else { return XCTFail("lr") }
        XCTAssertEqual(lr, 1e-4)
        XCTAssertEqual(checkpoint.root["tags"]?.summary(), "['a', True, None, (-5, 1099511627776)]")
    }

    func testStridedSourceIsWrittenContiguous() throws {
        // A 3x2 transpose of a row-major 2x3 block: values 0..5 read as [[0,3],[1,4],[2,5]].
        let block = TensorView(floats: [0, 1, 2, 3, 4, 5], shape: [2, 3])
        let transposed = TensorView(dtype: .f32, shape: [3, 2], strides: [1, 3], storage: block.storage, byteOffset: 0)
        let path = "\(folder)/t.pt"
        try TorchWriter.write(.orderedDict([("t", .tensor(transposed))]), to: path, archiveName: "t")
        let back = try XCTUnwrap(TorchCheckpoint.read(path: path).stateDict(at: "")?["t"])
        XCTAssertEqual(back.strides, [2, 1])
        XCTAssertEqual(back.floats(), [0, 3, 1, 4, 2, 5])
    }

    func testCRC32KnownValues() {
        XCTAssertEqual(CRC32.checksum(Array("123456789".utf8)), 0xCBF4_3926)  // the standard check value
        XCTAssertEqual(CRC32.checksum([]), 0)
        XCTAssertEqual(CRC32.checksum(Array("The quick brown fox jumps over the lazy dog".utf8)), 0x414F_A339)
        XCTAssertEqual(CRC32.checksum([0]), 0xD202_EF8D)
    }

    /// Pieces of any size, empty ones included, give the one-shot value, which is the bitwise definition's.
    func testCRC32IncrementalEqualsOneShot() {
        let bytes = (0..<100_003).map { UInt8(truncatingIfNeeded: ($0 &* 2_654_435_761) >> 13) }
        var reference: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            reference ^= UInt32(b)
            for _ in 0..<8 { reference = reference & 1 != 0 ? 0xEDB8_8320 ^ (reference >> 1) : reference >> 1 }
        }
        reference ^= 0xFFFF_FFFF
        XCTAssertEqual(CRC32.checksum(bytes), reference)
        for pieceSize in [1, 7, 4096, 65_537] {
            var crc = CRC32()
            var at = 0
            while at < bytes.count {
                let end = min(at + pieceSize, bytes.count)
                bytes[at..<end].withUnsafeBytes { crc.update($0) }
                crc.update(UnsafeRawBufferPointer(start: nil, count: 0))
                at = end
            }
            XCTAssertEqual(crc.value, reference, "pieces of \(pieceSize)")
        }
    }

    func testZip64HeadersAtUnitLevel() throws {
        let big = 3_000_000_000 + 4_000_000_000  // > 4 GiB
        for (offset, size) in [(5_000_000_000, 100), (100, big), (5_000_000_000, big), (0, 100)] {
            let header = TorchZipLayout.localHeader(name: "a/data/0", size: size, headerOffset: offset)
            XCTAssertEqual((offset + header.count) % 64, 0, "data must be 64-aligned")
            let zip64 = TorchZipLayout.needsZip64(size: size, headerOffset: offset)
            let extraStart = 30 + "a/data/0".utf8.count
            XCTAssertEqual(header[extraStart] == 1 && header[extraStart + 1] == 0, zip64, "zip64 extra first when needed")
            XCTAssertEqual(TorchZipLayout.dataDescriptor(crc: 7, size: size, headerOffset: offset).count, zip64 ? 24 : 16)
            let central = TorchZipLayout.centralRecord(name: "a/data/0", crc: 7, size: size, headerOffset: offset)
            let sizeField = UInt32(central[20]) | UInt32(central[21]) << 8 | UInt32(central[22]) << 16 | UInt32(central[23]) << 24
            XCTAssertEqual(sizeField == 0xFFFF_FFFF, size >= 0xFFFF_FFFF)
            let expectedExtra = (size >= 0xFFFF_FFFF ? 16 : 0) + (offset >= 0xFFFF_FFFF ? 8 : 0)
            XCTAssertEqual(central.count, 46 + 8 + (expectedExtra > 0 ? 4 + expectedExtra : 0))
        }
        XCTAssertTrue(TorchZipLayout.dataDescriptor(crc: 0, size: 0, headerOffset: 0).isEmpty, "miniz writes no descriptor for empty records")
        // torch's formula checked on candle's test.pt: data.pkl at 0 -> 17 padding bytes, byteorder at 251 -> 21.
        XCTAssertEqual(TorchZipLayout.localHeader(name: "test/data.pkl", size: 10, headerOffset: 0).count, 64)
        XCTAssertEqual(TorchZipLayout.localHeader(name: "test/byteorder", size: 6, headerOffset: 251).count, 320 - 251)
    }

    /// The reader understands the ZIP64 central-directory extra (values moved out of 32-bit fields).
    func testReaderDecodesZip64ExtraFields() throws {
        let name = Array("z/x".utf8), payload = Array("hello".utf8)
        let le16 = TorchZipLayout.le16, le32 = TorchZipLayout.le32, le64 = TorchZipLayout.le64
        var file: [UInt8] = le32(0x0403_4b50) + le16(45) + le16(0) + le16(0) + le16(0) + le16(0) + le32(Int(CRC32.checksum(payload)))
        file += le32(5) + le32(5) + le16(name.count) + le16(0) + name + payload
        let cdOffset = file.count
        let extra = le16(1) + le16(24) + le64(5) + le64(5) + le64(0)
        var cd: [UInt8] = le32(0x0201_4b50) + le16(45) + le16(45) + le16(0) + le16(0) + le16(0) + le16(0) + le32(Int(CRC32.checksum(payload)))
        cd += le32(0xFFFF_FFFF) + le32(0xFFFF_FFFF) + le16(name.count) + le16(extra.count) + le16(0) + le16(0) + le16(0) + le32(0)
        cd += le32(0xFFFF_FFFF) + name + extra
        file += cd + TorchZipLayout.endRecords(entryCount: 1, directoryOffset: cdOffset, directorySize: cd.count)
        let archive = try ZipArchive(storage: ByteStorage(bytes: file, origin: "zip64.zip"), origin: "zip64.zip")
        let entry = try XCTUnwrap(archive.entry(named: "z/x"))
        XCTAssertEqual(entry.uncompressedSize, 5)
        XCTAssertEqual(try archive.bytes(of: entry), payload)
    }
}
