import XCTest
import Foundation
import PPTensor
import PPSafetensors
import PPImage
@testable import PPSample

final class OutputTests: XCTestCase {
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
        // The file decodes (through PPImage, as Pillow would) to exactly the grid's pixels.
        let grid = try SampleOutput.gridPixels(samples: samples, shape: [2, 3, 4, 4], labels: [5, 5], upscale: 3)
        let decoded = try ImageDecoder.decodeRGB(pngPath)
        XCTAssertEqual(decoded.width, 3 * (2 * 5 + 1))
        XCTAssertEqual(decoded.height, 3 * (5 + 1))
        XCTAssertEqual(decoded.pixels, grid.pixels)
        // Same pixels, same bytes.
        try SampleOutput.writePNGGrid(samples: samples, shape: [2, 3, 4, 4], labels: [5, 5], path: pngPath + "2", upscale: 3)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: pngPath)), try Data(contentsOf: URL(fileURLWithPath: pngPath + "2")))

        // The evaluator's conversion: clamp(127.5 x + 128, 0, 255), truncated; [C, H, W] -> [H, W, C].
        XCTAssertEqual(SampleOutput.evaluatorPixels([-1, 0, 1, 0.999, -2, .nan], channels: 3, height: 1, width: 2),
                       [0, 255, 0, 128, 255, 0])

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
