import XCTest
import Foundation
import PPTensor
import PPSafetensors
@testable import PPSample

/// Reads back a zlib stream made only of stored deflate blocks (what PNGWriter writes), checking every
/// header field and the Adler-32 trailer; nil when anything is off.
private func inflateStored(_ stream: [UInt8]) -> [UInt8]? {
    guard stream.count >= 6, (UInt16(stream[0]) << 8 | UInt16(stream[1])) % 31 == 0, stream[0] & 0x0F == 8 else { return nil }
    var out: [UInt8] = [], offset = 2
    while true {
        guard offset + 5 <= stream.count else { return nil }
        let header = stream[offset]
        guard header & 0b110 == 0 else { return nil }  // BTYPE must be 00
        let len = Int(stream[offset + 1]) | Int(stream[offset + 2]) << 8
        let nlen = Int(stream[offset + 3]) | Int(stream[offset + 4]) << 8
        guard len ^ nlen == 0xFFFF, offset + 5 + len <= stream.count else { return nil }
        out += stream[(offset + 5)..<(offset + 5 + len)]
        offset += 5 + len
        if header & 1 == 1 { break }
    }
    guard offset + 4 == stream.count else { return nil }
    let adler = stream[offset..<(offset + 4)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    return adler == PNGWriter.adler32(out) ? out : nil
}

/// PNG chunks (type, data) after checking the signature and every CRC.
private func pngChunks(_ png: [UInt8]) -> [(String, [UInt8])]? {
    guard png.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) else { return nil }
    var chunks: [(String, [UInt8])] = [], offset = 8
    func u32(_ at: Int) -> UInt32 { png[at..<(at + 4)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) } }
    while offset < png.count {
        guard offset + 12 <= png.count else { return nil }
        let length = Int(u32(offset))
        guard offset + 12 + length <= png.count else { return nil }
        let typed = Array(png[(offset + 4)..<(offset + 8 + length)])
        guard u32(offset + 8 + length) == PNGWriter.crc32(typed) else { return nil }
        chunks.append((String(decoding: typed[0..<4], as: UTF8.self), Array(typed[4...])))
        offset += 12 + length
    }
    return chunks
}

final class OutputTests: XCTestCase {
    func testChecksumsMatchPublishedValues() {
        XCTAssertEqual(PNGWriter.crc32(Array("123456789".utf8)), 0xCBF4_3926)  // the CRC-32 check value
        XCTAssertEqual(PNGWriter.crc32(Array("IEND".utf8)), 0xAE42_6082)       // every PNG's last 4 bytes
        XCTAssertEqual(PNGWriter.adler32(Array("Wikipedia".utf8)), 0x11E6_0398)
        XCTAssertEqual(PNGWriter.adler32([]), 1)
        // Long input: the running sums must be reduced before they overflow.
        let long = [UInt8](repeating: 255, count: 100_000)
        var a: UInt64 = 1, b: UInt64 = 0
        for byte in long { a = (a + UInt64(byte)) % 65_521; b = (b + a) % 65_521 }
        XCTAssertEqual(PNGWriter.adler32(long), UInt32(b << 16 | a))
    }

