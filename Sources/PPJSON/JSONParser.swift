import CJSONC
import PPFileIO

/// Strict JSON reading and deterministic JSON writing.
public enum JSON {
    /// Deepest nesting of arrays and objects that `parse` accepts.
    public static let maxDepth = 64

    /// Parses `text` as one RFC 8259 JSON value.
    public static func parse(_ text: String, origin: String) throws -> JSONValue {
        var copy = text
        return try copy.withUTF8 { try parse(UnsafeRawBufferPointer($0), origin: origin) }
    }

    /// Reads and parses the JSON file at `path`.
    public static func parse(file path: String) throws -> JSONValue {
        let storage = try ByteStorage(mappingFile: path)
        return try storage.withBytes { try parse($0, origin: path) }
    }

    /// Parses `bytes` as one RFC 8259 JSON value (surrounding whitespace allowed).
    ///
    /// json-c's tokener parses: strict mode, trailing text refused, depth limit. json-c 0.16's strict
    /// mode still accepts, and `TokenScan` refuses, numbers RFC 8259 does not allow (`00`, `1.`, `-.5`,
    /// `NaN`, `Infinity`), single-quoted keys, raw control characters and unpaired surrogate escapes in
    /// strings (json-c stores U+FFFD for those), and keys holding U+0000 (json-c cuts them short). json-c
    /// keeps the last of two equal keys (`TreeWalk` finds repeats by counting keys), clamps integers beyond
    /// 64 bits and reads 1e400 as infinity (so numbers are read from their own text). UTF-8 is checked
    /// here first: json-c's check lets overlong forms and encoded surrogates through.
    public static func parse(_ bytes: UnsafeRawBufferPointer, origin: String) throws -> JSONValue {
        if let bad = UTF8Check.firstInvalidOffset(bytes) {
            throw PPError.badInput(origin, "not valid JSON: invalid UTF-8 at byte \(bad)")
        }
        guard bytes.count < Int(Int32.max) else {
            throw PPError.badInput(origin, "JSON text of \(bytes.count) bytes is too large to parse")
        }

        // json-c needs a terminator to finish a number at the very end, so hand it a NUL-terminated copy.
        let terminated = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count + 1, alignment: 1)
        defer { terminated.deallocate() }
        if bytes.count > 0 { terminated.copyMemory(from: bytes) }
        terminated[bytes.count] = 0

        guard let tok = json_tokener_new_ex(Int32(maxDepth)) else {
            throw PPError(.io, file: origin, "cannot allocate a JSON tokener")
        }
        defer { json_tokener_free(tok) }
        json_tokener_set_flags(tok, Int32(JSON_TOKENER_STRICT))
        let root = json_tokener_parse_ex(
            tok, terminated.baseAddress!.assumingMemoryBound(to: CChar.self), Int32(bytes.count + 1))
        defer { if root != nil { json_object_put(root) } }
        let err = json_tokener_get_error(tok)
        let end = json_tokener_get_parse_end(tok)

        if err != json_tokener_success {
            let reason: String
            if err == json_tokener_error_depth {
                reason = "nesting deeper than \(maxDepth) levels"
            } else if err == json_tokener_continue || end >= bytes.count {
                reason = bytes.allSatisfy(TokenScan.isWhitespace)
                    ? "the text ends where a value was expected" : "the text ends before the value is complete"
            } else {
                reason = String(cString: json_tokener_error_desc(err))
            }
            throw PPError.badInput(origin, "not valid JSON: \(reason) at byte \(min(end, bytes.count))")
        }
        // json-c calls the value complete at a NUL byte and ignores the rest.
        guard end == bytes.count else {
            throw PPError.badInput(origin, "not valid JSON: unexpected text after the JSON value at byte \(end)")
        }

        let scan: TokenScan
        do {
            scan = try TokenScan(bytes)
        } catch let e as TokenScan.Failure {
            throw PPError.badInput(origin, "not valid JSON: \(e.message) at byte \(e.offset)")
        }
        var walk = TreeWalk(bytes: bytes, scan: scan, origin: origin)
        let value = try walk.build(root)
        guard walk.numbers == scan.numbers.count, walk.objects == scan.keyCounts.count else {
            throw walk.disagreement("the count of numbers or objects")
        }
        return value
    }
}

