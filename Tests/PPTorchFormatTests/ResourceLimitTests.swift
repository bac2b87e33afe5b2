import Foundation
import PPFileIO
import PPTensor
@testable import PPTorchFormat
import XCTest

/// Inputs built to make a reader loop forever, take quadratic or exponential time, or allocate from a
/// header's numbers. Each must finish with a result or a one-line PPError. The inputs the fuzzers
/// found are committed under Tests/Fuzz/regressions/ and replayed here.
final class ResourceLimitTests: XCTestCase {
    static let regressions: String = {
        let here = URL(fileURLWithPath: #filePath)  // Tests/PPTorchFormatTests/ResourceLimitTests.swift
        return here.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fuzz/regressions").path
    }()

    func load(_ bytes: [UInt8]) throws -> PickleValue {
        try bytes.withUnsafeBytes { try Unpickler.load($0, origin: "x.pt", entry: "x/data.pkl") }
    }

    /// t0 = (); t(k+1) = (tk, tk): 40 levels are 2^40 values if shared tuples are walked as a tree.
    /// Found by the pickle fuzz target (a timeout); state-dict discovery now stops after a bounded walk.
    func testSharedTupleLevelsDoNotExplode() throws {
        var p: [UInt8] = [0x80, 2, 0x29, 0x71, 0]
        for i in 0..<40 { p += [0x68, UInt8(i), 0x68, UInt8(i), 0x86, 0x71, UInt8(i + 1)] }
        p.append(0x2e)
        let root = try load(p)
        let checkpoint = TorchCheckpoint(path: "x.pt", root: root, archiveName: "x")
        XCTAssertTrue(checkpoint.stateDicts().isEmpty)
        XCTAssertFalse(checkpoint.describeNonTensorEntries().isEmpty)
    }

    /// The committed fuzz finding itself.
    func testFuzzRegressionInputsOfThePickleTarget() throws {
        let folder = "\(Self.regressions)/pickle"
        let names = try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
        XCTAssertFalse(names.isEmpty)
        for name in names {
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(folder)/\(name)")))
            guard let root = try? load(bytes) else { continue }
            _ = TorchCheckpoint(path: name, root: root, archiveName: "x").stateDicts()
            _ = root.summary()
        }
    }

    /// 200 000 distinct keys, then the same keys again: one item per key, in first-insertion order,
    /// with the later values (a linear search per SETITEM would need 2 * 10^10 comparisons).
    func testDictWithManyKeysAndRepeatedKeys() throws {
        let n = 200_000
        var p: [UInt8] = [0x80, 2, 0x7d, 0x28]
        for pass in 0..<2 {
            for i in 0..<n { p += [0x4a] + TorchZipLayout.le32(i) + [0x4a] + TorchZipLayout.le32(i + pass) }
        }
        p += [0x75, 0x2e]
        guard case .dict(let d) = try load(p) else { return XCTFail("not a dict") }
        XCTAssertEqual(d.items.count, n)
        XCTAssertEqual(d.items[7].key.intValue, 7)
        XCTAssertEqual(d.items[7].value.intValue, 8)
        // A str key and an int key never collide; True and 1 stay apart as before.
        guard case .dict(let mixed) = try load([0x80, 2, 0x7d, 0x28, 0x4b, 1, 0x4e, 0x88, 0x4e, 0x8c, 1, 0x31, 0x4e, 0x4b, 1, 0x88, 0x75, 0x2e]) else {
            return XCTFail("not a dict")
        }
        XCTAssertEqual(mixed.items.count, 3)
        if case .bool(true) = mixed.items[0].value {} else { XCTFail("the second SETITEM of key 1 must replace the first") }
    }

    /// A tensor whose size (2^40 x 2^40 elements, as 8-byte LONG1 ints) overflows: refused before
    /// any storage is looked up.
    func testTensorShapeWhoseElementCountOverflows() throws {
        func long(_ v: Int) -> [UInt8] { [0x8a, 8] + (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
        var p: [UInt8] = [0x80, 2] + Array("ctorch._utils\n_rebuild_tensor_v2\n(".utf8)
        p += [0x28, 0x58] + TorchZipLayout.le32(7) + Array("storage".utf8) + Array("ctorch\nFloatStorage\n".utf8)
        p += [0x58] + TorchZipLayout.le32(1) + Array("0".utf8) + [0x58] + TorchZipLayout.le32(3) + Array("cpu".utf8)
        p += [0x4b, 4, 0x74, 0x51, 0x4b, 0]
        p += [0x28] + long(1 << 40) + long(1 << 40) + [0x74, 0x28, 0x4b, 1, 0x4b, 1, 0x74, 0x89, 0x74, 0x52, 0x2e]
        XCTAssertThrowsError(try load(p)) { error in
            let e = error as? PPError
            XCTAssertEqual(e?.kind, .badInput)
            XCTAssertTrue(e?.description.contains("x/data.pkl") ?? false, "\(error)")
            XCTAssertTrue(e?.description.contains("overflows") ?? false, "\(error)")
        }
    }

    /// A memo cycle (l = []; l.append(l)) read, walked for state dicts and summarized: finite.
    func testMemoCycleIsWalkedFinitely() throws {
        let root = try load([0x80, 2, 0x5d, 0x71, 0, 0x68, 0, 0x61, 0x2e])
        XCTAssertTrue(TorchCheckpoint(path: "x.pt", root: root, archiveName: "x").stateDicts().isEmpty)
        XCTAssertEqual(root.summary(), "[<cycle>]")
    }
}