    func testStoredZlibSplitsLongInputIntoBlocks() {
        let data = (0..<150_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let stream = PNGWriter.zlibStored(data)
        XCTAssertEqual(stream.count, 2 + 3 * 5 + data.count + 4)  // 65535 + 65535 + 18930
        XCTAssertEqual(inflateStored(stream), data)
        XCTAssertEqual(inflateStored(PNGWriter.zlibStored([])), [])
    }

    func testPNGHasTheExpectedHeaderAndScanlines() throws {
        let pixels: [UInt8] = [255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30]  // [2, 2, 3]
        let png = try PNGWriter.encode(pixels: pixels, width: 2, height: 2, channels: 3)
        let chunks = try XCTUnwrap(pngChunks(png))
        XCTAssertEqual(chunks.map(\.0), ["IHDR", "IDAT", "IEND"])
        XCTAssertEqual(chunks[0].1, [0, 0, 0, 2, 0, 0, 0, 2, 8, 2, 0, 0, 0])
        XCTAssertEqual(inflateStored(chunks[1].1), [0, 255, 0, 0, 0, 255, 0, 0, 0, 0, 255, 10, 20, 30])
        XCTAssertThrowsError(try PNGWriter.encode(pixels: pixels, width: 2, height: 2, channels: 4))
        XCTAssertThrowsError(try PNGWriter.encode(pixels: pixels, width: 3, height: 2, channels: 3))
    }

    func testGridPutsOneClassPerRowAndUpscales() throws {
        // Three 1x1 grayscale samples with labels [1, 0, 1]: row 0 = class 0 (sample 1), row 1 = class 1
        // (samples 0 and 2). Values -1, 0, 1 -> 0, 128, 255; 7 (out of range) would clamp to 255.
        let grid = try SampleOutput.gridPixels(samples: [-1, 0, 1], shape: [3, 1, 1, 1], labels: [1, 0, 1], upscale: 2, padding: 0)
        XCTAssertEqual(grid.width, 4)
        XCTAssertEqual(grid.height, 4)
        XCTAssertEqual(grid.pixels, [128, 128, 0, 0,
                                     128, 128, 0, 0,
                                     0, 0, 255, 255,
                                     0, 0, 255, 255])
        let padded = try SampleOutput.gridPixels(samples: [7, -0.5, 0.25, -3], shape: [1, 1, 2, 2], labels: [4], padding: 1)
        XCTAssertEqual(padded.width, 4)
        XCTAssertEqual(padded.pixels, [0, 0, 0, 0,
                                       0, 255, 64, 0,
                                       0, 159, 0, 0,
                                       0, 0, 0, 0])
        XCTAssertThrowsError(try SampleOutput.gridPixels(samples: [Float](repeating: 0, count: 4), shape: [1, 4, 1, 1], labels: [0]))
    }

    func testRowLabelsDrawTheClassLeftOfItsRow() throws {
        // One black 5x5 sample of class 7: a 5-pixel margin (glyph 3 + gap 1 + 1) holds a white "7" at x 1...3.
        let grid = try SampleOutput.gridPixels(samples: [Float](repeating: -1, count: 25), shape: [1, 1, 5, 5], labels: [7],
                                               padding: 0, rowLabel: { String($0) })
        XCTAssertEqual(grid.width, 10)
        XCTAssertEqual(grid.height, 5)
        let seven: [[UInt8]] = [[1, 1, 1], [0, 0, 1], [0, 1, 0], [0, 1, 0], [0, 1, 0]]
        for y in 0..<5 {
            XCTAssertEqual(Array(grid.pixels[(y * 10 + 1)...(y * 10 + 3)]), seven[y].map { $0 * 255 }, "row \(y)")
            XCTAssertEqual(grid.pixels[y * 10], 0)
            XCTAssertEqual(Array(grid.pixels[(y * 10 + 5)..<(y * 10 + 10)]), [0, 0, 0, 0, 0], "the sample is untouched")
        }
        // Without labels the grid has no margin.
        XCTAssertEqual(try SampleOutput.gridPixels(samples: [Float](repeating: -1, count: 25), shape: [1, 1, 5, 5], labels: [7], padding: 0).width, 5)
    }

    func testRGBGridReadsChannelsAsPlanes() throws {
        // One 1x2 RGB sample [1, 3, 1, 2]: planes R = [1, -1], G = [-1, 1], B = [0, 0].
        let grid = try SampleOutput.gridPixels(samples: [1, -1, -1, 1, 0, 0], shape: [1, 3, 1, 2], labels: [0], padding: 0)
        XCTAssertEqual(grid.pixels, [255, 0, 128, 0, 255, 128])
    }

    func testPNGGridFileAndSafetensorsOutputRoundTrip() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("ppsample-\(getpid())-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }

        let samples = pattern(2 * 3 * 4 * 4)  // [2, 3, 4, 4]
        let pngPath = folder + "/grid.png"
        try SampleOutput.writePNGGrid(samples: samples, shape: [2, 3, 4, 4], labels: [5, 5], path: pngPath, upscale: 3)
        let png = [UInt8](try Data(contentsOf: URL(fileURLWithPath: pngPath)))
        let chunks = try XCTUnwrap(pngChunks(png))
        let width = 3 * (2 * 5 + 1), height = 3 * (5 + 1)
        XCTAssertEqual(Array(chunks[0].1[0..<8]), [0, 0, 0, UInt8(width), 0, 0, 0, UInt8(height)])
        XCTAssertEqual(inflateStored(chunks[1].1)?.count, height * (1 + 3 * width))

        let path = folder + "/samples.safetensors"
        try SampleOutput.writeSafetensors(samples: samples, shape: [2, 3, 4, 4], labels: [5, 9], path: path)
        let file = try SafetensorsFile.open(path)
        XCTAssertEqual(file.tensors["samples"]?.shape, [2, 3, 4, 4])
        XCTAssertEqual(file.tensors["samples"]?.floats(), samples)
        XCTAssertEqual(file.tensors["labels"]?.int64s(), [5, 9])
        XCTAssertThrowsError(try SampleOutput.writeSafetensors(samples: samples, shape: [2, 3, 4, 4], labels: [5], path: path))
    }

    func testSeededNoiseIsDeterministicAndStandardNormal() throws {
        let a = try SampleStart.seeded(42, batch: 4, channels: 4, side: 32, labels: nil, numClasses: 1000)
        let b = try SampleStart.seeded(42, batch: 4, channels: 4, side: 32, labels: nil, numClasses: 1000)
        let c = try SampleStart.seeded(43, batch: 4, channels: 4, side: 32, labels: nil, numClasses: 1000)
        XCTAssertEqual(a.noise, b.noise)
        XCTAssertEqual(a.labels, b.labels)
        XCTAssertNotEqual(a.noise, c.noise)
        XCTAssertTrue(a.labels.allSatisfy { (0..<1000).contains($0) })
        let n = Double(a.noise.count)
        let mean = a.noise.reduce(0.0) { $0 + Double($1) } / n
        let variance = a.noise.reduce(0.0) { $0 + Double($1) * Double($1) } / n - mean * mean
        XCTAssertEqual(mean, 0, accuracy: 4 / n.squareRoot())     // 4 standard errors
        XCTAssertEqual(variance, 1, accuracy: 4 * (2 / n).squareRoot())
        // SplitMix64's first output for seed 0 (the generator's published test vector).
        var generator = SeededRandom(seed: 0)
        XCTAssertEqual(generator.below(Int.max), Int(0xE220_A839_7B1D_CDAF % UInt64(Int.max)))
    }

    func testGivenNoiseIsCheckedAgainstItsShape() throws {
        let start = try SampleStart.given(z: pattern(2 * 4 * 8 * 8), shape: [2, 4, 8, 8], labels: [1, 10], defaultLabel: 10, numClasses: 10)
        XCTAssertEqual(start.batch, 2)
        XCTAssertEqual(start.side, 8)
        XCTAssertThrowsError(try SampleStart.given(z: pattern(10), shape: [2, 4, 8, 8], labels: nil, defaultLabel: 10, numClasses: 10))
        XCTAssertThrowsError(try SampleStart.given(z: pattern(2 * 4 * 8 * 4), shape: [2, 4, 8, 4], labels: nil, defaultLabel: 10, numClasses: 10))
        XCTAssertThrowsError(try SampleStart.given(z: pattern(2 * 4 * 8 * 8), shape: [2, 4, 8, 8], labels: [1], defaultLabel: 10, numClasses: 10))
        XCTAssertThrowsError(try SampleStart.given(z: pattern(2 * 4 * 8 * 8), shape: [2, 4, 8, 8], labels: [1, 11], defaultLabel: 10, numClasses: 10))
    }
}
