/// Pillow's `Image.resize` for 8-bit images (libImaging/Resample.c), rewritten from its algorithm so
/// results are equal to Pillow's (13.0) byte for byte: a separable convolution, one pass per axis whose
/// size changes, each rounded to 8 bits; horizontal first unless the height shrinks by more than twice
/// as many pixels as the width (then vertical first, as Pillow 13 does).
/// Filter weights are computed in Double with the support stretched by the scale when shrinking,
/// normalized to sum 1, then turned into fixed point with 22 fractional bits; sums start at half a
/// unit and are clipped to 0...255.
public enum Resample {
    public enum Filter: Sendable {
        /// Pillow's Image.BOX: support 0.5, weight 1 on (-0.5, 0.5].
        case box
        /// Pillow's Image.BICUBIC: Keys' cubic with a = -0.5, support 2.
        case bicubic

        var support: Double {
            switch self {
            case .box: return 0.5
            case .bicubic: return 2.0
            }
        }

        func weight(_ x: Double) -> Double {
            switch self {
            case .box:
                return x > -0.5 && x <= 0.5 ? 1.0 : 0.0
            case .bicubic:
                let a = -0.5
                let t = x < 0.0 ? -x : x
                if t < 1.0 { return ((a + 2.0) * t - (a + 3.0)) * t * t + 1 }
                if t < 2.0 { return (((t - 5) * t + 8) * t - 4) * a }
                return 0.0
            }
        }
    }

    /// Fixed-point bits of the weights: 32 bits minus 8 for the value and 2 for overshoot (Pillow's).
    static let precisionBits = 22

    /// Weights of one output position: input index `first`, `weights.count` taps.
    struct Taps {
        var first: Int
        var weights: [Int32]
    }

    /// Pillow's precompute_coeffs + normalize_coeffs_8bpc for the whole input range [0, inSize).
    static func taps(inSize: Int, outSize: Int, filter: Filter) -> [Taps] {
        let scale = Double(inSize) / Double(outSize)
        let filterScale = max(scale, 1.0)
        let support = filter.support * filterScale
        let unit = Double(1 << precisionBits)
        var result: [Taps] = []
        result.reserveCapacity(outSize)
        for xx in 0..<outSize {
            let center = (Double(xx) + 0.5) * scale
            let inverse = 1.0 / filterScale
            // C's (int) cast truncates toward zero; these are rounded by the + 0.5 first.
            let xmin = max(0, Int((center - support + 0.5).rounded(.towardZero)))
            let xmax = min(inSize, Int((center + support + 0.5).rounded(.towardZero))) - xmin
            var weights = [Double](repeating: 0, count: max(0, xmax))
            var total = 0.0
            for x in 0..<max(0, xmax) {
                let w = filter.weight((Double(x + xmin) - center + 0.5) * inverse)
                weights[x] = w
                total += w
            }
            let fixed: [Int32] = weights.map { w in
                let normalized = total != 0.0 ? w / total : w
                return normalized < 0 ? Int32((-0.5 + normalized * unit).rounded(.towardZero))
                                      : Int32((0.5 + normalized * unit).rounded(.towardZero))
            }
            result.append(Taps(first: xmin, weights: fixed))
        }
        return result
    }

    /// Pillow's clip8: the sum's integer part, clipped to 0...255.
    @inline(__always) static func clip8(_ sum: Int) -> UInt8 {
        UInt8(truncatingIfNeeded: min(255, max(0, sum >> precisionBits)))
    }

    /// Which pass goes first when both axes change (the 8-bit rounding between passes makes it visible).
    public enum PassOrder: Sendable {
        /// Pillow 13 and later: vertical first when the height loses more than twice as many pixels as
        /// the width (python-pillow/Pillow#9549), otherwise horizontal first.
        case pillow13
        /// Pillow 3.3 to 12: always horizontal first.
        case horizontalFirst
    }

