import PPFileIO
import PPJSON
import PPTensor
import XCTest

import PPSafetensors

/// A fresh folder under the system temporary folder, removed by `tearDown` of the caller.
func makeTemporaryFolder() throws -> String {
    var template = Array((NSTemporaryDirectory() + "/ppst-XXXXXX").utf8CString)
    guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
        throw PPError(.io, "mkdtemp failed")
    }
    return template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
}

func assertSameTensors(_ a: TensorDict, _ b: TensorDict, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.sortedNames, b.sortedNames, file: file, line: line)
    for name in a.names {
        guard let x = a[name], let y = b[name] else { continue }
        XCTAssertEqual(x.dtype, y.dtype, name, file: file, line: line)
        XCTAssertEqual(x.shape, y.shape, name, file: file, line: line)
        XCTAssertEqual(x.rowMajorBytes(), y.rowMajorBytes(), name, file: file, line: line)
    }
}

/// Tensors of every dtype, including 0-d and zero-size ones, with varied byte content.
func everyDTypeTensors() -> TensorDict {
    var d = TensorDict()
    var seed: UInt8 = 1
    func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in seed = seed &* 37 &+ 11; return seed } }
    for dtype in DType.allCases {
        for (tag, shape) in [("mat", [3, 5]), ("scalar", []), ("empty", [0]), ("empty3", [2, 0, 3]), ("vec", [7])] {
            let n = TensorView.elementCount(shape)! * dtype.byteSize
            var raw = bytes(n)
            if dtype == .bool { raw = raw.map { $0 & 1 } }
            d["\(dtype.shortName).\(tag)"] = TensorView(dtype: dtype, shape: shape, bytes: raw)
        }
    }
    return d
}

final class WriterTests: XCTestCase {
    var folder = ""

    override func setUpWithError() throws { folder = try makeTemporaryFolder() }
    override func tearDown() { FileOutput.removeTree(folder) }

    func testRoundTripEveryDType() throws {
        let tensors = everyDTypeTensors()
        let metadata = [("format", "pt"), ("note", "é \"quoted\"\n"), ("a", "")]
        let bytes = try SafetensorsWriter.serialize(tensors, metadata: metadata)
        let back = try SafetensorsFile.parse(ByteStorage(bytes: bytes, origin: "mem"), origin: "mem")
        assertSameTensors(tensors, back.tensors)
        XCTAssertEqual(back.metadata.map { $0.0 }, metadata.map { $0.0 })
        XCTAssertEqual(back.metadata.map { $0.1 }, metadata.map { $0.1 })
        // The second write of what was read is byte-identical.
        XCTAssertEqual(try SafetensorsWriter.serialize(back.tensors, metadata: back.metadata), bytes)

        // The streaming writer gives the same bytes.
        let path = folder + "/all.safetensors"
        try SafetensorsWriter.write(tensors, metadata: metadata, to: path)
        let onDisk = try SafetensorsFile.open(path)
        withExtendedLifetime(onDisk) { XCTAssertEqual(Array(onDisk.storage.bytes), bytes) }
        try SafetensorsWriter.write(onDisk.tensors, metadata: onDisk.metadata, to: path)  // over itself
        let rewritten = try ByteStorage(mappingFile: path)
        withExtendedLifetime(rewritten) { XCTAssertEqual(Array(rewritten.bytes), bytes) }
        withExtendedLifetime(onDisk) {}
        // No temporary files left behind.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder), ["all.safetensors"])
    }