/// The token-level checks json-c's strict mode lacks, over text json-c has accepted.
///
/// This is not a second grammar: it never decides what may follow what, because json-c has already
/// refused anything out of place. It only cuts the accepted text into tokens (strings, bare words and
/// the structural bytes) and looks inside each: a number's spelling, a string's raw control bytes and
/// surrogate escapes, a single quote json-c took for a string quote. What it needs of the structure it
/// takes from json-c having accepted it: a string followed by ':' is a key of the innermost open object.
/// Keys are only counted here; the tree walk compares each count with json-c's and decodes keys (by
/// json-c) only when they differ.
struct TokenScan {
    struct Failure: Error {
        let message: String
        let offset: Int
    }

    /// Every number token in document order.
    private(set) var numbers: [Range<Int>] = []
    /// The key count of every object, in the order of their '{'.
    private(set) var keyCounts: [Int] = []
    /// Every key token (quotes included) with the index of its object.
    private(set) var keys: [(object: Int, token: Range<Int>)] = []

    static func isWhitespace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D }

    private static func endsWord(_ c: UInt8) -> Bool {
        switch c {
        case 0x20, 0x09, 0x0A, 0x0D, UInt8(ascii: "{"), UInt8(ascii: "}"), UInt8(ascii: "["), UInt8(ascii: "]"),
             UInt8(ascii: ","), UInt8(ascii: ":"), UInt8(ascii: "\""), UInt8(ascii: "'"): return true
        default: return false
        }
    }

    init(_ b: UnsafeRawBufferPointer) throws {
        var open: [Int] = []  // the innermost containers: an object's index, -1 for an array
        var lastString = 0..<0
        var lastStringHasNUL = false
        var i = 0
        while i < b.count {
            let c = b[i]
            switch c {
            case 0x20, 0x09, 0x0A, 0x0D, UInt8(ascii: ","):
                i += 1
            case UInt8(ascii: "{"):
                open.append(keyCounts.count)
                keyCounts.append(0)
                i += 1
            case UInt8(ascii: "["):
                open.append(-1)
                i += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                guard open.popLast() != nil else { throw Failure(message: "json-c accepted an unmatched bracket", offset: i) }
                i += 1
            case UInt8(ascii: ":"):
                guard let object = open.last, object >= 0, lastString.upperBound > 0 else {
                    throw Failure(message: "json-c accepted a ':' outside an object", offset: i)
                }
                // json-c keeps keys as C strings, so it would cut this one short.
                if lastStringHasNUL { throw Failure(message: "a key containing U+0000 is not supported", offset: lastString.lowerBound) }
                keyCounts[object] += 1
                keys.append((object, lastString))
                i += 1
            case UInt8(ascii: "\""):
                let start = i
                (i, lastStringHasNUL) = try TokenScan.stepOverString(b, from: i)
                lastString = start..<i
            case UInt8(ascii: "'"):
                throw Failure(message: "single-quoted strings are not JSON", offset: i)
            default:
                // A bare word: a number or a literal, up to the next structural byte or whitespace.
                let start = i
                while i < b.count, !TokenScan.endsWord(b[i]) { i += 1 }
                let word = UnsafeRawBufferPointer(rebasing: b[start..<i])
                if word.elementsEqual("true".utf8) || word.elementsEqual("false".utf8) || word.elementsEqual("null".utf8) { continue }
                if let problem = TokenScan.numberProblem(word) {
                    let text = String(decoding: word, as: UTF8.self)
                    throw Failure(message: problem.isEmpty ? "\(text) is not a JSON value" : problem, offset: start)
                }
                numbers.append(start..<i)
            }
        }
    }

    /// Steps over the string whose opening quote is at `open` (json-c has checked its escapes) and
    /// returns the offset after its closing quote and whether it holds an escaped U+0000.
    private static func stepOverString(_ b: UnsafeRawBufferPointer, from open: Int) throws -> (Int, Bool) {
        var i = open + 1
        var hasNUL = false
        var highSurrogateAt: Int? = nil  // an escaped high surrogate, which a low one must follow at once
        while i < b.count {
            let c = b[i]
            if c == UInt8(ascii: "\\"), i + 1 < b.count, b[i + 1] == UInt8(ascii: "u") {
                let hex = String(decoding: UnsafeRawBufferPointer(rebasing: b[i + 2 ..< min(i + 6, b.count)]), as: UTF8.self)
                guard hex.utf8.count == 4, let unit = UInt16(hex, radix: 16) else {
                    throw Failure(message: "json-c accepted a malformed \\u escape", offset: i)
                }
                let isLow = (0xDC00..<0xE000).contains(unit)
                if isLow != (highSurrogateAt != nil) {
                    throw Failure(message: "unpaired surrogate escape", offset: highSurrogateAt ?? i)
                }
                highSurrogateAt = (0xD800..<0xDC00).contains(unit) ? i : nil
                hasNUL = hasNUL || unit == 0
                i += 6
                continue
            }
            if let at = highSurrogateAt { throw Failure(message: "unpaired surrogate escape", offset: at) }
            if c == UInt8(ascii: "\"") { return (i + 1, hasNUL) }
            if c < 0x20 {
                throw Failure(message: "raw control character 0x\(String(c, radix: 16, uppercase: true)) inside a string", offset: i)
            }
            i += c == UInt8(ascii: "\\") ? 2 : 1  // an escape's second byte may be a quote
        }
        throw Failure(message: "json-c accepted an unterminated string", offset: open)
    }

    /// nil for an RFC 8259 number, -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?; otherwise what
    /// is wrong, empty when the word is not a number at all.
    private static func numberProblem(_ t: UnsafeRawBufferPointer) -> String? {
        var i = 0
        func digits() -> Int {
            let start = i
            while i < t.count, t[i] &- UInt8(ascii: "0") < 10 { i += 1 }
            return i - start
        }
        if i < t.count, t[i] == UInt8(ascii: "-") { i += 1 }
        let integer = i
        let n = digits()
        guard n > 0 else { return "" }
        if n > 1, t[integer] == UInt8(ascii: "0") { return "number with a leading zero" }
        if i < t.count, t[i] == UInt8(ascii: ".") {
            i += 1
            guard digits() > 0 else { return "a decimal point must be followed by digits" }
        }
        if i < t.count, t[i] | 0x20 == UInt8(ascii: "e") {
            i += 1
            if i < t.count, t[i] == UInt8(ascii: "+") || t[i] == UInt8(ascii: "-") { i += 1 }
            guard digits() > 0 else { return "an exponent must have digits" }
        }
        return i == t.count ? nil : ""
    }
}

