/// A JSON value. Objects keep their keys in document (or insertion) order; integers that fit in
/// Int64 are `.int`, every other number is `.double`.
public enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    /// The member named `key` of an object; nil for other values or a missing key.
    public subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// Integers, and doubles that are whole numbers within Int64's range.
    public var intValue: Int64? {
        switch self {
        case .int(let i): return i
        case .double(let d):
            guard d.isFinite, d == d.rounded(), d >= -9.223372036854775808e18, d < 9.223372036854775808e18 else { return nil }
            return Int64(d)
        default: return nil
        }
    }

    /// Integers (converted, possibly rounded beyond 2^53) and doubles.
    public var doubleValue: Double? {
        switch self {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: return nil
        }
    }

    public var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    public var arrayValue: [JSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    public var objectValue: JSONObject? {
        if case .object(let o) = self { return o }
        return nil
    }

    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }

    /// "null", "a boolean", "an integer", "a number", "a string", "an array", "an object": for messages.
    public var kindDescription: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .int: return "an integer"
        case .double: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

/// A JSON object: (key, value) pairs in order. Keys compare by their UTF-8 bytes (so two keys that
/// differ only in Unicode normalization stay distinct, as JSON requires). Lookups are linear, which
/// is what the small objects of configs and headers want; iterate `pairs` for big ones.
public struct JSONObject: Equatable, Sendable {
    public private(set) var pairs: [(key: String, value: JSONValue)]

    public init() { pairs = [] }

    /// Later pairs replace earlier ones with the same key (keeping the first position).
    public init(_ pairs: [(String, JSONValue)]) {
        self.pairs = []
        self.pairs.reserveCapacity(pairs.count)
        var position: [[UInt8]: Int] = [:]
        for (k, v) in pairs {
            let bytes = Array(k.utf8)
            if let i = position[bytes] {
                self.pairs[i].value = v
            } else {
                position[bytes] = self.pairs.count
                self.pairs.append((k, v))
            }
        }
    }

    public var keys: [String] { pairs.map(\.key) }
    public var values: [JSONValue] { pairs.map(\.value) }
    public var count: Int { pairs.count }
    public var isEmpty: Bool { pairs.isEmpty }

    public func index(of key: String) -> Int? {
        let k = key.utf8
        return pairs.firstIndex { $0.key.utf8.elementsEqual(k) }
    }

    /// Get: the value for `key`. Set: replaces in place, appends a new key, or removes it (nil).
    public subscript(key: String) -> JSONValue? {
        get { index(of: key).map { pairs[$0].value } }
        set {
            if let i = index(of: key) {
                if let newValue { pairs[i].value = newValue } else { pairs.remove(at: i) }
            } else if let newValue {
                pairs.append((key, newValue))
            }
        }
    }

    /// Appends without looking for an existing key (the caller knows it is new).
    mutating func appendUnchecked(_ key: String, _ value: JSONValue) {
        pairs.append((key, value))
    }

    public static func == (a: JSONObject, b: JSONObject) -> Bool {
        guard a.pairs.count == b.pairs.count else { return false }
        for (x, y) in zip(a.pairs, b.pairs) where !(x.key.utf8.elementsEqual(y.key.utf8) && x.value == y.value) {
            return false
        }
        return true
    }
}

extension JSONValue: ExpressibleByNilLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByFloatLiteral, ExpressibleByStringLiteral, ExpressibleByArrayLiteral,
    ExpressibleByDictionaryLiteral
{
    public init(nilLiteral: ()) { self = .null }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    /// Keeps the literal's order.
    public init(dictionaryLiteral elements: (String, JSONValue)...) { self = .object(JSONObject(elements)) }
}

extension JSONObject: ExpressibleByDictionaryLiteral {
    public init(dictionaryLiteral elements: (String, JSONValue)...) { self.init(elements) }
}
