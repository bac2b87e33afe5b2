import CJPEG
import CLibPNG
import PPFileIO
import PPTensor

#if canImport(Glibc)
import Glibc
#endif

/// JPEG and PNG files decoded to 8-bit RGB exactly as `PIL.Image.open(path).convert("RGB")` gives them
/// (the loader of torchvision's ImageFolder). The format is found from the content, as Pillow does, not
/// from the file name. What Pillow does per kind of file, and so what this does:
///
/// - JPEG (libjpeg-turbo, its default accurate integer IDCT and fancy upsampling, as Pillow uses it):
///   1 component -> gray replicated to RGB; 3 -> RGB; 4 -> CMYK (YCCK turned into CMYK by libjpeg),
///   always read as Adobe-inverted CMYK (Pillow's "CMYK;I") and then converted with Pillow's formula
///   `nk - nk*c/255` (nk = 255 - k, rounded as Pillow's MULDIV255). Progressive files alike. EXIF
///   orientation is not applied (Pillow's open does not). Corrupt-data warnings are ignored as Pillow
///   ignores them; a file that ends before its EOI marker is refused, as Pillow refuses it ("image file is
///   truncated").
/// - PNG (libpng, no gamma or colour management): gray 1/2/4/8-bit scaled to 0...255 and replicated;
///   gray+alpha and RGBA drop alpha (convert("RGB") does not composite); palette through the PLTE
///   (indices past its end are black, as in Pillow); 16-bit RGB, RGBA and gray+alpha keep the high byte
///   of each sample (Pillow's "RGB;16B" unpacker); 16-bit gray becomes Pillow's "I;16" whose conversion
///   to RGB clips at 255 (min(v, 255), not v >> 8).
/// - Images with more than Pillow's decompression-bomb limit (2 * 89,478,485 pixels) are refused.
public enum ImageDecoder {
    /// Pillow's `Image.MAX_IMAGE_PIXELS`; twice it raises `DecompressionBombError`.
    public static let pillowMaxPixels = 89_478_485
    public static var maxPixels: Int { 2 * pillowMaxPixels }

    public enum Format: String, Sendable {
        case jpeg = "JPEG", png = "PNG", bmp = "BMP", gif = "GIF", tiff = "TIFF", webp = "WebP", netpbm = "PPM/PGM"
    }