    /// `image.resize((width, height), filter)` as Pillow computes it for an RGB image.
    public static func resize(_ image: RGBImage, width: Int, height: Int, filter: Filter,
                              order: PassOrder = .pillow13) -> RGBImage {
        precondition(width > 0 && height > 0 && image.width > 0 && image.height > 0, "resize to or from an empty image")
        if width == image.width && height == image.height { return image }
        let needHorizontal = width != image.width, needVertical = height != image.height
        // Pillow 13 (python-pillow/Pillow#9549) runs the vertical pass first when the height loses more
        // than twice as many pixels as the width; the order changes the 8-bit rounding in between.
        let heightLoss = image.height - height, widthLoss = image.width - width
        let horizontalFirst = order == .horizontalFirst || !(heightLoss > 0 && heightLoss > widthLoss * 2)
        let vertical = taps(inSize: image.height, outSize: height, filter: filter)
        let horizontal = taps(inSize: image.width, outSize: width, filter: filter)
        var pixels = image.pixels
        if horizontalFirst {
            // Only the rows the vertical pass reads, as Pillow does (same values either way).
            let firstRow = needVertical ? vertical.first!.first : 0
            let lastRow = needVertical ? vertical.last!.first + vertical.last!.weights.count : image.height
            if needHorizontal {
                pixels = horizontalPass(pixels, width: image.width, firstRow: firstRow, rows: lastRow - firstRow, taps: horizontal)
            }
            if needVertical {
                pixels = verticalPass(pixels, width: width, firstRow: needHorizontal ? firstRow : 0, taps: vertical)
            }
        } else {
            if needVertical { pixels = verticalPass(pixels, width: image.width, firstRow: 0, taps: vertical) }
            if needHorizontal { pixels = horizontalPass(pixels, width: image.width, firstRow: 0, rows: height, taps: horizontal) }
        }
        return RGBImage(width: width, height: height, pixels: pixels)
    }

    /// Pillow's ImagingResampleHorizontal_8bpc: rows [firstRow, firstRow + rows) of `source`
    /// [_, width, 3] resampled to [rows, taps.count, 3].
    static func horizontalPass(_ source: [UInt8], width: Int, firstRow: Int, rows: Int, taps: [Taps]) -> [UInt8] {
        convolve(source, outRows: rows, outColumns: taps.count, taps: taps, tapsAlongColumns: true,
                 rowStride: width, columnStride: 0, offset: firstRow * width, tapStride: 1)
    }

    /// Pillow's ImagingResampleVertical_8bpc: `source` [_, width, 3], whose row 0 is source row
    /// `firstRow` of the taps, resampled to [taps.count, width, 3].
    static func verticalPass(_ source: [UInt8], width: Int, firstRow: Int, taps: [Taps]) -> [UInt8] {
        convolve(source, outRows: taps.count, outColumns: width, taps: taps, tapsAlongColumns: false,
                 rowStride: 0, columnStride: 1, offset: -firstRow * width, tapStride: width)
    }

    /// One pass: out[r, c] = clip8(2^21 + sum_i w_i * source[pixel(r, c) + (first + i) * tapStride]),
    /// with pixel(r, c) = r * rowStride + c * columnStride + offset (in pixels of 3 bytes) and the taps of
    /// column c (horizontal pass) or row r (vertical pass).
    private static func convolve(_ source: [UInt8], outRows: Int, outColumns: Int, taps: [Taps], tapsAlongColumns: Bool,
                                 rowStride: Int, columnStride: Int, offset: Int, tapStride: Int) -> [UInt8] {
        // The taps flattened for the inner loop: weights of tap set k at [starts[k], starts[k + 1]).
        var starts = [0], weights: [Int32] = []
        for t in taps { weights += t.weights; starts.append(weights.count) }
        let firsts = taps.map(\.first)
        var out = [UInt8](repeating: 0, count: outRows * outColumns * 3)   // [outRows, outColumns, 3]
        let half = 1 << (precisionBits - 1)
        source.withUnsafeBufferPointer { src in
        weights.withUnsafeBufferPointer { w in
        out.withUnsafeMutableBufferPointer { dst in
            for r in 0..<outRows {
                for c in 0..<outColumns {
                    let k = tapsAlongColumns ? c : r
                    var at = (r * rowStride + c * columnStride + offset + firsts[k] * tapStride) * 3
                    var red = half, green = half, blue = half
                    for i in starts[k]..<starts[k + 1] {
                        let weight = Int(w[i])
                        red += Int(src[at]) * weight; green += Int(src[at + 1]) * weight; blue += Int(src[at + 2]) * weight
                        at += tapStride * 3
                    }
                    let to = (r * outColumns + c) * 3
                    dst[to] = clip8(red); dst[to + 1] = clip8(green); dst[to + 2] = clip8(blue)
                }
            }
        }
        }
        }
        return out
    }
}
