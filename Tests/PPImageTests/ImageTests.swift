// PPImage against Pillow: decoded pixels and center crops equal to the arrays Pillow wrote
// (Tests/Fixtures/images/reference.safetensors, made by scripts/make-image-fixtures.py).
@_exported import PPTestSupport
import PPFileIO
import PPImage
import PPSafetensors
import PPTensor
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Pillow's answers, loaded once.
enum Oracle {
    static let file: SafetensorsFile = try! SafetensorsFile.open(Paths.fixture("images/reference.safetensors"))
    static var metadata: [String: String] { Dictionary(file.metadata, uniquingKeysWith: { a, _ in a }) }
    static func image(_ name: String) -> String { Paths.fixture("images/\(name)") }
    /// (shape, bytes) of a reference array.
    static func array(_ key: String) -> ([Int], [UInt8])? {
        guard let t = file.tensors[key] else { return nil }
        return (t.shape, t.rowMajorBytes())
    }
    static var decodedNames: [String] {
        file.tensors.names.filter { $0.hasPrefix("decode/") }.map { String($0.dropFirst("decode/".count)) }.sorted()
    }
}

/// Fails unless `image` equals the reference within `tolerance` levels per byte; reports the count of
/// differing bytes and the worst one.
func assertMatches(_ image: RGBImage, _ key: String, tolerance: Int = 0, file: StaticString = #filePath, line: UInt = #line) {
    guard let (shape, expected) = Oracle.array(key) else { return XCTFail("no reference \(key)", file: file, line: line) }
    XCTAssertEqual([image.height, image.width, 3], shape, key, file: file, line: line)
    guard expected.count == image.pixels.count else { return }
    var differing = 0, worst = 0, worstAt = 0
    for i in 0..<expected.count {
        let d = abs(Int(image.pixels[i]) - Int(expected[i]))
        if d > 0 { differing += 1 }
        if d > worst { worst = d; worstAt = i }
    }
    if worst > tolerance {
        let pixel = worstAt / 3
        XCTFail("\(key): \(differing) bytes differ, worst by \(worst) at (x \(pixel % image.width), y \(pixel / image.width), c \(worstAt % 3)): \(image.pixels[worstAt]) vs \(expected[worstAt])",
                file: file, line: line)
    }
}

final class DecodeTests: XCTestCase {
    func testEveryImagePillowDecodesMatchesItsPixelsExactly() throws {
        let names = Oracle.decodedNames
        XCTAssertGreaterThanOrEqual(names.count, 15)
        for name in names {
            let image = try ImageDecoder.decodeRGB(Oracle.image(name))
            assertMatches(image, "decode/\(name)")
        }
    }

    func testFormatIsFoundFromTheContentNotTheName() throws {
        let folder = Paths.scratch(self)
        let png = try fileBytes(Oracle.image("rgb_37x53.png"))
        try write(png, to: folder + "/misnamed.jpg")
        assertMatches(try ImageDecoder.decodeRGB(folder + "/misnamed.jpg"), "decode/rgb_37x53.png")
    }

    func testExifOrientationIsNotApplied() throws {
        // The fixture is stored 20 wide and 10 high with orientation 6 (display rotated): Pillow's
        // open keeps the stored layout.
        let image = try ImageDecoder.decodeRGB(Oracle.image("exif_rotated_20x10.jpg"))
        XCTAssertEqual([image.width, image.height], [20, 10])
    }

    func testFilesPillowRefusesAreOneLineErrorsNamingTheFile() {
        let refused = Oracle.metadata.keys.filter { $0.hasPrefix("error/") }.map { String($0.dropFirst("error/".count)) }
        XCTAssertEqual(Set(refused), ["truncated.jpg", "corrupt_data.png", "not_an_image.jpg", "crc_bad_text_before_idat.png", "bad_adler.png",
                                      "truncated_eoi_baseline.jpg", "truncated_eoi_progressive.jpg"])
        for name in refused {
            assertPPError(.badInput, mentions: [name]) { try ImageDecoder.decodeRGB(Oracle.image(name)) }
        }
        assertPPError(.badInput, mentions: ["bad CRC in the tEXt chunk"]) { try ImageDecoder.decodeRGB(Oracle.image("crc_bad_text_before_idat.png")) }
        assertPPError(.badInput, mentions: ["truncated.jpg", "truncated"]) { try ImageDecoder.decodeRGB(Oracle.image("truncated.jpg")) }
        assertPPError(.badInput, mentions: ["corrupt_data.png", "PNG"]) { try ImageDecoder.decodeRGB(Oracle.image("corrupt_data.png")) }
        assertPPError(.badInput, mentions: ["not_an_image.jpg", "not an image"]) { try ImageDecoder.decodeRGB(Oracle.image("not_an_image.jpg")) }
    }

