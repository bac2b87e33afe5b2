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
        case outputRefused  // an output that would replace what the toolkit did not write, or cannot be created (exit 73)
    }

    /// Every exit code the executables use, in one list: `--help`, the README and docs/CLI.md show it.
    public static let exitCodes: [(code: Int32, meaning: String)] = [
        (0, "success"),
        (1, "a verification or comparison failed"),
        (64, "usage error"),
        (65, "bad input (the message names the file, the entry and the problem)"),
        (66, "missing input"),
        (69, "a valid input the toolkit cannot handle"),
        (70, "internal error (a bug: please report it)"),
        (73, "output refused (it exists and --force was not given, holds files the toolkit did not write, or its folder is missing)"),
        (74, "reading or writing failed"),
    ]

    /// The list above as one sentence, for help texts.
    public static var exitCodeSummary: String {
        "Exit codes: " + exitCodes.map { "\($0.code) \($0.meaning)" }.joined(separator: "; ") + "."
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
        case .outputRefused: return 73
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
