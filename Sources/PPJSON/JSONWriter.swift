extension JSON {
    /// Deterministic JSON text: the same value always gives the same bytes.
    ///
    /// - `pretty`: 2-space indentation, `": "` after keys, empty containers as `[]` / `{}`, no trailing
    ///   newline (serde_json's pretty printer). Otherwise compact, with no spaces at all.
    /// - `sortKeys`: object keys in UTF-8 byte order at every depth; otherwise in stored order.
    /// - Strings escape only what RFC 8259 requires (`"`, `\`, control characters; `\b \f \n \r \t`
    ///   short forms, `\u00xx` lower-case otherwise); everything else, non-ASCII included, is kept.
    /// - Doubles use the shortest text that reads back to the same value, always with a `.` or an
    ///   exponent so they stay doubles (`1.0`, `1e-05`); infinities and NaN, which JSON cannot hold,
    ///   are written as `null`.
    public static func serialize(_ value: JSONValue, pretty: Bool = true, sortKeys: Bool = false) -> String {
        var out: [UInt8] = []
        write(value, into: &out, pretty: pretty, sortKeys: sortKeys, indent: 0)
        return String(decoding: out, as: UTF8.self)
    }

    /// `serialize` as UTF-8 bytes.
    public static func serializedBytes(_ value: JSONValue, pretty: Bool = true, sortKeys: Bool = false) -> [UInt8] {
        var out: [UInt8] = []
        write(value, into: &out, pretty: pretty, sortKeys: sortKeys, indent: 0)
        return out
    }

    /// `s` as a JSON string literal, quotes included.
    public static func quoted(_ s: String) -> String {
        var out: [UInt8] = []
        writeString(s, into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    private static func newline(_ out: inout [UInt8], indent: Int) {
        out.append(0x0A)
        out.append(contentsOf: repeatElement(0x20, count: indent * 2))
    }

    private static func write(_ value: JSONValue, into out: inout [UInt8], pretty: Bool, sortKeys: Bool, indent: Int) {
        switch value {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .int(let i): out.append(contentsOf: String(i).utf8)
        case .double(let d): out.append(contentsOf: doubleText(d).utf8)
        case .string(let s): writeString(s, into: &out)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            if !items.isEmpty {
                for (n, item) in items.enumerated() {
                    if n > 0 { out.append(UInt8(ascii: ",")) }
                    if pretty { newline(&out, indent: indent + 1) }
                    write(item, into: &out, pretty: pretty, sortKeys: sortKeys, indent: indent + 1)
                }
                if pretty { newline(&out, indent: indent) }
            }
            out.append(UInt8(ascii: "]"))
        case .object(let object):
            out.append(UInt8(ascii: "{"))
            var pairs = object.pairs
            if sortKeys {
                pairs.sort { Array($0.key.utf8).lexicographicallyPrecedes(Array($1.key.utf8)) }
            }
            if !pairs.isEmpty {
                for (n, pair) in pairs.enumerated() {
                    if n > 0 { out.append(UInt8(ascii: ",")) }
                    if pretty { newline(&out, indent: indent + 1) }
                    writeString(pair.key, into: &out)
                    out.append(UInt8(ascii: ":"))
                    if pretty { out.append(0x20) }
                    write(pair.value, into: &out, pretty: pretty, sortKeys: sortKeys, indent: indent + 1)
                }
                if pretty { newline(&out, indent: indent) }
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    static func doubleText(_ d: Double) -> String {
        guard d.isFinite else { return "null" }
        let text = d.description
        if text.utf8.contains(where: { $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "e") || $0 == UInt8(ascii: "E") }) {
            return text
        }
        return text + ".0"
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    private static func writeString(_ s: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for c in s.utf8 {
            switch c {
            case UInt8(ascii: "\""): out.append(contentsOf: [0x5C, 0x22])
            case UInt8(ascii: "\\"): out.append(contentsOf: [0x5C, 0x5C])
            case 0x08: out.append(contentsOf: [0x5C, UInt8(ascii: "b")])
            case 0x0C: out.append(contentsOf: [0x5C, UInt8(ascii: "f")])
            case 0x0A: out.append(contentsOf: [0x5C, UInt8(ascii: "n")])
            case 0x0D: out.append(contentsOf: [0x5C, UInt8(ascii: "r")])
            case 0x09: out.append(contentsOf: [0x5C, UInt8(ascii: "t")])
            case 0x00..<0x20:
                out.append(contentsOf: Array("\\u00".utf8))
                out.append(hexDigits[Int(c >> 4)])
                out.append(hexDigits[Int(c & 0xF)])
            default: out.append(c)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
