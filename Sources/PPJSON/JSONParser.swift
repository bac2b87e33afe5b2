import CJSONC
import PPTensor

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

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
        return try withExtendedLifetime(storage) { try parse(storage.bytes, origin: path) }
    }

    /// Parses `bytes` as one RFC 8259 JSON value (surrounding whitespace allowed).
    ///
    /// json-c's tokener (strict mode, UTF-8 validation, depth limit) builds the tree. Its strict mode
    /// still lets through single-quoted strings, `NaN`/`Infinity`, raw control characters, lone
    /// surrogate escapes and text after a NUL byte, clamps integers beyond 64 bits to the nearest
    /// bound, and silently keeps the last of two equal keys. A second pass over the same bytes
    /// (`StrictScanner`) therefore checks the RFC grammar, refuses duplicate keys (naming the key in
    /// `PPError.entry`) and reads every number from its own text, so integers that fit Int64 stay
    /// exact and all others become doubles.
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
        json_tokener_set_flags(tok, Int32(JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8))
        let root = json_tokener_parse_ex(
            tok, terminated.baseAddress!.assumingMemoryBound(to: CChar.self), Int32(bytes.count + 1))
        defer { if root != nil { json_object_put(root) } }
        let err = json_tokener_get_error(tok)

        // The strict pass also words the errors: it says what is wrong where json-c only says where.
        let scanner = StrictScanner(bytes: bytes)
        do {
            try scanner.scanDocument()
        } catch let e as StrictScanner.Failure {
            throw PPError.badInput(origin, entry: e.duplicateKey, e.message)
        }
        if err != json_tokener_success {
            let at = json_tokener_get_parse_end(tok)
            let reason = err == json_tokener_continue || at >= bytes.count
                ? "the text ends before the value is complete"
                : String(cString: json_tokener_error_desc(err))
            throw PPError.badInput(origin, "not valid JSON: \(reason) at byte \(min(at, bytes.count))")
        }

        var numberIndex = 0
        let value = build(root, numbers: scanner.numbers, next: &numberIndex)
        precondition(numberIndex == scanner.numbers.count, "json-c and the strict scan disagree on numbers")
        return value
    }

    /// Converts json-c's tree. Objects and arrays come out in document order (duplicates were refused),
    /// so the n-th number met here is the n-th number the scanner read.
    private static func build(_ obj: OpaquePointer?, numbers: [JSONValue], next: inout Int) -> JSONValue {
        let type = json_object_get_type(obj)
        switch type {
        case json_type_null:
            return .null
        case json_type_boolean:
            return .bool(json_object_get_boolean(obj) != 0)
        case json_type_int, json_type_double:
            defer { next += 1 }
            return numbers[next]
        case json_type_string:
            let count = Int(json_object_get_string_len(obj))
            guard count > 0, let p = json_object_get_string(obj) else { return .string("") }
            return .string(String(decoding: UnsafeRawBufferPointer(start: p, count: count), as: UTF8.self))
        case json_type_array:
            let n = json_object_array_length(obj)
            var items: [JSONValue] = []
            items.reserveCapacity(n)
            for i in 0..<n { items.append(build(json_object_array_get_idx(obj, i), numbers: numbers, next: &next)) }
            return .array(items)
        case json_type_object:
            var result = JSONObject()
            var it = json_object_iter_begin(obj)
            var end = json_object_iter_end(obj)
            while json_object_iter_equal(&it, &end) == 0 {
                let key = String(cString: json_object_iter_peek_name(&it))
                result.appendUnchecked(key, build(json_object_iter_peek_value(&it), numbers: numbers, next: &next))
                json_object_iter_next(&it)
            }
            return .object(result)
        default:
            preconditionFailure("unknown json-c type \(type)")
        }
    }
}

/// RFC 8259 grammar check, duplicate-key detection and number reading over UTF-8-valid bytes.
///
/// Built to allocate little on big headers: keys are compared as byte slices of the text (only a key
/// with escapes is decoded into a buffer of its own), per-depth key lists are reused, and the path
/// used in messages is rendered only when there is an error.
final class StrictScanner {
    struct Failure: Error {
        var message: String
        var duplicateKey: String?
    }