    func testLayoutOrderAndAlignment() throws {
        let tensors = everyDTypeTensors()
        let plan = try SafetensorsWriter.layout(tensors, metadata: [])
        let dtypes = plan.entries.map { $0.tensor.dtype }
        let expectedOrder: [DType] = [.u64, .i64, .f64, .f32, .u32, .i32, .bf16, .f16, .u16, .i16, .i8, .u8, .bool]
        var last = -1
        for d in dtypes {
            let k = expectedOrder.firstIndex(of: d)!
            XCTAssertGreaterThanOrEqual(k, last)
            last = k
        }
        for d in expectedOrder {
            let names = plan.entries.filter { $0.tensor.dtype == d }.map(\.name)
            XCTAssertEqual(names, names.sorted())
        }
        XCTAssertEqual(plan.prefix.count % 8, 0)
        // Each tensor starts at a multiple of its element size.
        for e in plan.entries { XCTAssertEqual((plan.prefix.count + e.begin) % e.tensor.dtype.byteSize, 0, e.name) }
        // The header is compact JSON followed by spaces only.
        let header = plan.prefix[8...]
        let text = String(decoding: header, as: UTF8.self)
        let trimmed = text.replacingOccurrences(of: " +$", with: "", options: .regularExpression)
        XCTAssertLessThan(text.count - trimmed.count, 8)
        XCTAssertFalse(trimmed.contains(" "))
        XCTAssertTrue(trimmed.hasPrefix(#"{"u64.empty":{"dtype":"U64","shape":[0],"data_offsets":[0,0]},"#), trimmed)
    }

    /// The byte layouts the reference crate's own tests pin down.
    func testReferenceBytes() throws {
        let floats: [Float] = [0, 1, 2, 3, 4, 5]
        let data = floats.withUnsafeBytes { Array($0) }
        func expected(_ header: String, pad: Int) -> [UInt8] {
            stFile(Array(header.utf8) + [UInt8](repeating: 0x20, count: pad)) + data
        }
        var one = TensorDict()
        one["attn.0"] = TensorView(dtype: .f32, shape: [1, 2, 3], bytes: data)
        XCTAssertEqual(try SafetensorsWriter.serialize(one, metadata: []),
                       expected(#"{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}"#, pad: 0))
        var two = TensorDict()
        two["attn0"] = TensorView(dtype: .f32, shape: [1, 1, 2, 3], bytes: data)
        XCTAssertEqual(try SafetensorsWriter.serialize(two, metadata: []),
                       expected(#"{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}"#, pad: 7))
        XCTAssertEqual(try SafetensorsWriter.serialize(TensorDict(), metadata: []), [8, 0, 0, 0, 0, 0, 0, 0] + Array("{}      ".utf8))
        XCTAssertEqual(try SafetensorsWriter.serialize(TensorDict(), metadata: [("framework", "pt")]),
                       [40, 0, 0, 0, 0, 0, 0, 0] + Array(#"{"__metadata__":{"framework":"pt"}}     "#.utf8))
    }

    /// Rewriting each official fixture (written by the Python safetensors package) reproduces it byte for byte.
    func testFixturesRewriteByteIdentical() throws {
        for name in try fixtureNames(withSuffix: ".safetensors") {
            let f = try SafetensorsFile.open("\(fixturesDirectory)/\(name)")
            let rewritten = try SafetensorsWriter.serialize(f.tensors, metadata: f.metadata)
            withExtendedLifetime(f) { XCTAssertTrue(rewritten == Array(f.storage.bytes), name) }
        }
    }

    func testStridedViewsAreWrittenRowMajor() throws {
        // A 2x3 matrix viewed transposed (3x2) through strides.
        let base = TensorView(floats: [1, 2, 3, 4, 5, 6], shape: [2, 3])
        let transposed = TensorView(dtype: .f32, shape: [3, 2], strides: [1, 3], storage: base.storage, byteOffset: 0)
        XCTAssertNil(transposed.contiguousBytes)
        let path = folder + "/t.safetensors"
        try SafetensorsWriter.write(TensorDict([("t", transposed)]), metadata: [], to: path)
        XCTAssertEqual(try SafetensorsFile.open(path).tensors["t"]!.floats(), [1, 4, 2, 5, 3, 6])
    }

    func testWriterRefusesWhatNoReaderAccepts() {
        XCTAssertThrowsError(try SafetensorsWriter.serialize(TensorDict([("__metadata__", TensorView(floats: [1], shape: [1]))]), metadata: [])) { e in
            XCTAssertEqual((e as? PPError)?.entry, "__metadata__")
        }
        XCTAssertThrowsError(try SafetensorsWriter.serialize(TensorDict(), metadata: [("k", "1"), ("k", "2")])) { e in
            XCTAssertTrue("\(e)".contains("metadata key \"k\" is given twice"), "\(e)")
        }
        let path = folder + "/x.safetensors"
        XCTAssertThrowsError(try SafetensorsWriter.write(TensorDict(), metadata: [("k", "1"), ("k", "2")], to: path))
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder), [])
    }
}
