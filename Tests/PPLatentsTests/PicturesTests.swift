import Foundation
import PPFileIO
import PPImage
@testable import PPLatents
import PPSafetensors
import PPSample
import PPTensor
import PPTestSupport
import PPVAE
import XCTest

/// Runs one of the built executables (beside this test bundle); stdout and stderr together.
func runTool(_ tool: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    let binaries = FileOutput.directory(of: String(cString: Array(buffer[0..<max(n, 0)]) + [0]))
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "\(binaries)/\(tool)")
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe; process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

final class ClassNamesTests: XCTestCase {
    /// The Swift table is the committed data file, in ImageFolder order (sorted WordNet ids).
    func testImageNetTableMatchesTheDataFile() throws {
        let text = String(decoding: try fileBytes(Paths.repository + "/assets/imagenet/imagenet-classes.tsv"), as: UTF8.self)
        let rows = text.split(separator: "\n").map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }
        XCTAssertEqual(rows.count, 1000)
        XCTAssertEqual(ImageNetClasses.entries.count, 1000)
        for (i, row) in rows.enumerated() {
            XCTAssertEqual(row, [String(i), ImageNetClasses.entries[i].synset, ImageNetClasses.entries[i].lemma], "class \(i)")
        }
        let ids = ImageNetClasses.entries.map(\.synset)
        XCTAssertEqual(ids, ids.sorted(by: ImageFolder.pythonOrder))
        XCTAssertEqual(ids.first, "n01440764")
        XCTAssertEqual(ids.last, "n15075141")
    }

    func testRowLabels() {
        XCTAssertEqual(ClassNames.rowLabel(207, numClasses: 1000), "207 GOLDEN RETRIEVER")
        XCTAssertEqual(ClassNames.rowLabel(0, numClasses: 1000), "0 TENCH")
        XCTAssertEqual(ClassNames.rowLabel(1000, numClasses: 1000), "-")       // the null class
        XCTAssertEqual(ClassNames.rowLabel(7, numClasses: 10), "7")
        XCTAssertEqual(ClassNames.rowLabel(10, numClasses: 10), "-")
        // 607 "jack-o'-lantern": the apostrophe is not in the font and is dropped.
        XCTAssertEqual(ClassNames.rowLabel(607, numClasses: 1000), "607 JACK-O-LANTERN")
        // Every label fits and uses only drawable characters.
        for label in 0..<1000 {
            let text = ClassNames.rowLabel(Int32(label), numClasses: 1000)
            XCTAssertLessThanOrEqual(text.count, 20, text)
            XCTAssertTrue(text.hasPrefix("\(label) "), text)
            XCTAssertTrue(text.allSatisfy(RowLabels.drawable), text)
        }
        // Long names are cut at a word boundary when that keeps at least half the room.
        XCTAssertEqual(ClassNames.rowLabel(2, numClasses: 1000), "2 GREAT WHITE SHARK")
        XCTAssertEqual(ClassNames.rowLabel(2, numClasses: 1000, maxCharacters: 14), "2 GREAT WHITE")
        XCTAssertEqual(ClassNames.rowLabel(2, numClasses: 1000, maxCharacters: 8), "2 GREAT")
    }
}

final class PicturesTests: XCTestCase {
    func run(_ tool: String, _ arguments: [String]) throws -> (status: Int32, output: String) { try runTool(tool, arguments) }

    /// Decoding sampled latents is the VAE's decode(latents / scaling_factor), batch by batch.
    func testDecodeIsTheVAEDecodeOfUnscaledLatents() throws {
        let vae = try SmallVAE.load()
        var random = SeededRandom(seed: 5)
        let latents = random.normals(3 * 4 * 8 * 8)                   // [3, 4, 8, 8]
        let pictures = try LatentPictures.decode(latents, shape: [3, 4, 8, 8], vae: vae, batch: 2)
        XCTAssertEqual(pictures.shape, [3, 3, 16, 16])
        let direct = try vae.decode(z: VAETensor(values: latents.map { $0 / 0.18215 }, shape: [3, 4, 8, 8]))
        assertClose(pictures.values, direct.values, tolerance: 1e-6, "decoded images")
        // A VAE whose latent channels differ from the model's is refused, naming both.
        assertPPError(.usage, mentions: ["4 latent channels", "3-channel latents"]) {
            try LatentPictures.check(vae: vae, vaeName: SmallVAE.path, modelChannels: 3, model: "m.pt")
        }
        XCTAssertEqual(LatentPictures.fileName(index: 12, label: 207), "000012_class207.png")
        XCTAssertTrue(LatentPictures.isSampleFileName("000012_class207.png"))
        XCTAssertFalse(LatentPictures.isSampleFileName("notes.png"))
    }