    func testBrokenInputsNeverCrash() throws {
        let folder = Paths.scratch(self)
        let jpeg = try fileBytes(Oracle.image("rgb_progressive_300x97.jpg"))
        let png = try fileBytes(Oracle.image("rgba_29x31.png"))
        // Every prefix length class and a spread of single-byte corruptions: decoded or a PPError.
        var cases: [(String, [UInt8])] = [("empty", []), ("soi", [0xFF, 0xD8, 0xFF]), ("signature", Array(png.prefix(8)))]
        for cut in stride(from: 1, to: jpeg.count, by: max(1, jpeg.count / 40)) { cases.append(("jpeg-cut-\(cut)", Array(jpeg.prefix(cut)))) }
        for cut in stride(from: 1, to: png.count, by: max(1, png.count / 40)) { cases.append(("png-cut-\(cut)", Array(png.prefix(cut)))) }
        for at in stride(from: 2, to: jpeg.count, by: max(1, jpeg.count / 60)) { var b = jpeg; b[at] ^= 0xA5; cases.append(("jpeg-flip-\(at)", b)) }
        for at in stride(from: 8, to: png.count, by: max(1, png.count / 60)) { var b = png; b[at] ^= 0xA5; cases.append(("png-flip-\(at)", b)) }
        for (name, bytes) in cases {
            let path = "\(folder)/\(name)"
            try write(bytes, to: path)
            do {
                _ = try ImageDecoder.decodeRGB(path)
            } catch let error as PPError {
                XCTAssertTrue(error.description.hasPrefix(path), "\(error)")
                XCTAssertFalse(error.description.contains("\n"))
            }
        }
    }

    func testOtherFormatsAreReportedAsUnsupported() throws {
        let folder = Paths.scratch(self)
        try write(Array("BM".utf8) + [UInt8](repeating: 0, count: 60), to: folder + "/a.bmp")
        assertPPError(.unsupported, mentions: ["a.bmp", "BMP", "only JPEG and PNG"]) { try ImageDecoder.decodeRGB(folder + "/a.bmp") }
    }

    func testImagesOverPillowsPixelLimitAreRefusedBeforeDecoding() throws {
        // A PNG header announcing 20000 x 20000 pixels (400 M > 2 * 89,478,485), no data.
        var ihdr: [UInt8] = Array("IHDR".utf8)
        for v in [UInt32(20_000), 20_000] { ihdr += withUnsafeBytes(of: v.bigEndian, Array.init) }
        ihdr += [8, 2, 0, 0, 0]
        let crc = crc32(ihdr)
        let png: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13] + ihdr + withUnsafeBytes(of: crc.bigEndian, Array.init)
        let path = Paths.scratch(self) + "/huge.png"
        try write(png, to: path)
        assertPPError(.badInput, mentions: ["huge.png", "decompression-bomb"]) { try ImageDecoder.decodeRGB(path) }
    }
}

final class CropTests: XCTestCase {
    func testCenterCropMatchesPillowForEverySizeAndImage() throws {
        let keys = Oracle.file.tensors.names.filter { $0.hasPrefix("crop") }
        XCTAssertGreaterThanOrEqual(keys.count, 30)
        XCTAssertTrue(keys.contains("crop64/rgb_420_large_260x200.jpg"), "the BOX halving loop needs a large image")
        XCTAssertTrue(keys.contains("crop32_pillow12/rgb_tall_70x400.jpg"), "the pass order of Pillow 12 and older")
        for key in keys {
            // "crop32/x.png" (Pillow 13, the oracle's version) or "crop32_pillow12/x.png" (older pass order).
            let parts = key.split(separator: "/", maxSplits: 1)
            let kind = parts[0].dropFirst("crop".count).split(separator: "_")
            let order: Resample.PassOrder = kind.count > 1 ? .horizontalFirst : .pillow13
            let image = try ImageDecoder.decodeRGB(Oracle.image(String(parts[1])))
            assertMatches(try CenterCrop.apply(image, size: Int(kind[0])!, order: order), key)
        }
    }

