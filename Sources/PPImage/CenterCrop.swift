import PPFileIO
import PPTensor

/// The official training code's image preparation (ADM's `center_crop_arr`, used by DiT, SiT and
/// PPFlow's train.py), on Pillow's resampling:
///
///     while min(w, h) >= 2 * S:  image = image.resize((w // 2, h // 2), Image.BOX)
///     scale = S / min(w, h)
///     image = image.resize((round(w * scale), round(h * scale)), Image.BICUBIC)
///     crop the S x S centre at ((h - S) // 2, (w - S) // 2)
///
/// then optionally `RandomHorizontalFlip` (the caller draws the coin) and `toFloatCHW()`.
public enum CenterCrop {
    /// The S x S crop of `image`; `flip` mirrors it left to right afterwards. `order` picks the Pillow
    /// generation to match: the default is Pillow 13's; `.horizontalFirst` gives Pillow 12 and older
    /// (they differ by a few levels on images much taller than wide).
    public static func apply(_ image: RGBImage, size: Int, flip: Bool = false,
                             order: Resample.PassOrder = .pillow13) throws -> RGBImage {
        guard size > 0 else { throw PPError(.usage, "center crop: the size must be positive, got \(size)") }
        guard image.width > 0 && image.height > 0 else { throw PPError.badInput(nil, "center crop of an empty image") }
        var current = image
        while min(current.width, current.height) >= 2 * size {
            current = Resample.resize(current, width: current.width / 2, height: current.height / 2, filter: .box, order: order)
        }
        let scale = Double(size) / Double(min(current.width, current.height))
        // Python's round(): to nearest, ties to even.
        let width = Int((Double(current.width) * scale).rounded(.toNearestOrEven))
        let height = Int((Double(current.height) * scale).rounded(.toNearestOrEven))
        current = Resample.resize(current, width: width, height: height, filter: .bicubic, order: order)
        let top = (current.height - size) / 2, left = (current.width - size) / 2
        var out = [UInt8](repeating: 0, count: size * size * 3)   // [size, size, 3]
        for y in 0..<size {
            let from = ((top + y) * current.width + left) * 3
            out.replaceSubrange((y * size * 3)..<((y + 1) * size * 3), with: current.pixels[from..<(from + size * 3)])
        }
        let cropped = RGBImage(width: size, height: size, pixels: out)
        return flip ? cropped.flippedHorizontally() : cropped
    }
}