    /// The format a file's first bytes announce (nil: nothing Pillow would identify among these).
    public static func sniff(_ bytes: UnsafeRawBufferPointer) -> Format? {
        func starts(_ prefix: [UInt8], at offset: Int = 0) -> Bool {
            bytes.count >= offset + prefix.count && prefix.indices.allSatisfy { bytes[offset + $0] == prefix[$0] }
        }
        if starts([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return .png }
        if starts([0xFF, 0xD8, 0xFF]) { return .jpeg }
        if starts(Array("BM".utf8)) { return .bmp }
        if starts(Array("GIF8".utf8)) { return .gif }
        if starts([0x49, 0x49, 0x2A, 0x00]) || starts([0x4D, 0x4D, 0x00, 0x2A]) { return .tiff }
        if starts(Array("RIFF".utf8)) && starts(Array("WEBP".utf8), at: 8) { return .webp }
        if bytes.count >= 2, bytes[0] == UInt8(ascii: "P"), (UInt8(ascii: "1")...UInt8(ascii: "6")).contains(bytes[1]) { return .netpbm }
        return nil
    }

    /// Reads and decodes the file at `path`.
    public static func decodeRGB(_ path: String) throws -> RGBImage {
        let storage = try ByteStorage(mappingFile: path)
        return try decodeRGB(bytes: storage.bytes, origin: path)
    }

    /// Decodes JPEG or PNG bytes; `origin` names the file in errors.
    public static func decodeRGB(bytes: UnsafeRawBufferPointer, origin: String) throws -> RGBImage {
        guard bytes.count > 0 else { throw PPError.badInput(origin, "empty file, not an image") }
        switch sniff(bytes) {
        case .jpeg?: return try decodeJPEG(bytes, origin: origin)
        case .png?: return try decodePNG(bytes, origin: origin)
        case let other?:
            throw PPError(.unsupported, file: origin, "a \(other.rawValue) image; only JPEG and PNG are decoded (convert it to PNG)")
        case nil:
            throw PPError.badInput(origin, "not an image (neither JPEG nor PNG by its first bytes)")
        }
    }

    // MARK: JPEG

    static func decodeJPEG(_ bytes: UnsafeRawBufferPointer, origin: String) throws -> RGBImage {
        var result = ppimage_jpeg_result()
        let code = ppimage_jpeg_decode(bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), UInt(bytes.count),
                                       UInt64(maxPixels), &result)
        defer { free(result.pixels) }
        let message = withUnsafeBytes(of: result.message) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        switch code {
        case 0: break
        case 2: throw PPError.badInput(origin, "JPEG is truncated (the data ends before the EOI marker); Pillow refuses it too")
        case 3: throw tooLarge(origin, width: Int(result.width), height: Int(result.height))
        case 4: throw PPError(.io, file: origin, "out of memory decoding a \(result.width)x\(result.height) JPEG")
        case 5: throw PPError(.unsupported, file: origin, "JPEG with \(message); Pillow reads 1, 3 or 4")
        default: throw PPError.badInput(origin, "JPEG: \(message)")
        }
        let width = Int(result.width), height = Int(result.height), count = width * height
        let source = UnsafeBufferPointer(start: result.pixels, count: count * Int(result.components))
        var rgb = [UInt8](repeating: 0, count: count * 3)   // [height, width, 3]
        switch result.components {
        case 1:
            for i in 0..<count { let v = source[i]; rgb[3 * i] = v; rgb[3 * i + 1] = v; rgb[3 * i + 2] = v }
        case 3:
            rgb.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: source.baseAddress!, count: count * 3) }
        case 4:
            for i in 0..<count {
                // Pillow always reads 4-component JPEGs as Adobe-inverted CMYK ("CMYK;I").
                let c = 255 - Int(source[4 * i]), m = 255 - Int(source[4 * i + 1])
                let y = 255 - Int(source[4 * i + 2]), k = 255 - Int(source[4 * i + 3])
                let notBlack = 255 - k
                rgb[3 * i] = clip8(notBlack - mulDiv255(c, notBlack))
                rgb[3 * i + 1] = clip8(notBlack - mulDiv255(m, notBlack))
                rgb[3 * i + 2] = clip8(notBlack - mulDiv255(y, notBlack))
            }
        default:
            throw PPError(.unsupported, file: origin, "JPEG decoded to \(result.components) components")
        }
        return RGBImage(width: width, height: height, pixels: rgb)
    }

    /// a*b/255 rounded as Pillow's MULDIV255 macro: t = a*b + 128; ((t >> 8) + t) >> 8.
    @inline(__always) static func mulDiv255(_ a: Int, _ b: Int) -> Int {
        let t = a * b + 128
        return ((t >> 8) + t) >> 8
    }

    @inline(__always) static func clip8(_ v: Int) -> UInt8 { UInt8(min(255, max(0, v))) }

    static func tooLarge(_ origin: String, width: Int, height: Int) -> PPError {
        PPError.badInput(origin, "\(width)x\(height) = \(width * height) pixels is over Pillow's decompression-bomb limit of \(maxPixels)")
    }

    // MARK: PNG

    /// IHDR colour types (PNG spec 11.2.2).
    enum PNGColorType {
        static let gray: Int32 = 0, rgb: Int32 = 2, palette: Int32 = 3, grayAlpha: Int32 = 4, rgba: Int32 = 6
    }

    static func decodePNG(_ bytes: UnsafeRawBufferPointer, origin: String) throws -> RGBImage {
        // IHDR is the first chunk (signature 8 + length 4 + type 4, then width and height): refuse a
        // bomb before libpng reads on, as Pillow refuses it at open.
        if bytes.count >= 24 {
            let width = bytes[16..<20].reduce(0) { $0 << 8 | Int($1) }, height = bytes[20..<24].reduce(0) { $0 << 8 | Int($1) }
            if width * height > maxPixels { throw tooLarge(origin, width: width, height: height) }
        }
        var result = ppimage_png_result()
        let code = ppimage_png_read(bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), bytes.count, UInt64(maxPixels), &result)
        defer { free(result.pixels) }
        let message = withUnsafeBytes(of: result.message) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        switch code {
        case 0: break
        case 2: throw PPError.badInput(origin, "not a PNG (bad signature)")
        case 3: throw tooLarge(origin, width: Int(result.width), height: Int(result.height))
        case 4: throw PPError(.io, file: origin, "out of memory decoding a PNG")
        default: throw PPError.badInput(origin, "PNG: \(message)")
        }
        let width = Int(result.width), height = Int(result.height), count = width * height
        let channels = Int(result.channels), sampleBytes = Int(result.sample_bytes)
        let source = UnsafeBufferPointer(start: result.pixels, count: count * channels * sampleBytes)
        let stride = channels * sampleBytes
        var rgb = [UInt8](repeating: 0, count: count * 3)   // [height, width, 3]
        let isGray = result.color_type == PNGColorType.gray || result.color_type == PNGColorType.grayAlpha
        if result.color_type == PNGColorType.palette {
            let palette = withUnsafeBytes(of: result.palette) { Array($0) }   // [256, 3]
            let entries = Int(result.palette_count)
            for i in 0..<count {
                let index = Int(source[i])
                guard index < entries else { continue }   // past the PLTE: black, as Pillow
                rgb[3 * i] = palette[3 * index]; rgb[3 * i + 1] = palette[3 * index + 1]; rgb[3 * i + 2] = palette[3 * index + 2]
            }
        } else if isGray {
            let plainGray16 = sampleBytes == 2 && result.color_type == PNGColorType.gray
            for i in 0..<count {
                let at = i * stride
                let v: UInt8
                if plainGray16 {
                    // Pillow's "I;16" -> "RGB" clips: min(value, 255).
                    let value = Int(source[at]) << 8 | Int(source[at + 1])
                    v = UInt8(min(value, 255))
                } else {
                    v = source[at]   // 8-bit sample, or the high byte of a 16-bit gray+alpha sample
                }
                rgb[3 * i] = v; rgb[3 * i + 1] = v; rgb[3 * i + 2] = v
            }
        } else {
            // RGB or RGBA, 8 or 16 bits: the (high) byte of the first three samples.
            for i in 0..<count {
                let at = i * stride
                rgb[3 * i] = source[at]
                rgb[3 * i + 1] = source[at + sampleBytes]
                rgb[3 * i + 2] = source[at + 2 * sampleBytes]
            }
        }
        return RGBImage(width: width, height: height, pixels: rgb)
    }
}