    /// ppsample on a 4-channel model (ppf2.pt, 8x8 latents, 10 classes) with the fixture VAE writes a
    /// 16x16-cell PNG grid and one 16x16 PNG per sample; without --vae it refuses pictures, naming --vae.
    func testSampleWithVAEWritesGridAndImages() throws {
        let scratch = Paths.scratch(self)
        let model = Paths.fixture("ppf2.pt")
        let common = [model, "--heads", "4", "--objective", "velocity", "--steps", "3", "--labels", "3,1,3"]
        let refused = try run("ppsample", common + ["--png", scratch + "/no.png"])
        XCTAssertEqual(refused.status, 64, refused.output)
        XCTAssertTrue(refused.output.contains("--vae"), refused.output)
        XCTAssertEqual(refused.output.split(separator: "\n").count, 1, refused.output)

        let grid = scratch + "/grid.png", images = scratch + "/images"
        let result = try run("ppsample", common + ["--vae", SmallVAE.path, "--png", grid, "--images", images, "--out", scratch + "/s.safetensors"])
        XCTAssertEqual(result.status, 0, result.output)
        let picture = try ImageDecoder.decodeRGB(grid)
        XCTAssertEqual(picture.height, 2 * (16 + 1) + 1)              // rows: classes 1 and 3; upscale 1 with a VAE
        let names = OutputTarget.listFolder(images)
        XCTAssertEqual(names, ["000000_class3.png", "000001_class1.png", "000002_class3.png"])
        // Each file is the VAE decode of the written latents, converted as the FID pipeline does.
        let vae = try SmallVAE.load()
        let file = try SafetensorsFile.open(scratch + "/s.safetensors")
        let samples = try XCTUnwrap(file.tensors["samples"])
        let decoded = try LatentPictures.decode(samples.floats(), shape: samples.shape, vae: vae)
        for (i, name) in names.enumerated() {
            let image = try ImageDecoder.decodeRGB(images + "/" + name)
            XCTAssertEqual(image.width, 16)
            let expected = SampleOutput.evaluatorPixels(decoded.values[(i * 768)..<((i + 1) * 768)], channels: 3, height: 16, width: 16)
            XCTAssertEqual(image.pixels, expected, name)
        }
        // The images folder is replaced only with --force, and the same run gives the same bytes.
        let again = try run("ppsample", common + ["--vae", SmallVAE.path, "--images", images])
        XCTAssertEqual(again.status, 73, again.output)
        let first = try fileBytes(images + "/" + names[0])
        let forced = try run("ppsample", common + ["--vae", SmallVAE.path, "--images", images, "--force"])
        XCTAssertEqual(forced.status, 0, forced.output)
        XCTAssertEqual(try fileBytes(images + "/" + names[0]), first)
    }
}

