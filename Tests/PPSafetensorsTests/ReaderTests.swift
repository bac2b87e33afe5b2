import PPFileIO
import PPTensor
import XCTest

import PPSafetensors

/// A safetensors file from parts: the length field (the header's length unless given), the header
/// text or bytes as is (no padding), then `data`.
func stFile(_ header: [UInt8], data: [UInt8] = [], length: UInt64? = nil) -> [UInt8] {
    var out: [UInt8] = []
    withUnsafeBytes(of: (length ?? UInt64(header.count)).littleEndian) { out.append(contentsOf: $0) }
    return out + header + data
}

func stFile(_ header: String, data: [UInt8] = [], length: UInt64? = nil) -> [UInt8] {
    stFile(Array(header.utf8), data: data, length: length)
}

let badName = "bad.safetensors"

func parseBytes(_ bytes: [UInt8]) throws -> SafetensorsFile {
    try SafetensorsFile.parse(ByteStorage(bytes: bytes, origin: badName), origin: badName)
}

/// Asserts that `bytes` is refused with `kind`, a message naming the file, the tensor `entry` (as
/// `PPError.entry` and in the description) and containing `fragment`.
func assertRefused(_ bytes: [UInt8], kind: PPError.Kind = .badInput, entry: String?, _ fragment: String,
                   file: StaticString = #filePath, line: UInt = #line) {
    do {
        let f = try parseBytes(bytes)
        XCTFail("accepted, with tensors \(f.tensors.names)", file: file, line: line)
    } catch let e as PPError {
        XCTAssertEqual(e.kind, kind, "\(e)", file: file, line: line)
        XCTAssertEqual(e.file, badName, file: file, line: line)
        XCTAssertEqual(e.entry, entry, "\(e)", file: file, line: line)
        XCTAssertTrue(e.description.hasPrefix(badName + ": "), e.description, file: file, line: line)
        if let entry { XCTAssertTrue(e.description.contains(": \(entry): "), e.description, file: file, line: line) }
        XCTAssertTrue(e.description.contains(fragment), "\(e.description) lacks \(fragment.debugDescription)", file: file, line: line)
        XCTAssertFalse(e.description.contains("\n"), file: file, line: line)
    } catch {
        XCTFail("unexpected error \(error)", file: file, line: line)
    }
}

final class ReaderTests: XCTestCase {
    let w8 = [UInt8](repeating: 7, count: 8)