    func testFlipMirrorsTheCrop() throws {
        let image = try ImageDecoder.decodeRGB(Oracle.image("rgb_37x53.png"))
        let crop = try CenterCrop.apply(image, size: 16)
        let flipped = try CenterCrop.apply(image, size: 16, flip: true)
        for y in 0..<16 { for x in 0..<16 { XCTAssertTrue(crop[x, y] == flipped[15 - x, y]) } }
        XCTAssertEqual(flipped.flippedHorizontally(), crop)
    }

    func testFloatCHWIsWhatToTensorAndNormalizeGive() throws {
        let image = RGBImage(width: 2, height: 1, pixels: [0, 128, 255, 1, 2, 3])
        let chw = image.toFloatCHW()   // [3, 1, 2]
        XCTAssertEqual(chw.count, 6)
        XCTAssertEqual(chw[0], -1)            // r of pixel 0
        XCTAssertEqual(chw[1], ((Float(1) / 255) - 0.5) / 0.5)   // r of pixel 1
        XCTAssertEqual(chw[2], ((Float(128) / 255) - 0.5) / 0.5) // g of pixel 0
        XCTAssertEqual(chw[4], 1)             // b of pixel 0
        for v in 0...255 { XCTAssertEqual(Double(((Float(v) / 255) - 0.5) / 0.5), Double(v) / 127.5 - 1, accuracy: 1e-6) }
        XCTAssertEqual(image.toTensorCHW().shape, [3, 1, 2])
    }

    func testResizeToTheSameSizeIsIdentity() throws {
        let image = try ImageDecoder.decodeRGB(Oracle.image("rgb_37x53.png"))
        XCTAssertEqual(Resample.resize(image, width: 37, height: 53, filter: .bicubic), image)
    }
}

final class PNGFileTests: XCTestCase {
    func testRGBAndGrayRoundTripThroughTheDecoderWithTheSameBytesEveryTime() throws {
        let folder = Paths.scratch(self)
        let image = try ImageDecoder.decodeRGB(Oracle.image("rgb_progressive_300x97.jpg"))
        try PNGFile.write(rgb: image, to: folder + "/a.png")
        try PNGFile.write(rgb: image, to: folder + "/b.png")
        XCTAssertEqual(try ImageDecoder.decodeRGB(folder + "/a.png"), image)
        let a = try fileBytes(folder + "/a.png"), b = try fileBytes(folder + "/b.png")
        XCTAssertEqual(a, b, "same pixels, same bytes")
        XCTAssertLessThan(a.count, image.pixels.count, "compressed")
        // A smooth picture (what sample grids mostly are) compresses far below the raw size.
        var smooth = [UInt8](repeating: 0, count: 64 * 64 * 3)   // [64, 64, 3] diagonal ramp
        for y in 0..<64 { for x in 0..<64 { for c in 0..<3 { smooth[(y * 64 + x) * 3 + c] = UInt8(x + y + c) } } }
        let smoothPNG = try PNGFile.encode(pixels: smooth, width: 64, height: 64, channels: 3)
        XCTAssertLessThan(smoothPNG.count, smooth.count / 10)
        XCTAssertFalse(String(decoding: a, as: UTF8.self).contains("tIME"), "no timestamp chunk")

        let gray = (0..<(13 * 7)).map { UInt8(($0 * 37) % 256) }
        try PNGFile.write(gray: gray, width: 13, height: 7, to: folder + "/g.png")
        let decoded = try ImageDecoder.decodeRGB(folder + "/g.png")
        XCTAssertEqual(decoded.pixels, gray.flatMap { [$0, $0, $0] })
    }

    func testBadShapesAreUsageErrors() {
        assertPPError(.usage, mentions: ["channels"]) { try PNGFile.encode(pixels: [0, 0], width: 1, height: 1, channels: 2) }
        assertPPError(.usage, mentions: ["bytes"]) { try PNGFile.encode(pixels: [0, 0], width: 1, height: 1, channels: 3) }
    }
}

