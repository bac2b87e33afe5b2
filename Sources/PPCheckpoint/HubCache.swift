import PPFileIO
import PPTensor

#if canImport(Glibc)
import Glibc
#endif

/// Model arguments given as Hugging Face hub ids, found in the local hub cache without any network:
/// `owner/name`, `owner/name@revision`, and either with a path inside the repository after it
/// (`facebook/DiT-XL-2-256/transformer`, `owner/name@v1.0/model.safetensors`).
///
/// The cache is the one `huggingface_hub` writes (huggingface-cli download, from_pretrained):
///
///     <cache>/models--<owner>--<name>/refs/<revision>       commit id of a branch or tag (default main)
///     <cache>/models--<owner>--<name>/snapshots/<commit>/   the files (links into ../../blobs)
///
/// with <cache> = $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE (its older name), else $HF_HOME/hub, else
/// $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub, as huggingface_hub decides it.
/// A revision may also be a commit id (40 hex digits) that has a snapshot folder.
///
/// The environment is a parameter so that tests (and callers) never change process-wide state.
public enum HubCache {
    public struct Reference: Equatable, Sendable {
        public var owner: String
        public var name: String
        /// nil: the default branch, `main`.
        public var revision: String?
        /// A path inside the repository ("transformer"), nil for its top.
        public var subfolder: String?

        public init(owner: String, name: String, revision: String? = nil, subfolder: String? = nil) {
            self.owner = owner
            self.name = name
            self.revision = revision
            self.subfolder = subfolder
        }

        public var repoID: String { "\(owner)/\(name)" }
        /// The cache folder's name: `models--owner--name`.
        public var cacheFolderName: String { "models--\(owner)--\(name)" }
    }

