import CLibPNG
import PPFileIO
import PPTensor

#if canImport(Glibc)
import Glibc
#endif

/// PNG output through libpng: 8-bit gray or RGB, zlib level 6 with libpng's adaptive row filters, and
/// no time or text chunks, so the same pixels give the same bytes on every run (and with the same
/// libpng and zlib, on every machine). Files are written under a temporary name and renamed.
/// PPSample's grids and ppsample --images go through it.
public enum PNGFile {
    /// pixels [height, width, channels] (channels 1 or 3), row-major bytes -> the PNG file's bytes.
    public static func encode(pixels: [UInt8], width: Int, height: Int, channels: Int) throws -> [UInt8] {
        guard channels == 1 || channels == 3 else { throw PPError(.usage, "PNG needs 1 or 3 channels, got \(channels)") }
        guard width > 0, height > 0, width <= 0x7FFF_FFFF, height <= 0x7FFF_FFFF,
              pixels.count == width * height * channels else {
            throw PPError(.usage, "PNG: \(pixels.count) bytes for \(width)x\(height)x\(channels)")
        }
        var output: UnsafeMutablePointer<UInt8>? = nil
        var count = 0
        var message = [CChar](repeating: 0, count: 256)   // the shim writes at most 256 bytes
        let code = pixels.withUnsafeBufferPointer { source in
            message.withUnsafeMutableBufferPointer { text in
                ppimage_png_write(source.baseAddress, Int32(width), Int32(height), Int32(channels), &output, &count, text.baseAddress)
            }
        }
        defer { free(output) }
        guard code == 0, let output else {
            throw PPError(.io, "PNG encoding failed: \(message.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })")
        }
        return Array(UnsafeBufferPointer(start: output, count: count))
    }

    /// Writes an RGB picture as a PNG file.
    public static func write(rgb image: RGBImage, to path: String) throws {
        let bytes = try encode(pixels: image.pixels, width: image.width, height: image.height, channels: 3)
        try FileOutput.writeFile(path, bytes: bytes)
    }

    /// Writes RGB pixels [height, width, 3] as a PNG file.
    public static func write(rgb pixels: [UInt8], width: Int, height: Int, to path: String) throws {
        try FileOutput.writeFile(path, bytes: encode(pixels: pixels, width: width, height: height, channels: 3))
    }

    /// Writes gray pixels [height, width] as a PNG file.
    public static func write(gray pixels: [UInt8], width: Int, height: Int, to path: String) throws {
        try FileOutput.writeFile(path, bytes: encode(pixels: pixels, width: width, height: height, channels: 1))
    }
}