    /// A key's decoded bytes: a slice of the text, or of a buffer this scanner owns.
    private struct Key: Hashable {
        let bytes: UnsafeRawBufferPointer
        static func == (a: Key, b: Key) -> Bool {
            a.bytes.count == b.bytes.count && (a.bytes.count == 0 || memcmp(a.bytes.baseAddress!, b.bytes.baseAddress!, a.bytes.count) == 0)
        }
        func hash(into h: inout Hasher) { h.combine(bytes: bytes) }
        var string: String { String(decoding: bytes, as: UTF8.self) }
    }

    private enum PathItem {
        case key(Key)
        case index(Int)
    }

    /// Objects with more keys than this are checked for duplicates with a hash set.
    private static let linearKeyLimit = 12

    let bytes: UnsafeRawBufferPointer
    private var i = 0
    private var path: [PathItem] = []
    private var keyLists: [[Key]] = []          // by depth, reused
    private var keySets: [Set<Key>] = []        // by depth, reused
    private var decodedKeys: [UnsafeMutableRawBufferPointer] = []
    private var scratch: [UInt8] = []
    /// Every number in document order, already classified.
    private(set) var numbers: [JSONValue] = []

    init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    deinit { for b in decodedKeys { b.deallocate() } }

    func scanDocument() throws {
        skipWhitespace()
        try scanValue(depth: 0)
        skipWhitespace()
        if i < bytes.count { throw fail("unexpected text after the JSON value") }
    }

    private func fail(_ what: String) -> Failure {
        Failure(message: "not valid JSON: \(what) at byte \(i)")
    }

