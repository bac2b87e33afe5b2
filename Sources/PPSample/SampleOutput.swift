import PPFileIO
import PPImage
import PPSafetensors
import PPTensor

public enum SampleOutput {
    /// Writes `samples` [B, C, H, W] as tensor "samples" (f32) and `labels` [B] as "labels" (i64) to a
    /// safetensors file, atomically.
    public static func writeSafetensors(samples: [Float], shape: [Int], labels: [Int32], path: String) throws {
        guard shape.count == 4, shape.reduce(1, *) == samples.count, labels.count == shape[0] else {
            throw PPError(.usage, file: path, "samples shape \(shape) with \(samples.count) values and \(labels.count) labels")
        }
        let tensors = TensorDict([("samples", TensorView(floats: samples, shape: shape)),
                                  ("labels", TensorView(int64s: labels.map(Int64.init), shape: [labels.count]))])
        try SafetensorsWriter.write(tensors, metadata: [("format", "pt"), ("content", "ppsample latents [B, C, H, W] and class labels [B]")], to: path)
    }

    /// A grid image of 1- or 3-channel samples [B, C, H, W] with values in [-1, 1] mapped to 0...255 (clamped):
    /// one row per class (in ascending label order), that class's samples left to right in batch order,
    /// black where a row is shorter; every pixel repeated `upscale`×`upscale` times, `padding` black pixels
    /// (before upscaling) between cells. With `rowLabel`, a margin on the left names each row (white text).
    public static func gridPixels(samples: [Float], shape: [Int], labels: [Int32], upscale: Int = 1, padding: Int = 1,
                                  rowLabel: ((Int32) -> String)? = nil)
        throws -> (pixels: [UInt8], width: Int, height: Int, channels: Int) {
        guard shape.count == 4, shape.reduce(1, *) == samples.count, labels.count == shape[0] else {
            throw PPError(.usage, "samples shape \(shape) with \(samples.count) values and \(labels.count) labels")
        }
        let (batch, channels, height, width) = (shape[0], shape[1], shape[2], shape[3])
        guard channels == 1 || channels == 3 else {
            throw PPError(.usage, "a PNG grid needs 1- or 3-channel samples, these have \(channels) (decode latents first, or write safetensors)")
        }
        guard (1...64).contains(upscale), (0...64).contains(padding) else { throw PPError(.usage, "upscale must be 1...64 and padding 0...64") }
        let classes = Array(Set(labels)).sorted()
        let rows = classes.map { label in (0..<batch).filter { labels[$0] == label } }  // sample indices per grid row
        let columns = rows.map(\.count).max() ?? 0
        // Label text: as tall as a cell allows (at most 2 font pixels per sample pixel), at least 1.
        let texts = classes.map { rowLabel?($0) ?? "" }
        let textScale = max(1, min(2 * upscale, height * upscale / (RowLabels.glyphHeight + 1)))
        let margin = rowLabel == nil ? 0 : ((texts.map(RowLabels.width).max() ?? 0) + 1) * textScale  // output pixels
        let gridWidth = (columns * (width + padding) + padding) * upscale + margin
        let gridHeight = (rows.count * (height + padding) + padding) * upscale
        var pixels = [UInt8](repeating: 0, count: gridWidth * gridHeight * channels)  // [gridHeight, gridWidth, channels]
        for (row, text) in texts.enumerated() where !text.isEmpty {
            let top = (padding + row * (height + padding)) * upscale + (height * upscale - RowLabels.glyphHeight * textScale) / 2
            RowLabels.draw(text, into: &pixels, width: gridWidth, height: gridHeight, channels: channels,
                           left: textScale, top: top, scale: textScale)
        }
        let plane = height * width
        for (row, members) in rows.enumerated() {
            for (column, sample) in members.enumerated() {
                let top = (padding + row * (height + padding)) * upscale
                let left = margin + (padding + column * (width + padding)) * upscale
                for h in 0..<height { for w in 0..<width { for c in 0..<channels {
                    let value = samples[sample * channels * plane + c * plane + h * width + w]
                    let byte = toByte(value)
                    for dy in 0..<upscale { for dx in 0..<upscale {
                        pixels[((top + h * upscale + dy) * gridWidth + left + w * upscale + dx) * channels + c] = byte
                    } }
                } } }
            }
        }
        return (pixels, gridWidth, gridHeight, channels)
    }

    /// Writes the grid of `gridPixels` as a PNG file (libpng, compressed, deterministic bytes), atomically.
    public static func writePNGGrid(samples: [Float], shape: [Int], labels: [Int32], path: String, upscale: Int = 1, padding: Int = 1,
                                    rowLabel: ((Int32) -> String)? = nil) throws {
        do {
            let grid = try gridPixels(samples: samples, shape: shape, labels: labels, upscale: upscale, padding: padding, rowLabel: rowLabel)
            let png = try PNGFile.encode(pixels: grid.pixels, width: grid.width, height: grid.height, channels: grid.channels)
            try FileOutput.writeFile(path, bytes: png)
        } catch let error as PPError { throw error.inFile(path) }
    }

    /// One sample [C, H, W] (C 1 or 3) in [-1, 1] as 8-bit pixels [H, W, C], the way the official
    /// sample_ddp.py writes the PNGs it hands to the FID evaluator: clamp(127.5·x + 128, 0, 255)
    /// truncated to an integer (NaN -> 0).
    public static func evaluatorPixels(_ sample: ArraySlice<Float>, channels: Int, height: Int, width: Int) -> [UInt8] {
        let plane = height * width, base = sample.startIndex
        var out = [UInt8](repeating: 0, count: plane * channels)   // [H, W, C]
        for i in 0..<plane { for c in 0..<channels {
            let v = 127.5 * sample[base + c * plane + i] + 128
            out[i * channels + c] = v.isNaN ? 0 : UInt8(min(255, max(0, v)).rounded(.towardZero))
        } }
        return out
    }

    /// [-1, 1] -> 0...255, rounded to nearest, clamped; NaN -> 0.
    static func toByte(_ value: Float) -> UInt8 {
        guard value.isFinite else { return value > 0 ? 255 : 0 }
        let scaled = ((value + 1) * 0.5 * 255).rounded()
        return UInt8(min(255, max(0, scaled)))
    }
}
