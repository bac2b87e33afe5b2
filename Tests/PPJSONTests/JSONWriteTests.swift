import XCTest

@testable import PPJSON

final class JSONWriteTests: XCTestCase {
    let sample: JSONValue = [
        "name": "dit \"xl\"",
        "depth": 28,
        "ratio": 4.0,
        "flags": [true, false, nil],
        "empty": [:],
        "none": [],
        "nested": ["b": 1, "a": [0.5, -2]],
    ]

    func testCompactIsSerdeStyle() {
        XCTAssertEqual(JSON.serialize(sample, pretty: false),
                       #"{"name":"dit \"xl\"","depth":28,"ratio":4.0,"flags":[true,false,null],"empty":{},"none":[],"nested":{"b":1,"a":[0.5,-2]}}"#)
    }

    func testPretty() {
        XCTAssertEqual(JSON.serialize(sample), """
            {
              "name": "dit \\"xl\\"",
              "depth": 28,
              "ratio": 4.0,
              "flags": [
                true,
                false,
                null
              ],
              "empty": {},
              "none": [],
              "nested": {
                "b": 1,
                "a": [
                  0.5,
                  -2
                ]
              }
            }
            """)
        XCTAssertEqual(JSON.serialize(1), "1")
        XCTAssertEqual(JSON.serialize([]), "[]")
    }

    func testSortKeysAtEveryDepth() {
        XCTAssertEqual(JSON.serialize(sample, pretty: false, sortKeys: true),
                       #"{"depth":28,"empty":{},"flags":[true,false,null],"name":"dit \"xl\"","nested":{"a":[0.5,-2],"b":1},"none":[],"ratio":4.0}"#)
        // Byte order: upper case before lower case, "é" (0xC3) after "z".
        XCTAssertEqual(JSON.serialize(["é": 1, "z": 2, "Z": 3, "a": 4], pretty: false, sortKeys: true),
                       #"{"Z":3,"a":4,"z":2,"é":1}"#)
    }

    func testEscapes() {
        let s = "q\" b\\ s/ \u{8}\u{c}\n\r\t \u{0}\u{1}\u{1f} \u{7f} é€😀"
        XCTAssertEqual(JSON.serialize(.string(s)),
                       "\"q\\\" b\\\\ s/ \\b\\f\\n\\r\\t \\u0000\\u0001\\u001f \u{7f} é€😀\"")
        XCTAssertEqual(JSON.quoted("a\"b"), #""a\"b""#)
        XCTAssertEqual(try JSON.parse(JSON.serialize(.string(s)), origin: "t"), .string(s))
        XCTAssertEqual(JSON.serialize(["k\n": 1], pretty: false), #"{"k\n":1}"#)
    }

    func testNumbers() {
        let cases: [(JSONValue, String)] = [
            (.int(0), "0"), (.int(-5), "-5"), (.int(.max), "9223372036854775807"), (.int(.min), "-9223372036854775808"),
            (.double(1), "1.0"), (.double(-0.0), "-0.0"), (.double(0.1), "0.1"), (.double(1e-5), "1e-05"),
            (.double(1e16), "1e+16"), (.double(123456789012), "123456789012.0"), (.double(2.5e-300), "2.5e-300"),
            (.double(.infinity), "null"), (.double(-.infinity), "null"), (.double(.nan), "null"),
        ]
        for (v, text) in cases {
            XCTAssertEqual(JSON.serialize(v), text)
            // Finite doubles stay doubles and come back exactly.
            if case .double(let d) = v, d.isFinite {
                guard case .double(let back) = try? JSON.parse(text, origin: "t") else { XCTFail(text); continue }
                XCTAssertEqual(back.bitPattern, d.bitPattern, text)
            }
        }
        // Shortest round-trip text, for many values.
        var x: Double = 1.0 / 3.0
        for _ in 0..<500 {
            let text = JSON.serialize(.double(x))
            XCTAssertEqual(try JSON.parse(text, origin: "t"), .double(x), text)
            x = x * -1.7 + 0.1
            if abs(x) > 1e300 { x = 1e-300 }
        }
    }

    func testDeterministicAndRoundTrips() throws {
        let text = JSON.serialize(sample)
        for _ in 0..<3 { XCTAssertEqual(JSON.serialize(sample), text) }
        XCTAssertEqual(try JSON.parse(text, origin: "t"), sample)
        XCTAssertEqual(try JSON.parse(JSON.serialize(sample, pretty: false), origin: "t"), sample)
        XCTAssertEqual(JSON.serializedBytes(sample), Array(text.utf8))
    }

    func testObjectEditing() {
        var o: JSONObject = ["a": 1, "b": 2]
        o["a"] = "x"
        o["c"] = 3
        XCTAssertEqual(o.keys, ["a", "b", "c"])
        o["b"] = nil
        XCTAssertEqual(o.keys, ["a", "c"])
        XCTAssertEqual(JSONObject([("k", 1), ("j", 2), ("k", 3)]).pairs.map { $0.value }, [3, 2])
        XCTAssertNotEqual(JSONObject([("a", 1), ("b", 2)]), JSONObject([("b", 2), ("a", 1)]))
    }
}
