import Foundation
import PPFileIO
import PPImage
import PPJSON
@testable import PPLatents
import PPSafetensors
import PPTensor
import PPTestSupport
import PPVAE
import XCTest

/// The small fixture VAE: 4 latent channels, factor 2 (16x16 images <-> 8x8 latents), scaling 0.18215.
enum SmallVAE {
    static let path = Paths.fixture("vae-small-v1/vae")
    static func load() throws -> AutoencoderKL { try VAELoader.load(path) }
}

/// A tiny ImageFolder: classes "bird" and "cat", 3 PNGs each of different sizes (so the crop resizes),
/// and a corrupt file in "cat" sorted between good ones.
func makeImageFolder(_ root: String) throws -> [String] {
    var good: [String] = []
    let sizes = [(20, 18), (16, 16), (33, 17)]
    for (c, name) in ["cat", "bird"].enumerated() {
        mkdir(root + "/" + name, 0o755)
        for (i, (w, h)) in sizes.enumerated() {
            var pixels = [UInt8](repeating: 0, count: w * h * 3)   // [h, w, 3]
            for k in pixels.indices { pixels[k] = UInt8(truncatingIfNeeded: k &* (7 + c) &+ i &* 31 &+ (k / 3) % w * 5) }
            let path = "\(root)/\(name)/img\(i).png"
            try PNGFile.write(rgb: pixels, width: w, height: h, to: path)
            good.append(path)
        }
    }
    try write(Array("this is not a PNG".utf8), to: root + "/cat/img1b.png")
    // ImageFolder order: bird (class 0) before cat (class 1).
    return good.filter { $0.contains("/bird/") } + good.filter { $0.contains("/cat/") }
}

final class LatentCacheTests: XCTestCase {
    /// Latents equal the VAE run directly on the center crops, in ImageFolder order; the corrupt file is
    /// reported by name and skipped.
    func testEncodeMatchesTheVAEOnCenterCrops() throws {
        let scratch = Paths.scratch(self)
        let root = scratch + "/images"
        mkdir(root, 0o755)
        let good = try makeImageFolder(root)
        let vae = try SmallVAE.load()
        for mode in LatentMode.allCases {
            var lines: [String] = []
            let out = scratch + "/cache-\(mode.rawValue)"
            let report = try LatentCache.encode(folder: root, vae: vae, vaeName: SmallVAE.path,
                                                options: LatentEncodeOptions(size: 16, mode: mode, seed: 3, shardSize: 4),
                                                to: out, batch: 3, skipped: { lines.append($0) })
            XCTAssertEqual(report.images, 7)
            XCTAssertEqual(report.samples, 6)
            XCTAssertTrue(report.complete)
            XCTAssertEqual(lines.count, 1)
            XCTAssertEqual(report.skipped, lines)
            XCTAssertTrue(lines[0].contains("cat/img1b.png"), lines[0])

            var latents: [Float] = [], labels: [Int64] = []
            for shard in try LatentCache.shardPaths(of: out) {
                let file = try SafetensorsFile.open(shard)
                latents += try XCTUnwrap(file.tensors["latents"]).floats()
                labels += try XCTUnwrap(file.tensors["labels"]).int64s()
                XCTAssertEqual(file.tensors["latents"]?.shape.dropFirst().map { $0 }, [4, 8, 8])
            }
            XCTAssertEqual(labels, [0, 0, 0, 1, 1, 1])
            XCTAssertEqual(try LatentCache.classes(of: out), ["bird", "cat"])

            // Expected: each good image alone through decode, crop, encode; item indices count the bad file.
            let indices = [0, 1, 2, 3, 4, 6]    // img1b.png is item 5 (cat: img0, img1, img1b, img2)
            var expected: [Float] = []
            for (path, index) in zip(good, indices) {
                let crop = try CenterCrop.apply(try ImageDecoder.decodeRGB(path), size: 16)
                let posterior = try vae.encode(images: VAETensor(values: crop.toFloatCHW(), shape: [1, 3, 16, 16]))
                let noise = mode == .sample ? VAETensor(values: LatentCache.noiseFor(seed: 3, sample: 2 * index, count: 256), shape: [1, 4, 8, 8]) : nil
                expected += try posterior.latents(noise: noise).values
            }
            XCTAssertEqual(latents, expected, "\(mode)")
            if mode == .mean {
                // The mean times 0.18215, by hand.
                let crop = try CenterCrop.apply(try ImageDecoder.decodeRGB(good[0]), size: 16)
                let mean = try vae.encode(images: VAETensor(values: crop.toFloatCHW(), shape: [1, 3, 16, 16])).mean.values
                XCTAssertEqual(Array(latents[0..<256]), mean.map { $0 * 0.18215 })
            }
        }
    }

