import XCTest
import PPTensor
import PPSafetensors

/// Tests/Fixtures, found from this file's path.
let fixturesDirectory: String = {
    var p = "\(#filePath)"
    for _ in 0..<2 { p = String(p[..<p.lastIndex(of: "/")!]) }
    return p + "/Fixtures"
}()

func fixtureNames(withSuffix suffix: String) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: fixturesDirectory).filter { $0.hasSuffix(suffix) }.sorted()
}

final class FixtureTests: XCTestCase {
    func testEveryFixtureReads() throws {
        let names = try fixtureNames(withSuffix: ".safetensors")
        XCTAssertGreaterThanOrEqual(names.count, 14)
        for name in names {
            let file = try SafetensorsFile.open("\(fixturesDirectory)/\(name)")
            XCTAssertFalse(file.tensors.isEmpty, name)
            XCTAssertEqual((8 + file.headerByteCount) % 8, 0, name)
            var end = 8 + file.headerByteCount
            for (_, t) in file.tensors.items {
                XCTAssertEqual(t.byteOffset, end, name)
                end += t.byteCount
            }
            XCTAssertEqual(end, file.storage.count, name)
        }
    }
}

final class HalfFixtureTests: XCTestCase {
    /// sit_fp16.safetensors holds exactly the f32 values of sit.safetensors rounded to the nearest f16.
    func testFP16FixtureIsSITRoundedToHalf() throws {
        let full = try SafetensorsFile.open("\(fixturesDirectory)/sit.safetensors")
        let half = try SafetensorsFile.open("\(fixturesDirectory)/sit_fp16.safetensors")
        XCTAssertEqual(full.tensors.sortedNames, half.tensors.sortedNames)
        var checked = 0
        for name in full.tensors.sortedNames {
            let f = full.tensors[name]!, h = half.tensors[name]!
            XCTAssertEqual(f.dtype, .f32, name)
            XCTAssertEqual(h.dtype, .f16, name)
            XCTAssertEqual(f.shape, h.shape, name)
            let values = f.floats()
            let halfBits = h.rowMajorBytes().withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) }
            let decoded = h.floats()
            for i in values.indices {
                let v = values[i], bits = halfBits[i]
                // f32 -> f16: the stored half is the round-to-nearest-even of the f32 value.
                XCTAssertEqual(bits, Float16(v).bitPattern, "\(name)[\(i)]")
                // f16 -> f32: decoding is exact, and no other half is closer to the f32 value.
                XCTAssertEqual(decoded[i], Float(Float16(bitPattern: bits)), "\(name)[\(i)]")
                let d = Float16(bitPattern: bits)
                let err = abs(Float(d) - v)
                XCTAssertLessThanOrEqual(err, abs(Float(d.nextUp) - v), "\(name)[\(i)]")
                XCTAssertLessThanOrEqual(err, abs(Float(d.nextDown) - v), "\(name)[\(i)]")
                checked += 1
            }
        }
        XCTAssertEqual(checked, full.tensors.totalElements)
        XCTAssertGreaterThan(checked, 100_000)
    }
}
