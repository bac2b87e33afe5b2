import PPFileIO
import PPJSON
import PPTensor

#if canImport(Glibc)
import Glibc
#endif

/// A key-mapping table from `converters/`: how each target tensor is made from the source.
/// The tables are data so that a reviewer sees every derived, copied and dropped tensor in one place.
public struct KeyRules: Sendable {
    public enum Operation: String, Sendable {
        case copy
        case inputProjection = "input_projection"
        case outputProjection = "output_projection"
        case zeros
        case positionTable = "position_table"
    }

    public struct Rule: Sendable {
        public var target: String        // exact key, or a prefix pattern ending in "*"
        public var operation: Operation
        public var source: String?
        public var factor: Int
        public var why: String?

        public func matches(_ key: String) -> Bool {
            target.hasSuffix("*") ? key.hasPrefix(String(target.dropLast())) : key == target
        }
    }

    public var name: String
    public var rules: [Rule]
    /// Source keys that are deliberately not carried over, with the reason.
    public var dropped: [(key: String, why: String)]
    /// Target keys with no rule are copied from the source key of the same name.
    public var copySameName: Bool

    public func rule(for key: String) -> Rule? { rules.first { $0.matches(key) } }

    public init(json: JSONValue, origin: String) throws {
        func fail(_ entry: String, _ message: String) -> PPError { PPError.badInput(origin, entry: entry, message) }
        guard let name = json["name"]?.stringValue else { throw fail("name", "missing or not a string") }
        self.name = name
        copySameName = json["same_name"]?.stringValue == "copy"
        guard let list = json["rules"]?.arrayValue else { throw fail("rules", "missing or not an array") }
        rules = try list.enumerated().map { index, item in
            guard let target = item["target"]?.stringValue else { throw fail("rules[\(index)].target", "missing") }
            guard let opName = item["op"]?.stringValue, let op = Operation(rawValue: opName) else {
                throw fail("rules[\(index)].op", "missing or unknown (copy, input_projection, output_projection, zeros, position_table)")
            }
            let source = item["from"]?.stringValue
            if [.copy, .inputProjection, .outputProjection].contains(op) && source == nil {
                throw fail("rules[\(index)].from", "\(opName) needs a source key")
            }
            let factor = Int(item["factor"]?.intValue ?? 1)
            guard factor >= 1 && factor <= 16 else { throw fail("rules[\(index)].factor", "must be 1...16") }
            return Rule(target: target, operation: op, source: source, factor: factor, why: item["why"]?.stringValue)
        }
        dropped = try (json["drop"]?.arrayValue ?? []).enumerated().map { index, item in
            guard let key = item["source"]?.stringValue else { throw fail("drop[\(index)].source", "missing") }
            return (key, item["why"]?.stringValue ?? "")
        }
    }

    /// The table the toolkit was built with: converters/ppflow-from-dit.json, embedded at build time (an
    /// installed binary converts without the repository, and no `converters/` folder near the working
    /// folder changes a conversion).
    public static let builtInName = "converters/ppflow-from-dit.json"
    public static var builtInBytes: [UInt8] { PackageResources.ppflow_from_dit_json }

    public static func builtIn() throws -> KeyRules {
        try KeyRules(json: builtInBytes.withUnsafeBytes { try JSON.parse($0, origin: builtInName) }, origin: builtInName)
    }

    /// A table from a file (`from-dit --rules FILE`), for people who map their own architecture's keys.
    public static func load(file path: String) throws -> KeyRules {
        let storage = try ByteStorage(mappingFile: path)
        return try KeyRules(json: storage.withBytes { try JSON.parse($0, origin: path) }, origin: path)
    }
}
