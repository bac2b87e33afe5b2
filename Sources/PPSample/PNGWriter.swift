import PPTensor

/// Minimal PNG encoder: 8-bit grayscale or RGB, no interlace, filter 0 on every row, and a zlib stream of
/// stored (uncompressed) deflate blocks. Latent previews are small, so compression is not worth a codec.
public enum PNGWriter {
    /// pixels [height, width, channels] (channels 1 or 3), row-major bytes.
    public static func encode(pixels: [UInt8], width: Int, height: Int, channels: Int) throws -> [UInt8] {
        guard channels == 1 || channels == 3 else { throw PPError(.usage, "PNG needs 1 or 3 channels, got \(channels)") }
        guard width > 0, height > 0, pixels.count == width * height * channels else {
            throw PPError(.usage, "PNG: \(pixels.count) bytes for \(width)x\(height)x\(channels)")
        }
        var header: [UInt8] = []
        appendBigEndian(UInt32(width), to: &header)
        appendBigEndian(UInt32(height), to: &header)
        header += [8, channels == 1 ? 0 : 2, 0, 0, 0]  // bit depth, colour type, compression, filter, interlace
        // Scanlines: [height, 1 + width·channels], each led by filter type 0 (None).
        let rowBytes = width * channels
        var raw = [UInt8]()
        raw.reserveCapacity(height * (rowBytes + 1))
        for row in 0..<height {
            raw.append(0)
            raw += pixels[(row * rowBytes)..<((row + 1) * rowBytes)]
        }
        var png: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        appendChunk("IHDR", header, to: &png)
        appendChunk("IDAT", zlibStored(raw), to: &png)
        appendChunk("IEND", [], to: &png)
        return png
    }

    /// A zlib stream (RFC 1950) holding `data` in stored deflate blocks (RFC 1951 BTYPE 00, <= 65535 bytes).
    public static func zlibStored(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x78, 0x01]  // deflate, 32K window; 0x7801 is a multiple of 31
        var offset = 0
        repeat {
            let length = min(65_535, data.count - offset)
            let final = offset + length == data.count
            out.append(final ? 1 : 0)
            let len = UInt16(length), nlen = ~UInt16(length)
            out += [UInt8(len & 0xFF), UInt8(len >> 8), UInt8(nlen & 0xFF), UInt8(nlen >> 8)]
            out += data[offset..<(offset + length)]
            offset += length
        } while offset < data.count
        appendBigEndian(adler32(data), to: &out)
        return out
    }

    public static func adler32(_ data: [UInt8]) -> UInt32 {
        var a: UInt32 = 1, b: UInt32 = 0
        // 5552 bytes is the longest run before b can overflow 32 bits (zlib's NMAX).
        var index = 0
        while index < data.count {
            let end = min(data.count, index + 5552)
            for i in index..<end { a += UInt32(data[i]); b += a }
            a %= 65_521; b %= 65_521
            index = end
        }
        return (b << 16) | a
    }

    /// CRC-32 (IEEE, reflected, polynomial 0xEDB88320) as PNG chunks use it.
    public static func crc32<S: Sequence>(_ bytes: S) -> UInt32 where S.Element == UInt8 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes { crc = crcTable[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }

    private static let crcTable: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    private static func appendChunk(_ type: String, _ data: [UInt8], to png: inout [UInt8]) {
        appendBigEndian(UInt32(data.count), to: &png)
        let typed = Array(type.utf8) + data
        png += typed
        appendBigEndian(crc32(typed), to: &png)
    }

    private static func appendBigEndian(_ value: UInt32, to bytes: inout [UInt8]) {
        bytes += [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)]
    }
}
