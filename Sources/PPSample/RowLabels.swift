/// Row labels for sample grids: a 3x5 pixel font (digits, A-Z, a few signs) drawn into a margin left of
/// each row. Hand-written because a few dozen glyphs for class numbers are less than a font library's
/// setup; lowercase letters draw as capitals, anything else as a blank.
public enum RowLabels {
    static let glyphWidth = 3, glyphHeight = 5

    /// Rows of 3 bits, most significant bit on the left, top row first.
    static let glyphs: [Character: [UInt8]] = [
        "0": [7, 5, 5, 5, 7], "1": [2, 6, 2, 2, 7], "2": [7, 1, 7, 4, 7], "3": [7, 1, 7, 1, 7], "4": [5, 5, 7, 1, 1],
        "5": [7, 4, 7, 1, 7], "6": [7, 4, 7, 5, 7], "7": [7, 1, 2, 2, 2], "8": [7, 5, 7, 5, 7], "9": [7, 5, 7, 1, 7],
        "A": [2, 5, 7, 5, 5], "B": [6, 5, 6, 5, 6], "C": [3, 4, 4, 4, 3], "D": [6, 5, 5, 5, 6], "E": [7, 4, 6, 4, 7],
        "F": [7, 4, 6, 4, 4], "G": [3, 4, 5, 5, 3], "H": [5, 5, 7, 5, 5], "I": [7, 2, 2, 2, 7], "J": [1, 1, 1, 5, 2],
        "K": [5, 5, 6, 5, 5], "L": [4, 4, 4, 4, 7], "M": [5, 7, 7, 5, 5], "N": [6, 5, 5, 5, 5], "O": [2, 5, 5, 5, 2],
        "P": [6, 5, 6, 4, 4], "Q": [2, 5, 5, 6, 3], "R": [6, 5, 6, 5, 5], "S": [3, 4, 2, 1, 6], "T": [7, 2, 2, 2, 2],
        "U": [5, 5, 5, 5, 7], "V": [5, 5, 5, 5, 2], "W": [5, 5, 7, 7, 5], "X": [5, 5, 2, 5, 5], "Y": [5, 5, 2, 2, 2],
        "Z": [7, 1, 2, 4, 7], "-": [0, 0, 7, 0, 0], ".": [0, 0, 0, 0, 2], ",": [0, 0, 0, 2, 4], " ": [0, 0, 0, 0, 0],
    ]

    /// True for the characters the font draws (lowercase letters draw as capitals).
    public static func drawable(_ character: Character) -> Bool {
        let upper = String(character).uppercased()   // may be longer ("ß" -> "SS"): then not drawable
        return upper.count == 1 && glyphs[Character(upper)] != nil
    }

    /// Width in font pixels of `text` (a 1-pixel gap after each glyph).
    static func width(_ text: String) -> Int { text.count * (glyphWidth + 1) }

    /// Draws `text` in white into `pixels` [height, width, channels] with its top-left corner at (left, top),
    /// each font pixel a `scale` x `scale` square; pixels outside the image are skipped.
    static func draw(_ text: String, into pixels: inout [UInt8], width: Int, height: Int, channels: Int,
                     left: Int, top: Int, scale: Int) {
        for (index, character) in text.uppercased().enumerated() {
            guard let rows = glyphs[character] else { continue }
            let x0 = left + index * (glyphWidth + 1) * scale
            for (r, bits) in rows.enumerated() {
                for c in 0..<glyphWidth where bits & (1 << (glyphWidth - 1 - c)) != 0 {
                    for dy in 0..<scale { for dx in 0..<scale {
                        let y = top + r * scale + dy, x = x0 + c * scale + dx
                        guard y >= 0, y < height, x >= 0, x < width else { continue }
                        for k in 0..<channels { pixels[(y * width + x) * channels + k] = 255 }
                    } }
                }
            }
        }
    }
}