    func testMinimalFiles() throws {
        let empty = try parseBytes(stFile("{}"))
        XCTAssertTrue(empty.tensors.isEmpty)
        XCTAssertEqual(empty.headerByteCount, 2)

        let f = try parseBytes(stFile(#"{"__metadata__":{"format":"pt","b":"2"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"s":{"dtype":"I64","shape":[],"data_offsets":[8,16]},"z":{"dtype":"BF16","shape":[3,0],"data_offsets":[16,16]}}   "#, data: w8 + [1, 0, 0, 0, 0, 0, 0, 0]))
        XCTAssertEqual(f.tensors.names, ["w", "s", "z"])
        XCTAssertEqual(f.metadata.map { $0.0 }, ["format", "b"])
        XCTAssertEqual(f.metadata.map { $0.1 }, ["pt", "2"])
        XCTAssertEqual(f.tensors["s"]!.shape, [])
        XCTAssertEqual(f.tensors["s"]!.int64s(), [1])
        XCTAssertEqual(f.tensors["z"]!.shape, [3, 0])
        XCTAssertEqual(f.tensors["z"]!.byteCount, 0)
        XCTAssertEqual(f.tensors["w"]!.rowMajorBytes(), w8)
        XCTAssertEqual(f.path, badName)
    }

    func testTensorsComeInOffsetOrderWhateverTheHeaderOrder() throws {
        let f = try parseBytes(stFile(#"{"c":{"dtype":"U8","shape":[1],"data_offsets":[2,3]},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"__metadata__":null,"e":{"dtype":"U8","shape":[0],"data_offsets":[3,3]},"d":{"dtype":"U8","shape":[0],"data_offsets":[2,2]}}"#, data: [10, 11, 12]))
        XCTAssertEqual(f.tensors.names, ["a", "d", "c", "e"])
        XCTAssertEqual(f.tensors["c"]!.rowMajorBytes(), [12])
        XCTAssertTrue(f.metadata.isEmpty)
    }

    func testUnknownFieldsAreIgnoredLikeTheReference() throws {
        let f = try parseBytes(stFile(#"{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"note":"x"}}"#, data: [5]))
        XCTAssertEqual(f.tensors["w"]!.rowMajorBytes(), [5])
    }

    // MARK: one test per error, in the reader's order of checks

    func testEmptyFile() {
        assertRefused([], entry: nil, "file is 0 bytes, too short")
    }

    func testTruncatedHeaderLength() {
        assertRefused([2, 0, 0, 0, 0], entry: nil, "file is 5 bytes, too short for the 8-byte header length")
    }

    func testHeaderLengthTooLarge() {
        assertRefused(stFile("{}", length: 100_000_001), entry: nil, "exceeds the 100000000-byte limit")
        assertRefused(stFile("{}", length: UInt64.max), entry: nil, "exceeds the 100000000-byte limit")
    }

    func testHeaderLengthPastEOF() {
        assertRefused(stFile("{}", length: 3), entry: nil, "header length 3 runs past the end of the file (8 + 3 > 10 bytes)")
        assertRefused(stFile("", length: 100_000_000), entry: nil, "runs past the end of the file")
    }

    func testHeaderNotUTF8() {
        assertRefused(stFile([0x7B, 0x22, 0xFF, 0x22, 0x3A, 0x31, 0x7D]), entry: nil, "header is not valid UTF-8 (byte 2 of the header)")
    }

    func testHeaderNotJSON() {
        assertRefused(stFile(#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]"#, data: w8), entry: nil, "header: not valid JSON")
        assertRefused(stFile(#"{"w":{"dtype":'F32'}}"#), entry: nil, "header: not valid JSON")
        assertRefused(stFile(#"{"w":1} x"#), entry: nil, "header: not valid JSON")
        assertRefused(stFile([0x7B, 0x7D, 0x00, 0x00]), entry: nil, "header: not valid JSON")  // NUL padding is not whitespace
    }

    func testHeaderIsAnArray() {
        assertRefused(stFile(#"[{"dtype":"F32","shape":[2],"data_offsets":[0,8]}]"#, data: w8), entry: nil, "header is an array, expected a JSON object")
        assertRefused(stFile("null"), entry: nil, "header is null, expected a JSON object")
    }

    func testDuplicateTensorNames() {
        assertRefused(stFile(#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#, data: w8 + w8),
                      entry: "w", "duplicate key \"w\"")
        assertRefused(stFile(#"{"w":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: w8),
                      entry: "dtype", #"duplicate key "dtype" in the object at $.w"#)
    }

    func testSchemaErrors() {
        assertRefused(stFile(#"{"w":[1]}"#), entry: "w", "entry is an array")
        assertRefused(stFile(#"{"w":{"shape":[2],"data_offsets":[0,8]}}"#, data: w8), entry: "w", "missing \"dtype\"")
        assertRefused(stFile(#"{"w":{"dtype":32,"shape":[2],"data_offsets":[0,8]}}"#, data: w8), entry: "w", "\"dtype\" is an integer, expected a string")
        assertRefused(stFile(#"{"w":{"dtype":"F32","data_offsets":[0,8]}}"#, data: w8), entry: "w", "missing \"shape\"")
        assertRefused(stFile(#"{"w":{"dtype":"F32","shape":2,"data_offsets":[0,8]}}"#, data: w8), entry: "w", "\"shape\" is an integer, expected an array")
        assertRefused(stFile(#"{"w":{"dtype":"F32","shape":[2]}}"#, data: w8), entry: "w", "missing \"data_offsets\"")
        assertRefused(stFile(#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}}"#, data: w8), entry: "w", "\"data_offsets\" is [0,8,8], expected [begin, end]")
        assertRefused(stFile(#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}}"#, data: w8), entry: "w", "expected [begin, end] with non-negative integers")
        assertRefused(stFile(#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8.0]}}"#, data: w8), entry: "w", "\"data_offsets\" is [0,8.0]")
        assertRefused(stFile(#"{"w":{"dtype":"F32","shape":[2],"data_offsets":{"0":8}}}"#, data: w8), entry: "w", "\"data_offsets\" is {\"0\":8}")
        assertRefused(stFile(#"{"__metadata__":["pt"]}"#), entry: "__metadata__", "__metadata__ is an array, expected an object of strings")
    }

    func testNegativeDimension() {
        assertRefused(stFile(#"{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, data: w8), entry: "w", "\"shape\" [-2] has -2, expected non-negative integers only")
    }

    func testFractionalDimension() {
        assertRefused(stFile(#"{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}}"#, data: w8), entry: "w", "has 1.5, expected non-negative integers only")
        // Whole numbers written as floats are not integers either (serde refuses them too).
        assertRefused(stFile(#"{"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}"#, data: w8), entry: "w", "has 2.0")
        assertRefused(stFile(#"{"w":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}}"#, data: w8), entry: "w", "has \"2\"")
        // Beyond 64 bits a dimension is read as a double, and refused as one.
        assertRefused(stFile(#"{"w":{"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,8]}}"#, data: w8), entry: "w", "expected non-negative integers only")
    }

    func testUnknownDType() {
        assertRefused(stFile(#"{"w":{"dtype":"F24","shape":[2],"data_offsets":[0,8]}}"#, data: w8), entry: "w", "unknown dtype \"F24\"")
        assertRefused(stFile(#"{"w":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}}"#, data: w8), entry: "w", "unknown dtype \"f32\"")
    }

    func testOverflowingShape() {
        assertRefused(stFile(#"{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#, data: w8), entry: "w", "has too many elements")
        // The element count fits but the byte size does not.
        assertRefused(stFile(#"{"w":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,8]}}"#, data: w8), entry: "w", "has too many elements")
        // Nothing is allocated from the numbers: a huge but consistent-looking header is refused by size.
        assertRefused(stFile(#"{"w":{"dtype":"U8","shape":[576460752303423488],"data_offsets":[0,576460752303423488]}}"#, data: w8), entry: "w", "data is truncated")
    }

    func testOverlappingRanges() {
        assertRefused(stFile(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, data: w8 + [0, 0, 0, 0]),
                      entry: "b", "data_offsets [4, 12] overlap the previous tensor \"a\", which ends at byte 8")
        // Two tensors on the same bytes.
        assertRefused(stFile(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: w8),
                      entry: "b", "overlap the previous tensor \"a\"")
    }

    func testGap() {
        assertRefused(stFile(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#, data: w8 + [0, 0, 0, 0]),
                      entry: "b", "data_offsets [8, 12] leave a gap: the previous tensor \"a\" ends at byte 4")
        assertRefused(stFile(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: w8),
                      entry: "a", "the first tensor must start at byte 0")
    }

    func testEndBeforeBegin() {
        assertRefused(stFile(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[0],"data_offsets":[8,4]}}"#, data: w8),
                      entry: "b", "data_offsets [8, 4] end before they begin")
    }

    func testByteCountMismatch() {
        assertRefused(stFile(#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: w8), entry: "w", "hold 8 bytes, but shape [3] of F32 needs 12")
    }

    func testTrailingBytes() {
        assertRefused(stFile(#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: w8 + [0]),
                      entry: "w", "1 trailing bytes after the last tensor (the data is 9 bytes, the tensors cover 8)")
        assertRefused(stFile("{}", data: [0]), entry: nil, "1 trailing bytes")
    }

    func testTruncatedData() {
        assertRefused(stFile(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, data: w8),
                      entry: "b", "data is truncated: the tensor ends at byte 12 of the data, but the file holds only 8 data bytes")
    }

    func testMetadataWithNonStringValues() {
        assertRefused(stFile(#"{"__metadata__":{"format":"pt","step":100}}"#), entry: "__metadata__", "metadata value for \"step\" is an integer")
        assertRefused(stFile(#"{"__metadata__":{"x":{"y":"z"}}}"#), entry: "__metadata__", "metadata value for \"x\" is an object")
        assertRefused(stFile(#"{"__metadata__":{"x":null}}"#), entry: "__metadata__", "metadata value for \"x\" is null")
    }

    func testUnsupportedDTypesAreReportedAfterValidation() {
        assertRefused(stFile(#"{"q":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}}"#, data: w8), kind: .unsupported, entry: "q", "unsupported dtype F8_E4M3")
        assertRefused(stFile(#"{"c":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}"#, data: w8), kind: .unsupported, entry: "c", "unsupported dtype C64")
        assertRefused(stFile(#"{"f":{"dtype":"F4","shape":[16],"data_offsets":[0,8]}}"#, data: w8), kind: .unsupported, entry: "f", "unsupported dtype F4")
        // A broken file with such a tensor is reported as broken.
        assertRefused(stFile(#"{"q":{"dtype":"F8_E5M2","shape":[8],"data_offsets":[0,8]}}"#, data: w8 + [0]), entry: "q", "trailing bytes")
        assertRefused(stFile(#"{"f":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#, data: [0, 0]), entry: "f", "3 elements of F4 do not fill whole bytes")
    }

    func testOpenReportsMissingFilesAndFolders() {
        XCTAssertThrowsError(try SafetensorsFile.open("/nonexistent/x.safetensors")) { e in
            XCTAssertEqual((e as? PPError)?.kind, .missingInput)
        }
        XCTAssertThrowsError(try SafetensorsFile.open(NSTemporaryDirectory())) { e in
            XCTAssertEqual((e as? PPError)?.kind, .badInput)
        }
    }

    /// Random edits of a valid file are read or refused with a PPError, never a crash, and whatever is
    /// accepted has every view inside the bytes.
    func testMutationsNeverCrash() throws {
        var tensors = TensorDict()
        tensors["a"] = TensorView(floats: [1, 2, 3, 4, 5, 6], shape: [2, 3])
        tensors["b"] = TensorView(int64s: [7, 8], shape: [2])
        tensors["c"] = TensorView(dtype: .u8, shape: [], bytes: [9])
        tensors["d"] = TensorView(dtype: .bf16, shape: [0, 4], bytes: [])
        let valid = try SafetensorsWriter.serialize(tensors, metadata: [("k", "v")])
        var state: UInt64 = 7
        func next() -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int(truncatingIfNeeded: state >> 33)
        }
        var accepted = 0
        for _ in 0..<3000 {
            var bytes = valid
            for _ in 0..<(1 + next() % 3) {
                let at = next() % bytes.count
                switch next() % 4 {
                case 0: bytes[at] = UInt8(truncatingIfNeeded: next())
                case 1: bytes[at] = Array("0123456789[]{},:\"-.e ".utf8)[next() % 21]
                case 2: bytes.remove(at: at)
                default: bytes.insert(Array("0123456789,\" ".utf8)[next() % 13], at: at)
                }
            }
            do {
                let f = try parseBytes(bytes)
                for (_, t) in f.tensors.items {
                    XCTAssertLessThanOrEqual(t.byteOffset + t.byteCount, bytes.count)
                    _ = t.rowMajorBytes()
                }
                accepted += 1
            } catch is PPError {
            } catch {
                XCTFail("\(error)")
            }
        }
        XCTAssertGreaterThan(accepted, 10)
    }
}
