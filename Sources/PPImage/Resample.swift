/// Pillow's `Image.resize` for 8-bit images (libImaging/Resample.c), rewritten from its algorithm so
/// results are equal to Pillow's byte for byte: a separable convolution, horizontal pass first (only
/// when the width changes), then vertical (only when the height changes), each rounded to 8 bits.
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

    /// `image.resize((width, height), filter)` as Pillow computes it for an RGB image.
    public static func resize(_ image: RGBImage, width: Int, height: Int, filter: Filter) -> RGBImage {
        precondition(width > 0 && height > 0 && image.width > 0 && image.height > 0, "resize to or from an empty image")
        if width == image.width && height == image.height { return image }
        let vertical = taps(inSize: image.height, outSize: height, filter: filter)
        var current = image.pixels          // [rows, currentWidth, 3]
        var currentWidth = image.width
        var firstRow = 0                    // source row of current's row 0
        if width != image.width {
            // Only the rows the vertical pass reads, as Pillow does (same values either way).
            let firstUsed = vertical.first!.first
            let lastUsed = vertical.last!.first + vertical.last!.weights.count
            let horizontal = taps(inSize: image.width, outSize: width, filter: filter)
            let rows = lastUsed - firstUsed
            var out = [UInt8](repeating: 0, count: rows * width * 3)   // [rows, width, 3]
            let half = 1 << (precisionBits - 1)
            image.pixels.withUnsafeBufferPointer { src in
                out.withUnsafeMutableBufferPointer { dst in
                    for row in 0..<rows {
                        let srcRow = (row + firstUsed) * image.width * 3
                        for xx in 0..<width {
                            let t = horizontal[xx]
                            var r = half, g = half, b = half
                            for (i, w) in t.weights.enumerated() {
                                let at = srcRow + (t.first + i) * 3
                                r += Int(src[at]) * Int(w); g += Int(src[at + 1]) * Int(w); b += Int(src[at + 2]) * Int(w)
                            }
                            let to = (row * width + xx) * 3
                            dst[to] = clip8(r); dst[to + 1] = clip8(g); dst[to + 2] = clip8(b)
                        }
                    }
                }
            }
            current = out
            currentWidth = width
            firstRow = firstUsed
        }
        if height != image.height {
            var out = [UInt8](repeating: 0, count: height * currentWidth * 3)   // [height, width, 3]
            let half = 1 << (precisionBits - 1)
            current.withUnsafeBufferPointer { src in
                out.withUnsafeMutableBufferPointer { dst in
                    for yy in 0..<height {
                        let t = vertical[yy]
                        for xx in 0..<currentWidth {
                            var r = half, g = half, b = half
                            for (i, w) in t.weights.enumerated() {
                                let at = ((t.first - firstRow + i) * currentWidth + xx) * 3
                                r += Int(src[at]) * Int(w); g += Int(src[at + 1]) * Int(w); b += Int(src[at + 2]) * Int(w)
                            }
                            let to = (yy * currentWidth + xx) * 3
                            dst[to] = clip8(r); dst[to + 1] = clip8(g); dst[to + 2] = clip8(b)
                        }
                    }
                }
            }
            current = out
        } else if firstRow != 0 || current.count != height * currentWidth * 3 {
            // Height unchanged: the horizontal pass covered exactly rows 0..<height already.
            current = Array(current[0..<(height * currentWidth * 3)])
        }
        return RGBImage(width: width, height: height, pixels: current)
    }
}
