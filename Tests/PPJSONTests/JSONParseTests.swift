import PPFileIO
import XCTest

import PPJSON

/// Parses `text`, failing the test on an error.
func parsed(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> JSONValue? {
    do { return try JSON.parse(text, origin: "test.json") } catch {
        XCTFail("\(text.debugDescription) did not parse: \(error)", file: file, line: line)
        return nil
    }
}

/// Asserts that `bytes` is refused with a badInput error that names the origin and contains `fragment`.
func assertRefused(_ bytes: [UInt8], _ fragment: String, entry: String? = nil,
                   file: StaticString = #filePath, line: UInt = #line) {
    do {
        let v = try bytes.withUnsafeBytes { try JSON.parse($0, origin: "test.json") }
        XCTFail("\(String(decoding: bytes, as: UTF8.self).debugDescription) parsed as \(v)", file: file, line: line)
    } catch let e as PPError {
        XCTAssertEqual(e.kind, .badInput, file: file, line: line)
        XCTAssertEqual(e.file, "test.json", file: file, line: line)
        XCTAssertTrue(e.description.contains(fragment), "\(e.description) lacks \(fragment.debugDescription)", file: file, line: line)
        if let entry { XCTAssertEqual(e.entry, entry, file: file, line: line) }
    } catch {
        XCTFail("unexpected error \(error)", file: file, line: line)
    }
}

func assertRefused(_ text: String, _ fragment: String, entry: String? = nil,
                   file: StaticString = #filePath, line: UInt = #line) {
    assertRefused(Array(text.utf8), fragment, entry: entry, file: file, line: line)
}

final class JSONParseTests: XCTestCase {
    func testScalarsAtTopLevel() {
        XCTAssertEqual(parsed("null"), .null)
        XCTAssertEqual(parsed(" true "), .bool(true))
        XCTAssertEqual(parsed("false"), .bool(false))
        XCTAssertEqual(parsed("123"), .int(123))
        XCTAssertEqual(parsed("\n\t-7\r\n"), .int(-7))
        XCTAssertEqual(parsed("\"x\""), .string("x"))
        XCTAssertEqual(parsed("[]"), .array([]))
        XCTAssertEqual(parsed("{}"), .object(JSONObject()))
    }

    func testNumbers() {
        XCTAssertEqual(parsed("[0, -0, 9223372036854775807, -9223372036854775808]"),
                       .array([.int(0), .int(0), .int(.max), .int(.min)]))
        // Beyond Int64: doubles, not clamped.
        XCTAssertEqual(parsed("9223372036854775808"), .double(9223372036854775808.0))
        XCTAssertEqual(parsed("-9223372036854775809"), .double(-9223372036854775809.0))
        XCTAssertEqual(parsed("18446744073709551616"), .double(18446744073709551616.0))
        XCTAssertEqual(parsed("1.0"), .double(1))
        XCTAssertEqual(parsed("1e2"), .double(100))
        XCTAssertEqual(parsed("-1.5E-3"), .double(-0.0015))
        XCTAssertEqual(parsed("0.1"), .double(0.1))
        XCTAssertEqual(parsed("2.5e+1"), .double(25))
        XCTAssertEqual(parsed("[1.7976931348623157e308]"), .array([.double(.greatestFiniteMagnitude)]))
        if case .double(let d) = parsed("-0.0") { XCTAssertEqual(d.sign, .minus) } else { XCTFail() }

        XCTAssertEqual(JSONValue.double(100).intValue, 100)
        XCTAssertNil(JSONValue.double(1.5).intValue)
        XCTAssertNil(JSONValue.double(1e19).intValue)
        XCTAssertEqual(JSONValue.int(3).doubleValue, 3)
        XCTAssertNil(JSONValue.string("3").intValue)

        assertRefused("1e400", "out of range")
        assertRefused("[-1e400]", "out of range")
        assertRefused("[-01]", "leading zero")
        assertRefused("[01]", "not valid JSON")  // json-c refuses these two itself
        assertRefused("01", "not valid JSON")
        assertRefused("[-]", "not valid JSON")
        assertRefused("[1.]", "not valid JSON")
        assertRefused("[.5]", "not valid JSON")
        assertRefused("[1e]", "not valid JSON")
        assertRefused("[+1]", "not valid JSON")
        assertRefused("[0x10]", "not valid JSON")
        assertRefused("[NaN]", "not valid JSON")
        assertRefused("[Infinity]", "not valid JSON")
        assertRefused("[-Infinity]", "not valid JSON")
        // json-c's strict mode accepts these; the token scan does not.
        assertRefused("[00]", "leading zero")
        assertRefused("[-.5]", "not valid JSON")
        assertRefused("[1.e5]", "decimal point must be followed by digits")
        assertRefused(#"{"a":NaN}"#, "NaN is not a JSON value at byte 5")
        assertRefused("Infinity", "Infinity is not a JSON value")
    }

    /// What the parser gave before json-c did all the parsing: integers within Int64 exact, the rest the
    /// nearest double; the serialized text reads back to the same value.
    func testNumbersReadAsBefore() throws {
        let cases: [(String, JSONValue)] = [
            ("0.1", .double(0.1)), ("1e300", .double(1e300)), ("-0", .int(0)), ("9007199254740993", .int(9_007_199_254_740_993)),
            ("9007199254740993.0", .double(9_007_199_254_740_992)), ("1e-400", .double(0)), ("-1E+2", .double(-100)),
            ("5e-324", .double(.leastNonzeroMagnitude)), ("123456789012345678901234567890", .double(1.2345678901234568e29)),
        ]
        for (text, expected) in cases {
            let value = try JSON.parse("[\(text)]", origin: "n")
            XCTAssertEqual(value, .array([expected]), text)
            XCTAssertEqual(try JSON.parse(JSON.serialize(value), origin: "n2"), value, text)
        }
        XCTAssertEqual(try JSON.parse("1e300", origin: "n"), .double(1e300))
        XCTAssertEqual(try JSON.parse(#"{"a":[1,{"b":2.5}],"c":-3}"#, origin: "n"), ["a": [1, ["b": 2.5]], "c": -3])
    }

    func testStringsAndEscapes() {
        XCTAssertEqual(parsed(#""a\"b\\c\/d\b\f\n\r\t""#), .string("a\"b\\c/d\u{8}\u{c}\n\r\t"))
        XCTAssertEqual(parsed(#""\u00e9\u20AC""#), .string("é€"))
        XCTAssertEqual(parsed(#""\ud83d\ude00""#), .string("😀"))
        XCTAssertEqual(parsed("\"é€😀\""), .string("é€😀"))
        XCTAssertEqual(parsed(#"["a\u0000b"]"#), .array([.string("a\u{0}b")]))
        XCTAssertEqual(parsed(#"{"":1}"#)?[""], .int(1))

        assertRefused(#"["\ud800"]"#, "unpaired surrogate")
        assertRefused(#"["\udc00x"]"#, "unpaired surrogate")
        assertRefused(#"["\ud800\u0041"]"#, "unpaired surrogate")
        assertRefused(#"["\x"]"#, "not valid JSON")
        assertRefused(#"["\u12"]"#, "not valid JSON")
        assertRefused(#"["\u12g4"]"#, "not valid JSON")
        assertRefused("[\"a\u{1}b\"]", "control character")
        assertRefused("[\"a\tb\"]", "control character")
        assertRefused("[\"a\nb\"]", "control character")
        assertRefused("['a']", "not valid JSON")
        assertRefused("{'a':1}", "not valid JSON")
        assertRefused("[\"abc", "not valid JSON")
        assertRefused(#"{"a\u0000b":1}"#, "U+0000")
        assertRefused(#"["\ud800x"]"#, "unpaired surrogate escape at byte 2")
        assertRefused(#"["\ud800"#, "not valid JSON")
        // json-c accepts single-quoted keys in strict mode.
        assertRefused(#"{"a":{'b':1}}"#, "single-quoted strings are not JSON at byte 6")
        XCTAssertEqual(parsed(#"["\\u0000", "\\ud800"]"#), .array([.string("\\u0000"), .string("\\ud800")]))
        XCTAssertEqual(parsed(#"{"\\u0000":"\u0000"}"#)?["\\u0000"], .string("\u{0}"))
    }

    func testInvalidUTF8Refused() {
        assertRefused([0x5B, 0x22, 0xFF, 0x22, 0x5D], "invalid UTF-8 at byte 2")
        assertRefused([0x22, 0xC0, 0xAF, 0x22], "invalid UTF-8")  // overlong "/"
        assertRefused([0x22, 0xED, 0xA0, 0x80, 0x22], "invalid UTF-8")  // encoded surrogate
        assertRefused([0x22, 0xF4, 0x90, 0x80, 0x80, 0x22], "invalid UTF-8")  // above U+10FFFF
        assertRefused([0x22, 0xE2, 0x82, 0x22], "invalid UTF-8")  // truncated sequence
        assertRefused([0xEF, 0xBB, 0xBF, 0x5B, 0x5D], "not valid JSON")  // byte order mark
    }

    func testStructureErrors() {
        assertRefused("", "ends where a value was expected at byte 0")
        assertRefused("   ", "ends where a value was expected")
        assertRefused("[1,]", "not valid JSON")
        assertRefused("[1 2]", "not valid JSON")
        assertRefused(#"{"a":1,}"#, "not valid JSON")
        assertRefused(#"{"a" 1}"#, "not valid JSON")
        assertRefused(#"{"a":}"#, "not valid JSON")
        assertRefused(#"{1:2}"#, "not valid JSON")
        assertRefused("[1]]", "not valid JSON")
        assertRefused("[tru]", "not valid JSON")
        assertRefused("[nul]", "not valid JSON")
        assertRefused("[True]", "not valid JSON")
        assertRefused("[1", "not valid JSON")
        assertRefused("{", "not valid JSON")
    }

    func testTrailingGarbageRefused() {
        assertRefused(#"{"a":1} x"#, "not valid JSON")
        assertRefused("[1][2]", "not valid JSON")
        assertRefused("1 2", "not valid JSON")
        // json-c stops at a NUL byte and calls the value complete; the parse end says otherwise.
        assertRefused([0x5B, 0x31, 0x5D, 0x00, 0x78], "after the JSON value")
        assertRefused([0x5B, 0x31, 0x5D, 0x00], "after the JSON value")
        XCTAssertEqual(parsed("[1]  \n\t\r "), .array([.int(1)]))
    }

    func testDuplicateKeysRefusedAtEveryDepth() {
        assertRefused(#"{"a":1,"a":2}"#, "duplicate key \"a\"", entry: "a")
        assertRefused(#"{"a":1,"b":{"x":1,"y":2,"x":3}}"#, "in the object at $.b", entry: "x")
        assertRefused(#"{"a":[{"k":1},{"k":1,"k":2}]}"#, "duplicate key \"k\" in the object at $.a[1]", entry: "k")
        assertRefused(#"[[[{"w.1":{"q":0,"q":0}}]]]"#, #"at $[0][0][0]["w.1"]"#, entry: "q")
        // Escapes are decoded before comparing.
        assertRefused(#"{"a":1,"\u0061":2}"#, "duplicate key", entry: "a")
        // json-c drops the first value with its nested objects; the first object with a repeated key is named.
        assertRefused(#"{"a":{"x":1,"x":2},"a":3}"#, "duplicate key \"a\" in the object at $", entry: "a")
        assertRefused(#"{"a":{"b":[1]},"a":{"b":[2]},"c":{"d":1,"d":2}}"#, "duplicate key \"a\"", entry: "a")
        assertRefused(#"[{"p":[1,{"q":2}]},{"r":{"s":1,"t":2,"s":3}}]"#, "duplicate key \"s\" in the object at $[1].r", entry: "s")
        assertRefused(#"{"x y":{"k":1,"k\u0000":2}}"#, "U+0000")
        // The same key in sibling objects is fine; so are keys that differ only in normalization.
        XCTAssertNotNil(parsed(#"[{"a":1},{"a":2}]"#))
        XCTAssertEqual(parsed(#"{"a":1,"b":{"a":2}}"#), ["a": 1, "b": ["a": 2]])
        let v = parsed("{\"\u{e9}\":1,\"e\u{301}\":2}")
        XCTAssertEqual(v?.objectValue?.count, 2)
    }

    func testKeyOrderPreserved() throws {
        let v = parsed(#"{"zeta":1,"alpha":{"b":2,"a":3},"mid":[{"y":0,"x":1}],"1":null}"#)
        XCTAssertEqual(v?.objectValue?.keys, ["zeta", "alpha", "mid", "1"])
        XCTAssertEqual(v?["alpha"]?.objectValue?.keys, ["b", "a"])
        XCTAssertEqual(v?["mid"]?.arrayValue?[0].objectValue?.keys, ["y", "x"])
        XCTAssertEqual(v?["alpha"]?["a"], .int(3))
        XCTAssertEqual(v?["1"], .null)
        XCTAssertNil(v?["nope"])
    }

    func testNestingLimit() {
        func nested(_ depth: Int, _ open: String, _ close: String, _ inner: String = "") -> String {
            String(repeating: open, count: depth) + inner + String(repeating: close, count: depth)
        }
        XCTAssertNotNil(parsed(nested(64, "[", "]")))
        assertRefused(nested(65, "[", "]"), "nesting deeper than 64 levels at byte 64")
        assertRefused(nested(10_000, "[", "]"), "not valid JSON")
        XCTAssertNotNil(parsed(nested(63, #"{"a":"#, "}", "[]")))
        assertRefused(nested(64, #"{"a":"#, "}", "[]"), "nesting deeper than 64")
        assertRefused(nested(100_000, #"{"a":"#, "}", "1"), "not valid JSON")
    }

    func testBigDocument() throws {
        var text = "{"
        for i in 0..<20_000 { text += "\(i == 0 ? "" : ",")\"t\(i)\":{\"shape\":[\(i),2],\"v\":\(Double(i) / 8)}" }
        text += "}"
        let v = try JSON.parse(text, origin: "big")
        XCTAssertEqual(v.objectValue?.count, 20_000)
        XCTAssertEqual(v["t19999"]?["shape"], .array([.int(19999), .int(2)]))
        XCTAssertEqual(v["t3"]?["v"], .double(0.375))
        XCTAssertEqual(JSON.serialize(v, pretty: false), text)
    }

    /// Random edits of a valid document: every result either parses to something that serializes and
    /// parses back the same, or is refused with a badInput error. Never a crash.
    func testMutationsNeverCrash() {
        let seed = Array(#"{"a":[1,-2.5e3,"x\u00e9\n",true,null,{"b":{}}],"c\"d":"é😀","e":[[0.1]]}"#.utf8)
        let alphabet = Array(#"{}[]",:\-+.eE0123456789 tfnaulsrx"#.utf8) + [0x00, 0x0A, 0xC3, 0xA9, 0xFF]
        var rng = SplitMix(seed: 42)
        var accepted = 0
        for _ in 0..<5000 {
            var bytes = seed
            for _ in 0..<(1 + Int(rng.next() % 3)) {
                let at = Int(rng.next() % UInt64(bytes.count + 1))
                switch rng.next() % 3 {
                case 0: if at < bytes.count { bytes.remove(at: at) }
                case 1: bytes.insert(alphabet[Int(rng.next() % UInt64(alphabet.count))], at: at)
                default: if at < bytes.count { bytes[at] = alphabet[Int(rng.next() % UInt64(alphabet.count))] }
                }
            }
            do {
                let v = try bytes.withUnsafeBytes { try JSON.parse($0, origin: "m") }
                XCTAssertEqual(try JSON.parse(JSON.serialize(v), origin: "m2"), v, String(decoding: bytes, as: UTF8.self))
                accepted += 1
            } catch let e as PPError {
                XCTAssertEqual(e.kind, .badInput)
            } catch {
                XCTFail("\(error)")
            }
        }
        XCTAssertGreaterThan(accepted, 100)
    }

    func testParseFile() throws {
        let path = NSTemporaryDirectory() + "ppjson-\(getpid()).json"
        defer { unlink(path) }
        try FileOutput.writeFile(path, bytes: Array(#"{"a": [1, 2.5, "x"]}"#.utf8))
        XCTAssertEqual(try JSON.parse(file: path), ["a": [1, 2.5, "x"]])
        XCTAssertThrowsError(try JSON.parse(file: path + ".missing")) { e in
            XCTAssertEqual((e as? PPError)?.kind, .missingInput)
        }
    }
}

/// A small deterministic generator for tests.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