    /// Every fixture image (CMYK, YCCK, 16-bit, palette, 1x1, interlaced... and truncated, corrupt, not an
    /// image) in one encode: each one PPImage decodes is encoded, each it refuses is one report line naming
    /// the file, and the encode goes on to the end.
    func testEveryFixtureImageIsEncodedOrReported() throws {
        let scratch = Paths.scratch(self)
        let root = scratch + "/images"
        mkdir(root, 0o755)
        mkdir(root + "/all", 0o755)
        let fixtures = Paths.fixture("images")
        let names = OutputTarget.listFolder(fixtures).filter { ImageFolder.extensions.contains(where: $0.lowercased().hasSuffix) }
        XCTAssertGreaterThan(names.count, 30)
        var refused: [String] = []
        for name in names {
            try write(try fileBytes(fixtures + "/" + name), to: root + "/all/" + name)
            if (try? ImageDecoder.decodeRGB(fixtures + "/" + name)) == nil { refused.append(name) }
        }
        XCTAssertGreaterThan(refused.count, 3)
        var lines: [String] = []
        let report = try LatentCache.encode(folder: root, vae: try SmallVAE.load(), vaeName: "vae",
                                            options: LatentEncodeOptions(size: 16, mode: .mean, shardSize: 8), to: scratch + "/cache",
                                            skipped: { lines.append($0) })
        XCTAssertTrue(report.complete)
        XCTAssertEqual(report.samples, names.count - refused.count)
        XCTAssertEqual(lines.count, refused.count, lines.joined(separator: "\n"))
        for (line, name) in zip(lines, refused.sorted(by: ImageFolder.pythonOrder)) {
            XCTAssertTrue(line.hasPrefix(root + "/all/" + name + ": "), line)
            XCTAssertFalse(line.contains("\n"), line)
        }
    }

    /// Posterior noise: standard normal, a different stream per sample and per seed, the same on every call.
    func testNoiseIsPerSampleAndStandardNormal() {
        let a = LatentCache.noiseFor(seed: 0, sample: 0, count: 20_000)
        XCTAssertEqual(a, LatentCache.noiseFor(seed: 0, sample: 0, count: 20_000))
        XCTAssertNotEqual(Array(a.prefix(8)), LatentCache.noiseFor(seed: 0, sample: 1, count: 8))
        XCTAssertNotEqual(Array(a.prefix(8)), LatentCache.noiseFor(seed: 1, sample: 0, count: 8))
        let mean = a.reduce(0, +) / Float(a.count)
        let variance = a.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(a.count)
        XCTAssertEqual(mean, 0, accuracy: 0.03)
        XCTAssertEqual(variance, 1, accuracy: 0.04)
    }