final class ImageFolderTests: XCTestCase {
    /// Class and file names whose order differs between case-insensitive, locale, Unicode-canonical and
    /// code-point sorting (NFC "\u{E9}" and NFD "e\u{301}" are distinct names); the expected order is
    /// what torchvision's code printed for the same tree.
    func testOrderIsTorchvisionsOnTrickyNames() throws {
        let root = Paths.scratch(self) + "/data"
        let png = try fileBytes(Oracle.image("one_1x1.png"))
        let layout: [String: [String]] = [
            "b": ["Z.png", "a.PNG", "_x.jpg", "10.jpeg", "9.jpg", "\u{E9}.png", "e\u{301}.png", "e.png", "sub/inner.png", "sub/deeper/z.png", "sub b/x.png", "sub-a/y.png", "note.txt", ".hidden.png"],
            "B": ["1.JPG", "z.bmp"],
            "a10": ["x.png"],
            "a9": ["x.webp", "y.png"],
            "Ä": ["x.png"],
            "_under": ["x.png"],
        ]
        for (cls, files) in layout {
            for file in files {
                let path = "\(root)/\(cls)/\(file)"
                mkdirs(FileOutput.directory(of: path))
                try write(png, to: path)
            }
        }
        try write(png, to: root + "/top-level-file.png")   // not a class
        let folder = try ImageFolder.scan(root)
        // Python: sorted(["b", "B", "a10", "a9", "Ä", "_under"]) == ['B', '_under', 'a10', 'a9', 'b', 'Ä']
        XCTAssertEqual(folder.classes, ["B", "_under", "a10", "a9", "b", "Ä"])
        let relative = folder.items.map { (String($0.path.dropFirst(root.count + 1)), $0.classIndex) }
        // Per class: os.walk's (folder, files) tuples sorted by folder path, so "b/sub/deeper" comes after
        // "b/sub b" and "b/sub-a" ('/' > '-' > ' '), not right after "b/sub"; names sorted.
        let expected: [(String, Int)] = [
            ("B/1.JPG", 0), ("B/z.bmp", 0),
            ("_under/x.png", 1),
            ("a10/x.png", 2),
            ("a9/x.webp", 3), ("a9/y.png", 3),
            ("b/.hidden.png", 4), ("b/10.jpeg", 4), ("b/9.jpg", 4), ("b/Z.png", 4), ("b/_x.jpg", 4), ("b/a.PNG", 4),
            ("b/e.png", 4), ("b/e\u{301}.png", 4), ("b/\u{E9}.png", 4), ("b/sub/inner.png", 4), ("b/sub b/x.png", 4), ("b/sub-a/y.png", 4), ("b/sub/deeper/z.png", 4),
            ("Ä/x.png", 5),
        ]
        // Compared as bytes: Swift's String == treats "\u{E9}" and "e\u{301}" as equal, Python does not.
        XCTAssertEqual(relative.map { Array($0.0.utf8) }, expected.map { Array($0.0.utf8) }, "\(relative.map(\.0))")
        XCTAssertEqual(relative.map(\.1), expected.map(\.1))
        XCTAssertEqual(folder.unsupported.count, 2)
        XCTAssertTrue(folder.unsupported[0].hasSuffix("B/z.bmp: a .bmp file; only JPEG and PNG are decoded (convert it to PNG)"), folder.unsupported[0])
        XCTAssertEqual(folder.decodableItems.count, expected.count - 2)
    }

    func testWalkFollowsLinksButNotLoops() throws {
        let root = Paths.scratch(self) + "/data"
        let png = try fileBytes(Oracle.image("one_1x1.png"))
        mkdirs(root + "/cat/real")
        mkdirs(root + "/elsewhere")
        try write(png, to: root + "/cat/real/a.png")
        try write(png, to: root + "/elsewhere/b.png")
        XCTAssertEqual(symlink(root + "/elsewhere", root + "/cat/linked"), 0)
        XCTAssertEqual(symlink(root + "/cat", root + "/cat/real/loop"), 0)
        let folder = try ImageFolder.scan(root)
        XCTAssertEqual(folder.classes, ["cat", "elsewhere"])
        XCTAssertEqual(folder.items.map { String($0.path.dropFirst(root.count + 1)) },
                       ["cat/linked/b.png", "cat/real/a.png", "elsewhere/b.png"])
        XCTAssertEqual(folder.notes.count, 1, "\(folder.notes)")
    }

    func testTheDocumentedExampleRuns() throws {
        let root = Paths.scratch(self) + "/data"
        for (cls, file) in [("cat", "rgb_37x53.png"), ("dog", "cmyk_33x21.jpg"), ("dog", "rgb_tall_70x400.jpg")] {
            mkdirs("\(root)/\(cls)")
            try write(try fileBytes(Oracle.image(file)), to: "\(root)/\(cls)/\(file)")
        }
        let inputs = try vaeInputs(folder: root, size: 16)
        XCTAssertEqual(inputs.map(\.label), [0, 1, 1])
        XCTAssertTrue(inputs.allSatisfy { $0.pixels.count == 3 * 16 * 16 && $0.pixels.allSatisfy { $0 >= -1 && $0 <= 1 } })
        let written = try ImageDecoder.decodeRGB("\(root)/dog/cmyk_33x21.jpg.crop.png")
        assertMatches(written, "crop16/cmyk_33x21.jpg")
    }