/// Converts json-c's tree. It comes out in document order (json-c keeps objects in insertion order),
/// which is the scan's order as long as no key repeated: the n-th number and the n-th object met here
/// are the n-th the scan found. The first object whose key count differs from the scan's is the first
/// (in the order of '{') with a repeated key, because every object before it came through whole.
struct TreeWalk {
    let bytes: UnsafeRawBufferPointer
    let scan: TokenScan
    let origin: String
    private(set) var numbers = 0
    private(set) var objects = 0
    private var path: [PathItem] = []

    private enum PathItem {
        case key(String)
        case index(Int)
    }

    init(bytes: UnsafeRawBufferPointer, scan: TokenScan, origin: String) {
        self.bytes = bytes
        self.scan = scan
        self.origin = origin
    }

    func disagreement(_ what: String) -> PPError {
        PPError.badInput(origin, "not valid JSON: json-c and the token scan disagree on \(what) at \(renderedPath)")
    }

    mutating func build(_ obj: OpaquePointer?) throws -> JSONValue {
        let type = json_object_get_type(obj)
        switch type {
        case json_type_null:
            return .null
        case json_type_boolean:
            return .bool(json_object_get_boolean(obj) != 0)
        case json_type_int, json_type_double:
            guard numbers < scan.numbers.count else { throw disagreement("the count of numbers") }
            let token = scan.numbers[numbers]
            numbers += 1
            return try number(UnsafeRawBufferPointer(rebasing: bytes[token]), at: token.lowerBound, jsonCDouble: type == json_type_double)
        case json_type_string:
            let count = Int(json_object_get_string_len(obj))
            guard count > 0, let p = json_object_get_string(obj) else { return .string("") }
            return .string(String(decoding: UnsafeRawBufferPointer(start: p, count: count), as: UTF8.self))
        case json_type_array:
            let n = json_object_array_length(obj)
            var items: [JSONValue] = []
            items.reserveCapacity(n)
            for i in 0..<n {
                path.append(.index(i))
                items.append(try build(json_object_array_get_idx(obj, i)))
                path.removeLast()
            }
            return .array(items)
        case json_type_object:
            guard objects < scan.keyCounts.count else { throw disagreement("the count of objects") }
            let object = objects
            objects += 1
            if Int(json_object_object_length(obj)) != scan.keyCounts[object] { throw try repeatedKey(in: object) }
            var result = JSONObject()
            var it = json_object_iter_begin(obj)
            var end = json_object_iter_end(obj)
            while json_object_iter_equal(&it, &end) == 0 {
                let key = String(cString: json_object_iter_peek_name(&it))
                path.append(.key(key))
                result.appendUnchecked(key, try build(json_object_iter_peek_value(&it)))
                path.removeLast()
                json_object_iter_next(&it)
            }
            return .object(result)
        default:
            throw PPError.badInput(origin, "not valid JSON: json-c returned a value of unknown type \(type.rawValue) at \(renderedPath)")
        }
    }