    /// An encode stopped after one shard (a kill between shards) and run again gives the same bytes as
    /// one uninterrupted run; the unfinished cache is refused as training data meanwhile, and a rerun
    /// with other options is refused.
    func testInterruptedEncodeResumesToIdenticalBytes() throws {
        let scratch = Paths.scratch(self)
        let root = scratch + "/images"
        mkdir(root, 0o755)
        _ = try makeImageFolder(root)
        let vae = try SmallVAE.load()
        let options = LatentEncodeOptions(size: 16, flip: true, mode: .sample, seed: 11, shardSize: 2)
        let whole = try LatentCache.encode(folder: root, vae: vae, vaeName: "b", options: options, to: scratch + "/whole", batch: 2)
        XCTAssertEqual(whole.samples, 12)

        let resumed = scratch + "/resumed"
        let first = try LatentCache.encode(folder: root, vae: vae, vaeName: "b", options: options, to: resumed, batch: 3, stopAfterShards: 1)
        XCTAssertFalse(first.complete)
        XCTAssertEqual(first.shardsWritten, 1)
        assertPPError(.badInput, mentions: ["unfinished", "3 of 4 shards missing"]) { try LatentCache.shardPaths(of: resumed) }
        assertPPError(.outputRefused, mentions: ["size: 16 before, 8 now"]) {
            try LatentCache.encode(folder: root, vae: vae, vaeName: "b", options: LatentEncodeOptions(size: 8, flip: true, seed: 11, shardSize: 2), to: resumed)
        }
        let second = try LatentCache.encode(folder: root, vae: vae, vaeName: "b", options: options, to: resumed, batch: 1)
        XCTAssertTrue(second.complete)
        XCTAssertEqual(second.shardsReused, 1)
        XCTAssertEqual(second.shardsWritten, 3)
        XCTAssertEqual(second.samples, 12)
        XCTAssertEqual(second.skipped.count, 1)

        let names = OutputTarget.listFolder(scratch + "/whole")
        XCTAssertEqual(names, ["cache.json"] + (0..<4).map(LatentCache.shardName))
        XCTAssertEqual(OutputTarget.listFolder(resumed), names)
        for name in names {
            XCTAssertEqual(try fileBytes(scratch + "/whole/" + name), try fileBytes(resumed + "/" + name), name)
        }
        // A flipped sample is the mirrored image's latent: labels come in pairs.
        let labels = try SafetensorsFile.open(resumed + "/" + LatentCache.shardName(0)).tensors["labels"]!.int64s()
        XCTAssertEqual(labels, [0, 0, 0, 0])
        // A folder the toolkit did not write is never used.
        let foreign = scratch + "/foreign"
        mkdir(foreign, 0o755)
        try write([1], to: foreign + "/notes.txt")
        assertPPError(.outputRefused, mentions: ["did not write"]) {
            try LatentCache.encode(folder: root, vae: vae, vaeName: "b", options: options, to: foreign, force: true)
        }
    }
}

final class EncodeCommandTests: XCTestCase {
    /// `ppfinetune encode` killed with SIGKILL once its first shard is in place, then run again, ends with
    /// the same files, byte for byte, as an uninterrupted run (if the encode finishes before the kill,
    /// the comparison still holds, it only proves less).
    func testKilledEncodeResumesToIdenticalBytes() throws {
        let scratch = Paths.scratch(self)
        let root = scratch + "/images"
        mkdir(root, 0o755)
        for c in 0..<2 {
            mkdir("\(root)/c\(c)", 0o755)
            for i in 0..<12 {
                var random = SeededRandom(seed: UInt64(c * 100 + i))
                let pixels = (0..<(70 * 50 * 3)).map { _ in UInt8(truncatingIfNeeded: random.next()) }   // [50, 70, 3]
                try PNGFile.write(rgb: pixels, width: 70, height: 50, to: "\(root)/c\(c)/\(i).png")
            }
        }
        let arguments = { (out: String) in ["encode", root, "--vae", SmallVAE.path, "--size", "48", "--shard-size", "3", "--batch", "2",
                                            "--threads", "1", "--out", out] }
        let whole = try runTool("ppfinetune", arguments(scratch + "/whole"))
        XCTAssertEqual(whole.status, 0, whole.output)

        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: FileOutput.directory(of: String(cString: Array(buffer[0..<max(n, 0)]) + [0])) + "/ppfinetune")
        process.arguments = arguments(scratch + "/killed")
        process.standardOutput = FileHandle.nullDevice; process.standardError = FileHandle.nullDevice
        try process.run()
        let first = scratch + "/killed/" + LatentCache.shardName(0)
        for _ in 0..<2000 where access(first, F_OK) != 0 && process.isRunning { usleep(2000) }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        // 24 images take over a second here; the kill lands mid-encode.
        XCTAssertEqual(process.terminationReason, .uncaughtSignal, "the encode ended before the kill")
        let again = try runTool("ppfinetune", arguments(scratch + "/killed"))
        XCTAssertEqual(again.status, 0, again.output)
        XCTAssertTrue(again.output.contains("reused from an earlier run"), again.output)
        let names = OutputTarget.listFolder(scratch + "/whole")
        XCTAssertEqual(names.count, 1 + 8)
        XCTAssertEqual(OutputTarget.listFolder(scratch + "/killed"), names, "no temporaries left behind")
        for name in names {
            XCTAssertEqual(try fileBytes(scratch + "/whole/" + name), try fileBytes(scratch + "/killed/" + name), name)
        }
    }
}