    private var renderedPath: String {
        var s = "$"
        for item in path {
            switch item {
            case .index(let n): s += "[\(n)]"
            case .key(let key):
                let plain = key.bytes.count > 0 && key.bytes.allSatisfy {
                    ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7a) || $0 == 0x5f
                }
                s += plain ? ".\(key.string)" : "[\(JSON.quoted(key.string))]"
            }
        }
        return s
    }

    private func skipWhitespace() {
        while i < bytes.count {
            switch bytes[i] {
            case 0x20, 0x09, 0x0A, 0x0D: i += 1
            default: return
            }
        }
    }

    private func peek() -> UInt8? { i < bytes.count ? bytes[i] : nil }

    private func scanValue(depth: Int) throws {
        guard let c = peek() else { throw fail("the text ends where a value was expected") }
        switch c {
        case UInt8(ascii: "{"):
            guard depth < JSON.maxDepth else { throw fail("nesting deeper than \(JSON.maxDepth) levels") }
            try scanObject(depth: depth + 1)
        case UInt8(ascii: "["):
            guard depth < JSON.maxDepth else { throw fail("nesting deeper than \(JSON.maxDepth) levels") }
            try scanArray(depth: depth + 1)
        case UInt8(ascii: "\""):
            _ = try scanString(decode: false)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            try scanNumber()
        case UInt8(ascii: "t"): try expectLiteral("true")
        case UInt8(ascii: "f"): try expectLiteral("false")
        case UInt8(ascii: "n"): try expectLiteral("null")
        default:
            throw fail("unexpected character \(describe(c)) where a value was expected")
        }
    }

    private func expectLiteral(_ word: StaticString) throws {
        let n = word.utf8CodeUnitCount
        guard i + n <= bytes.count else { throw fail("unknown literal") }
        for k in 0..<n where bytes[i + k] != word.utf8Start[k] { throw fail("unknown literal") }
        i += n
    }

    private func scanObject(depth: Int) throws {
        i += 1  // {
        while keyLists.count <= depth { keyLists.append([]); keySets.append([]) }
        keyLists[depth].removeAll(keepingCapacity: true)
        keySets[depth].removeAll(keepingCapacity: true)
        skipWhitespace()
        if peek() == UInt8(ascii: "}") { i += 1; return }
        while true {
            skipWhitespace()
            guard peek() == UInt8(ascii: "\"") else { throw fail("expected a double-quoted key") }
            let key = try scanKey()
            // json-c keeps keys as C strings, so it would cut this one short.
            if key.bytes.count > 0, memchr(key.bytes.baseAddress!, 0, key.bytes.count) != nil { throw fail("a key containing U+0000 is not supported") }
            if isDuplicate(key, depth: depth) {
                throw Failure(message: "duplicate key \(JSON.quoted(key.string)) in the object at \(renderedPath)", duplicateKey: key.string)
            }
            skipWhitespace()
            guard peek() == UInt8(ascii: ":") else { throw fail("expected ':' after a key") }
            i += 1
            skipWhitespace()
            path.append(.key(key))
            try scanValue(depth: depth)
            path.removeLast()
            skipWhitespace()
            switch peek() {
            case UInt8(ascii: ","): i += 1
            case UInt8(ascii: "}"): i += 1; return
            default: throw fail("expected ',' or '}' in an object")
            }
        }
    }

    /// Records `key` for the object at `depth`; true when it was already there.
    private func isDuplicate(_ key: Key, depth: Int) -> Bool {
        if keyLists[depth].count < StrictScanner.linearKeyLimit {
            if keyLists[depth].contains(key) { return true }
            keyLists[depth].append(key)
            return false
        }
        if keySets[depth].isEmpty { keySets[depth].formUnion(keyLists[depth]) }
        return !keySets[depth].insert(key).inserted
    }

    private func scanArray(depth: Int) throws {
        i += 1  // [
        skipWhitespace()
        if peek() == UInt8(ascii: "]") { i += 1; return }
        var n = 0
        while true {
            skipWhitespace()
            path.append(.index(n))
            try scanValue(depth: depth)
            path.removeLast()
            n += 1
            skipWhitespace()
            switch peek() {
            case UInt8(ascii: ","): i += 1
            case UInt8(ascii: "]"): i += 1; return
            default: throw fail("expected ',' or ']' in an array")
            }
        }
    }

    /// A key starting at its opening quote: a slice of the text when it has no escapes.
    private func scanKey() throws -> Key {
        let open = i
        guard try scanString(decode: false) else {
            return Key(bytes: UnsafeRawBufferPointer(rebasing: bytes[open + 1 ..< i - 1]))
        }
        i = open
        scratch.removeAll(keepingCapacity: true)
        _ = try scanString(decode: true)
        let owned = UnsafeMutableRawBufferPointer.allocate(byteCount: max(scratch.count, 1), alignment: 1)
        decodedKeys.append(owned)
        scratch.withUnsafeBytes { if $0.count > 0 { owned.copyMemory(from: $0) } }
        return Key(bytes: UnsafeRawBufferPointer(start: owned.baseAddress, count: scratch.count))
    }

    /// Scans a string starting at its opening quote and says whether it held any escape. With
    /// `decode`, appends its decoded bytes to `scratch`.
    private func scanString(decode: Bool) throws -> Bool {
        i += 1  // "
        var escaped = false
        var runStart = i
        func flush(_ end: Int) {
            if decode, end > runStart { scratch.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[runStart ..< end])) }
        }
        func emit(_ byte: UInt8) { if decode { scratch.append(byte) } }
        while true {
            guard i < bytes.count else { throw fail("unterminated string") }
            let c = bytes[i]
            switch c {
            case UInt8(ascii: "\""):
                flush(i)
                i += 1
                return escaped
            case 0x00..<0x20:
                throw fail("raw control character \(describe(c)) inside a string")
            case UInt8(ascii: "\\"):
                flush(i)
                escaped = true
                i += 1
                guard i < bytes.count else { throw fail("unterminated string") }
                let e = bytes[i]
                i += 1
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): emit(e)
                case UInt8(ascii: "b"): emit(0x08)
                case UInt8(ascii: "f"): emit(0x0C)
                case UInt8(ascii: "n"): emit(0x0A)
                case UInt8(ascii: "r"): emit(0x0D)
                case UInt8(ascii: "t"): emit(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if scalar >= 0xD800 && scalar < 0xDC00 {
                        guard i + 1 < bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") else {
                            throw fail("unpaired surrogate escape")
                        }
                        i += 2
                        let low = try hex4()
                        guard low >= 0xDC00 && low < 0xE000 else { throw fail("unpaired surrogate escape") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if scalar >= 0xDC00 && scalar < 0xE000 {
                        throw fail("unpaired surrogate escape")
                    }
                    if decode { scratch.append(contentsOf: UTF8.encode(Unicode.Scalar(scalar)!)!) }
                default:
                    i -= 1
                    throw fail("invalid escape \\\(describe(e)) in a string")
                }
                runStart = i
            default:
                i += 1
            }
        }
    }

    private func hex4() throws -> UInt32 {
        guard i + 4 <= bytes.count else { throw fail("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[i]
            let d: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = c - UInt8(ascii: "A") + 10
            default: throw fail("invalid hex digit in a \\u escape")
            }
            v = v << 4 | UInt32(d)
            i += 1
        }
        return v
    }

    private func scanDigits() -> Int {
        let start = i
        while i < bytes.count, bytes[i] >= UInt8(ascii: "0"), bytes[i] <= UInt8(ascii: "9") { i += 1 }
        return i - start
    }

    private func scanNumber() throws {
        let start = i
        var integral = true
        let negative = peek() == UInt8(ascii: "-")
        if negative { i += 1 }
        switch peek() {
        case UInt8(ascii: "0"):
            i += 1
            if let c = peek(), c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") { throw fail("number with a leading zero") }
        case .some(UInt8(ascii: "1")...UInt8(ascii: "9")):
            _ = scanDigits()
        default:
            throw fail("invalid number")
        }
        let integerEnd = i
        if peek() == UInt8(ascii: ".") {
            integral = false
            i += 1
            guard scanDigits() > 0 else { throw fail("a decimal point must be followed by digits") }
        }
        if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
            integral = false
            i += 1
            if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { i += 1 }
            guard scanDigits() > 0 else { throw fail("an exponent must have digits") }
        }
        if integral {
            // Accumulate toward the negative side, which holds Int64.min.
            var v: Int64 = 0
            var fits = true
            for k in (negative ? start + 1 : start) ..< integerEnd {
                let (m, o1) = v.multipliedReportingOverflow(by: 10)
                let (s, o2) = m.subtractingReportingOverflow(Int64(bytes[k] - UInt8(ascii: "0")))
                if o1 || o2 { fits = false; break }
                v = s
            }
            if fits && negative { numbers.append(.int(v)); return }
            if fits && v != .min { numbers.append(.int(-v)); return }
        }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
        guard let d = Double(text), d.isFinite else {
            i = start
            throw fail("number \(text) is out of range")
        }
        numbers.append(.double(d))
    }

    private func describe(_ c: UInt8) -> String {
        if c >= 0x20 && c < 0x7F { return "'\(Character(Unicode.Scalar(c)))'" }
        return "0x" + String(c, radix: 16, uppercase: true)
    }
}

/// UTF-8 validation per RFC 3629 (no overlong forms, no surrogates, nothing above U+10FFFF).
public enum UTF8Check {
    /// Byte offset of the first invalid sequence, or nil when all of `bytes` is valid UTF-8.
    public static func firstInvalidOffset(_ bytes: UnsafeRawBufferPointer) -> Int? {
        var i = 0
        let n = bytes.count
        while i < n {
            let b0 = bytes[i]
            if b0 < 0x80 { i += 1; continue }
            let len: Int
            var lo: UInt8 = 0x80, hi: UInt8 = 0xBF  // allowed range of the second byte
            switch b0 {
            case 0xC2...0xDF: len = 2
            case 0xE0: len = 3; lo = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: len = 3
            case 0xED: len = 3; hi = 0x9F
            case 0xF0: len = 4; lo = 0x90
            case 0xF1...0xF3: len = 4
            case 0xF4: len = 4; hi = 0x8F
            default: return i
            }
            guard i + len <= n else { return i }
            let b1 = bytes[i + 1]
            guard b1 >= lo && b1 <= hi else { return i }
            for k in 2..<len where bytes[i + k] & 0xC0 != 0x80 { return i }
            i += len
        }
        return nil
    }
}