    func testEmptyRootsAndEmptyClassesAreErrors() throws {
        let root = Paths.scratch(self)
        assertPPError(.badInput, mentions: [root, "no class folder"]) { try ImageFolder.scan(root) }
        mkdirs(root + "/empty")
        mkdirs(root + "/full")
        try write(try fileBytes(Oracle.image("one_1x1.png")), to: root + "/full/x.png")
        assertPPError(.badInput, mentions: ["no image file for the classes empty"]) { try ImageFolder.scan(root) }
        assertPPError(.missingInput, mentions: ["nowhere"]) { try ImageFolder.scan(root + "/nowhere") }
    }
}

/// docs/IMAGES.md's example, verbatim.
func vaeInputs(folder root: String, size: Int) throws -> [(pixels: [Float], label: Int)] {
    let folder = try ImageFolder.scan(root)                    // classes + (path, class) items
    for line in folder.unsupported { print(line) }              // .bmp/.tif/.webp...: one line each
    return try folder.decodableItems.map { item in
        let image = try ImageDecoder.decodeRGB(item.path)       // [H, W, 3] UInt8, as Pillow
        let crop = try CenterCrop.apply(image, size: size)      // ADM's center_crop_arr
        try PNGFile.write(rgb: crop, to: item.path + ".crop.png")   // deterministic bytes
        return (crop.toFloatCHW(), item.classIndex)             // [3, S, S] float in [-1, 1]
    }
}

/// mkdir -p for an absolute path.
func mkdirs(_ path: String) {
    var prefix = ""
    for part in path.split(separator: "/") { prefix += "/" + part; mkdir(prefix, 0o755) }
}

func crc32(_ bytes: [UInt8]) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for byte in bytes {
        crc ^= UInt32(byte)
        for _ in 0..<8 { crc = (crc & 1) != 0 ? 0xEDB8_8320 ^ (crc >> 1) : crc >> 1 }
    }
    return crc ^ 0xFFFF_FFFF
}

/// The larger random comparison (not committed data): runs when PPIMAGE_STRESS_DIR names a folder made
/// by `scripts/make-image-fixtures.py --stress DIR N`; skipped otherwise.
final class RandomImageTests: XCTestCase {
    func testRandomImagesMatchPillow() throws {
        guard let value = getenv("PPIMAGE_STRESS_DIR") else { throw XCTSkip("PPIMAGE_STRESS_DIR not set") }
        let folder = String(cString: value)
        let manifest = String(decoding: try fileBytes(folder + "/manifest.txt"), as: UTF8.self)
        var checked = 0, decodeExact = 0, cropExact = 0, worstDecode = 0, worstCrop = 0
        for line in manifest.split(separator: "\n") {
            let fields = line.split(separator: " ").map(String.init)
            let (name, size) = (fields[0], Int(fields[3])!)
            let image = try ImageDecoder.decodeRGB("\(folder)/\(name)")
            let crop = try CenterCrop.apply(image, size: size)
            let d = maxDifference(image.pixels, try fileBytes("\(folder)/\(name).decoded"))
            let c = maxDifference(crop.pixels, try fileBytes("\(folder)/\(name).crop"))
            if d == 0 { decodeExact += 1 } else { print("\(line): decode differs by up to \(d)") }
            if c == 0 { cropExact += 1 } else { print("\(line): crop differs by up to \(c)") }
            worstDecode = max(worstDecode, d); worstCrop = max(worstCrop, c)
            checked += 1
        }
        print("random images: \(checked); decodes exact \(decodeExact), crops exact \(cropExact); worst differences \(worstDecode), \(worstCrop)")
        XCTAssertLessThanOrEqual(worstDecode, 1)
        XCTAssertLessThanOrEqual(worstCrop, 1)
    }

    func maxDifference(_ a: [UInt8], _ b: [UInt8]) -> Int {
        guard a.count == b.count else { return 255 }
        return zip(a, b).reduce(0) { max($0, abs(Int($1.0) - Int($1.1))) }
    }
}
