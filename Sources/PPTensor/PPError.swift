/// The one error type the toolkit reports to people: a single line naming the file, the entry
/// (tensor, key, record) and the problem. Commands print `description` and exit with `exitCode`.
public struct PPError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case usage          // wrong flags or arguments (exit 64)
        case badInput       // a file whose content is wrong or unsupported (exit 65)
        case missingInput   // a file or folder that does not exist (exit 66)
        case io             // reading or writing failed (exit 74)
        case mismatch       // a verification or comparison failed (exit 1)
        case unsupported    // a valid input the toolkit cannot handle yet (exit 69)
    }

    public var kind: Kind
    public var file: String?
    public var entry: String?
    public var message: String

    public init(_ kind: Kind, file: String? = nil, entry: String? = nil, _ message: String) {
        self.kind = kind
        self.file = file
        self.entry = entry
        self.message = message
    }

    public static func badInput(_ file: String?, entry: String? = nil, _ message: String) -> PPError {
        PPError(.badInput, file: file, entry: entry, message)
    }

    public var description: String {
        var parts: [String] = []
        if let file { parts.append(file) }
        if let entry { parts.append(entry) }
        parts.append(message)
        return parts.joined(separator: ": ").replacingNewlines()
    }

    public var exitCode: Int32 {
        switch kind {
        case .usage: return 64
        case .badInput: return 65
        case .missingInput: return 66
        case .io: return 74
        case .mismatch: return 1
        case .unsupported: return 69
        }
    }

    /// The same error with the file name filled in when a lower layer did not know it.
    public func inFile(_ path: String) -> PPError {
        var copy = self
        if copy.file == nil { copy.file = path }
        return copy
    }
}

extension String {
    fileprivate func replacingNewlines() -> String {
        String(map { $0 == "\n" || $0 == "\r" ? " " : $0 })
    }
}
