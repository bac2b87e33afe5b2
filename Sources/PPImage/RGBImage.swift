import PPTensor

/// An 8-bit RGB picture as Pillow's `Image.convert("RGB")` holds it: rows top to bottom, pixels left to
/// right, three bytes per pixel.
public struct RGBImage: Equatable, Sendable {
    public let width: Int
    public let height: Int
    /// [height, width, 3] row-major.
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width >= 0 && height >= 0 && pixels.count == width * height * 3,
                     "RGBImage: \(pixels.count) bytes for \(width)x\(height)x3")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// The pixel at (x, y) as (r, g, b).
    public subscript(x: Int, y: Int) -> (UInt8, UInt8, UInt8) {
        let i = (y * width + x) * 3
        return (pixels[i], pixels[i + 1], pixels[i + 2])
    }

    /// Mirror image left to right (torchvision's `RandomHorizontalFlip` when it fires).
    public func flippedHorizontally() -> RGBImage {
        var out = [UInt8](repeating: 0, count: pixels.count)
        for y in 0..<height {
            let row = y * width * 3
            for x in 0..<width {
                let from = row + x * 3, to = row + (width - 1 - x) * 3
                out[to] = pixels[from]; out[to + 1] = pixels[from + 1]; out[to + 2] = pixels[from + 2]
            }
        }
        return RGBImage(width: width, height: height, pixels: out)
    }

    /// The VAE's input: float [3, height, width] in [-1, 1], computed as the official pipeline does in
    /// float32: `ToTensor()` (x / 255) then `Normalize(mean=0.5, std=0.5)` ((v - 0.5) / 0.5). This is
    /// x / 127.5 - 1 up to float32 rounding, and equal to what the PyTorch code feeds the VAE bit for bit.
    public func toFloatCHW() -> [Float] {
        let table: [Float] = (0..<256).map { ((Float($0) / 255) - 0.5) / 0.5 }
        let plane = width * height
        var out = [Float](repeating: 0, count: 3 * plane)   // [3, height, width]
        for i in 0..<plane {
            out[i] = table[Int(pixels[3 * i])]
            out[plane + i] = table[Int(pixels[3 * i + 1])]
            out[2 * plane + i] = table[Int(pixels[3 * i + 2])]
        }
        return out
    }

    /// The same values as a tensor view [3, height, width] (f32), ready for a safetensors file.
    public func toTensorCHW() -> TensorView {
        TensorView(floats: toFloatCHW(), shape: [3, height, width])
    }
}