final class ConversionDataTests: XCTestCase {
    /// A cache given as conversion data is thinned to evenly spread rows, bytes the same on every call;
    /// an image folder needs a VAE; a plain file is passed through.
    func testSubsetOfACacheAndOfAnImageFolder() throws {
        let scratch = Paths.scratch(self)
        let root = scratch + "/images"
        mkdir(root, 0o755)
        _ = try makeImageFolder(root)
        let vae = try SmallVAE.load()
        let cache = scratch + "/cache"
        _ = try LatentCache.encode(folder: root, vae: vae, vaeName: SmallVAE.path,
                                   options: LatentEncodeOptions(size: 16, flip: true, seed: 2, shardSize: 3), to: cache)
        XCTAssertEqual(LatentSubset.spread(12, 4), [0, 3, 6, 9])
        XCTAssertEqual(LatentSubset.spread(3, 4), [0, 1, 2])

        let first = try LatentSubset.file(for: cache, count: 4, vae: nil, channels: 4, side: 8, seed: 0, log: { _ in })
        let second = try LatentSubset.file(for: cache, count: 4, vae: nil, channels: 4, side: 8, seed: 0, log: { _ in })
        defer { [first, second].compactMap(\.temporary).forEach(FileOutput.removeTree) }
        XCTAssertEqual(try fileBytes(first.path), try fileBytes(second.path))
        // Rows 0, 3, 6, 9 of the 12 cached samples (6 images, each with its mirror).
        var all: [Float] = [], labels: [Int64] = []
        for shard in try LatentCache.shardPaths(of: cache) {
            let file = try SafetensorsFile.open(shard)
            all += file.tensors["latents"]!.floats(); labels += file.tensors["labels"]!.int64s()
        }
        let subset = try SafetensorsFile.open(first.path)
        XCTAssertEqual(subset.tensors["labels"]!.int64s(), [0, 3, 6, 9].map { labels[$0] })
        XCTAssertEqual(subset.tensors["latents"]!.floats(), [0, 3, 6, 9].flatMap { Array(all[($0 * 256)..<(($0 + 1) * 256)]) })

        assertPPError(.usage, mentions: ["needs --vae"]) {
            try LatentSubset.file(for: root, count: 4, vae: nil, channels: 4, side: 8, seed: 0, log: { _ in })
        }
        let images = try LatentSubset.file(for: root, count: 100, vae: SmallVAE.path, channels: 4, side: 8, seed: 0, log: { _ in })
        defer { images.temporary.map(FileOutput.removeTree) }
        XCTAssertEqual(try SafetensorsFile.open(images.path).tensors["labels"]!.int64s(), [0, 0, 0, 1, 1, 1])
        let plain = try LatentSubset.file(for: images.path, count: 1, vae: nil, channels: 4, side: 8, seed: 0, log: { _ in })
        XCTAssertEqual(plain.path, images.path)
        XCTAssertNil(plain.temporary)
    }

    /// from-dit calibrates on a cache and on an image folder with --vae.
    func testFromDiTTakesACacheAndAnImageFolder() throws {
        let scratch = Paths.scratch(self)
        let root = scratch + "/images"
        mkdir(root, 0o755)
        _ = try makeImageFolder(root)
        let sit = Paths.fixture("sit.pt")
        let common = ["from-dit", sit, "--heads", "4", "--objective", "velocity", "--init", "calibrated"]
        let refused = try runTool("ppconvert", common + ["--data", root, "--out", scratch + "/x"])
        XCTAssertEqual(refused.status, 64, refused.output)
        XCTAssertTrue(refused.output.contains("needs --vae"), refused.output)
        let converted = try runTool("ppconvert", common + ["--data", root, "--vae", SmallVAE.path, "--out", scratch + "/y"])
        XCTAssertEqual(converted.status, 0, converted.output)
        XCTAssertTrue(converted.output.contains("skipped"), converted.output)
        XCTAssertTrue(OutputTarget.listFolder(scratch + "/y").contains("config.json"))
    }
}

final class VAEInputTests: XCTestCase {
    /// A VAE argument that is no path but a hub id is found in the local Hugging Face cache.
    func testHubIdFromALocalCache() throws {
        let cache = Paths.scratch(self)
        let commit = String(repeating: "ab", count: 20)
        let snapshot = "\(cache)/models--someone--tiny-vae/snapshots/\(commit)"
        for folder in ["\(cache)/models--someone--tiny-vae", "\(cache)/models--someone--tiny-vae/refs",
                       "\(cache)/models--someone--tiny-vae/snapshots", snapshot] { mkdir(folder, 0o755) }
        try write(Array(commit.utf8), to: "\(cache)/models--someone--tiny-vae/refs/main")
        for name in ["config.json", "diffusion_pytorch_model.safetensors"] {
            try write(try fileBytes("\(SmallVAE.path)/\(name)"), to: "\(snapshot)/\(name)")
        }
        let vae = try VAEInput.load("someone/tiny-vae", environment: ["HF_HUB_CACHE": cache])
        XCTAssertEqual(vae.config.latentChannels, 4)
        XCTAssertEqual(vae.parameters.tensors()["decoder.conv_out.weight"]?.floats(),
                       try SmallVAE.load().parameters.tensors()["decoder.conv_out.weight"]?.floats())
        assertPPError(.missingInput, mentions: ["someone/other-vae", "Hugging Face cache"]) {
            try VAEInput.load("someone/other-vae", environment: ["HF_HUB_CACHE": cache])
        }
    }
}