    /// Integers that fit Int64 stay exact, every other number becomes the nearest double (the
    /// standard library's parsers, correctly rounded as json-c's strtod is).
    private func number(_ token: UnsafeRawBufferPointer, at offset: Int, jsonCDouble: Bool) throws -> JSONValue {
        let text = String(decoding: token, as: UTF8.self)
        let integral = !token.contains { $0 == UInt8(ascii: ".") || $0 | 0x20 == UInt8(ascii: "e") }
        guard integral != jsonCDouble else { throw disagreement("the kind of number \(text)") }
        if integral, let v = Int64(text) { return .int(v) }
        guard let d = Double(text), d.isFinite else {
            throw PPError.badInput(origin, "not valid JSON: number \(text) is out of range at byte \(offset)")
        }
        return .double(d)
    }

    /// The error for object number `object`, which has fewer keys in json-c's tree than in the text:
    /// names the first key that repeats (keys decoded by json-c).
    private func repeatedKey(in object: Int) throws -> PPError {
        var seen = Set<[UInt8]>()
        for (owner, token) in scan.keys where owner == object {
            let key = try decodedKey(UnsafeRawBufferPointer(rebasing: bytes[token]))
            if !seen.insert(key).inserted {
                let name = String(decoding: key, as: UTF8.self)
                return PPError.badInput(origin, entry: name, "duplicate key \(JSON.quoted(name)) in the object at \(renderedPath)")
            }
        }
        return disagreement("the keys of an object")
    }

    /// A key token's bytes: as written without escapes, otherwise decoded by json-c.
    private func decodedKey(_ token: UnsafeRawBufferPointer) throws -> [UInt8] {
        let inner = UnsafeRawBufferPointer(rebasing: token.dropFirst().dropLast())
        guard inner.contains(UInt8(ascii: "\\")) else { return Array(inner) }
        let string = json_tokener_parse(String(decoding: token, as: UTF8.self))
        defer { if string != nil { json_object_put(string) } }
        guard json_object_get_type(string) == json_type_string, let p = json_object_get_string(string) else {
            throw disagreement("the key \(String(decoding: token, as: UTF8.self))")
        }
        return Array(UnsafeRawBufferPointer(start: p, count: Int(json_object_get_string_len(string))))
    }

    private var renderedPath: String {
        var s = "$"
        for item in path {
            switch item {
            case .index(let n): s += "[\(n)]"
            case .key(let key):
                let plain = !key.isEmpty && key.utf8.allSatisfy {
                    ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7a) || $0 == 0x5f
                }
                s += plain ? ".\(key)" : "[\(JSON.quoted(key))]"
            }
        }
        return s
    }
}