    /// The environment variables the cache location depends on, read from this process.
    public static let environmentKeys = ["HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "HOME"]

    public static func processEnvironment() -> [String: String] {
        var environment: [String: String] = [:]
        for key in environmentKeys {
            if let value = getenv(key) { environment[key] = String(cString: value) }
        }
        return environment
    }

    /// The parts of a hub id, or nil when `argument` does not look like one. Repository names
    /// follow the hub's rules: letters, digits, '-', '_', '.', not starting or ending with '-' or
    /// '.', no "--" or "..". Paths starting with '/', '.' or '~' are never ids.
    public static func parse(_ argument: String) -> Reference? {
        guard let first = argument.first, first != "/", first != ".", first != "~" else { return nil }
        var parts = argument.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 2, parts.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." }) else { return nil }
        let owner = parts.removeFirst()
        var name = parts.removeFirst()
        var revision: String? = nil
        if let at = name.firstIndex(of: "@") {
            revision = String(name[name.index(after: at)...])
            name = String(name[..<at])
            guard let revision, !revision.isEmpty, revision.allSatisfy({ isNameCharacter($0) }) else { return nil }
        }
        guard isRepositoryName(owner), isRepositoryName(name) else { return nil }
        guard parts.allSatisfy({ !$0.contains("@") }) else { return nil }
        return Reference(owner: owner, name: name, revision: revision, subfolder: parts.isEmpty ? nil : parts.joined(separator: "/"))
    }

    static func isNameCharacter(_ c: Character) -> Bool {
        c.isASCII && (c.isLetter || c.isNumber || c == "-" || c == "_" || c == ".")
    }

    static func isRepositoryName(_ s: String) -> Bool {
        guard !s.isEmpty, s.count <= 96, s.allSatisfy(isNameCharacter) else { return false }
        guard let first = s.first, let last = s.last, !"-.".contains(first), !"-.".contains(last) else { return false }
        return !s.contains("--") && !s.contains("..")
    }

    /// The cache folder and which variable chose it (for messages).
    public static func cacheRoot(environment: [String: String]) -> (path: String, source: String) {
        func value(_ key: String) -> String? {
            guard let v = environment[key], !v.isEmpty else { return nil }
            return expandHome(v, environment: environment)
        }
        if let v = value("HF_HUB_CACHE") { return (v, "HF_HUB_CACHE") }
        if let v = value("HUGGINGFACE_HUB_CACHE") { return (v, "HUGGINGFACE_HUB_CACHE") }
        if let v = value("HF_HOME") { return (join(v, "hub"), "HF_HOME") }
        if let v = value("XDG_CACHE_HOME") { return (join(v, "huggingface/hub"), "XDG_CACHE_HOME") }
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? "~"
        return (join(home, ".cache/huggingface/hub"), "the default under HOME")
    }

    /// The local folder (or file) a hub id stands for. Every failure is one line naming the id, the
    /// cache and each place looked at with what was missing there.
    public static func resolve(_ argument: String, environment: [String: String]) throws -> String {
        guard let ref = parse(argument) else {
            throw PPError(.missingInput, file: argument, "no such file or folder, and not a hub id (owner/name[@revision][/path])")
        }
        let (root, source) = cacheRoot(environment: environment)
        let repo = join(root, ref.cacheFolderName)
        func fail(_ looked: [String]) -> PPError {
            PPError(.missingInput, file: argument,
                "not a file or folder, and not in the Hugging Face cache (\(root), from \(source)): " + looked.joined(separator: "; ")
                + "; download it with `huggingface-cli download \(ref.repoID)` or set HF_HUB_CACHE / HF_HOME")
        }
        guard isDirectory(repo) else { throw fail(["\(repo) does not exist"]) }
        let revision = ref.revision ?? "main"
        let refFile = join(repo, "refs/\(revision)")
        var looked: [String] = []
        var commit: String? = nil
        if let text = readSmallFile(refFile) {
            let trimmed = text.trimmingWhitespace()
            if isCommitID(trimmed) { commit = trimmed } else { looked.append("\(refFile) does not hold a commit id") }
        } else {
            looked.append("\(refFile) does not exist")
            if isCommitID(revision) { commit = revision }
        }
        guard let commit else {
            let snapshots = listFolder(join(repo, "snapshots"))
            looked.append(snapshots.isEmpty ? "no snapshot in \(join(repo, "snapshots"))"
                          : "'\(revision)' is not a commit id of a snapshot (\(snapshots.joined(separator: ", ")))")
            throw fail(looked)
        }
        let snapshot = join(repo, "snapshots/\(commit)")
        guard isDirectory(snapshot) else {
            throw fail(looked + ["\(snapshot) does not exist (refs/\(revision) names a commit that is not downloaded)"])
        }
        guard let subfolder = ref.subfolder else { return snapshot }
        let inside = join(snapshot, subfolder)
        var st = stat()
        guard stat(inside, &st) == 0 else { throw fail(looked + ["\(inside) does not exist"]) }
        return inside
    }

    /// `path` itself when it exists; otherwise, when it looks like a hub id, its folder in the cache;
    /// otherwise a missing-input error.
    public static func resolveModelPath(_ path: String, environment: [String: String]) throws -> String {
        var st = stat()
        if stat(path, &st) == 0 { return path }
        guard parse(path) != nil else { throw PPError(.missingInput, file: path, "no such file or folder") }
        return try resolve(path, environment: environment)
    }

    // MARK: small file-system helpers

    static func join(_ a: String, _ b: String) -> String { a.hasSuffix("/") ? a + b : a + "/" + b }

    static func expandHome(_ path: String, environment: [String: String]) -> String {
        guard path == "~" || path.hasPrefix("~/"), let home = environment["HOME"], !home.isEmpty else { return path }
        return home + path.dropFirst()
    }

    static func isCommitID(_ s: String) -> Bool {
        s.utf8.count == 40 && s.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }

    static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// A ref file's text (they hold 40 characters; anything over 4 KB is not a ref).
    static func readSmallFile(_ path: String) -> String? {
        var st = stat()
        guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_size <= 4096,
              let storage = try? ByteStorage(mappingFile: path) else { return nil }
        return String(decoding: storage.bytes, as: UTF8.self)
    }

    static func listFolder(_ path: String) -> [String] { FileOutput.entries(of: path, hidden: false) }
}

extension String {
    fileprivate func trimmingWhitespace() -> String {
        let scalars = unicodeScalars
        guard let start = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
              let end = scalars.lastIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        return String(scalars[start...end])
    }
}
