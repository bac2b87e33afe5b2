#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes outputs so that a crash, a kill or a full disk never leaves a half-written file or folder
/// under the final name: everything goes to a temporary name in the same folder, is flushed, and is
/// renamed into place at the end.
public enum FileOutput {
    /// Also flush each file (and the folder it is renamed in) to the disk before renaming it. The rename
    /// alone already guarantees that a killed or failed run never leaves a partial file under the final
    /// name; the flush adds durability across power loss at the cost of waiting for the disk (a 2.7 GB
    /// checkpoint then takes the disk's write time instead of the page cache's). Off unless the caller's
    /// scope turns it on: `FileOutput.$flushToDisk.withValue(true) { ... }` (the command-line tools do so
    /// under `PPFLOW_FSYNC=1`, read once in `CLI.run`).
    @TaskLocal public static var flushToDisk = false

    /// A file being written under a temporary name; `commit()` renames it to `path`.
    public final class PendingFile {
        public let path: String
        public let temporaryPath: String
        private var fd: Int32
        private var committed = false

        public init(path: String) throws {
            self.path = path
            let dir = FileOutput.directory(of: path)
            let base = FileOutput.baseName(of: path)
            FileOutput.removeStaleTemporaries(in: dir, for: base)
            var template = Array("\(dir)/.\(base).tmp-\(getpid())-XXXXXX".utf8CString)
            let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
            guard fd >= 0 else {
                throw PPError(.io, file: path, "cannot create a temporary file in \(dir): \(String(cString: strerror(errno)))")
            }
            self.fd = fd
            temporaryPath = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            fchmod(fd, 0o644)
        }

        /// Appends bytes; throws a clear error on a full disk or any other write failure.
        public func write(_ data: UnsafeRawBufferPointer) throws {
            var offset = 0
            while offset < data.count {
                let n = Glibc.write(fd, data.baseAddress! + offset, min(data.count - offset, 1 << 30))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw PPError(.io, file: path, "write failed: \(String(cString: strerror(errno)))")
                }
                offset += n
            }
        }

        public func write(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try write($0) } }
        public func write(_ string: String) throws { try write(Array(string.utf8)) }

        /// Flushes to disk (when `FileOutput.flushToDisk` is on in the caller's scope) and renames into place.
        public func commit() throws {
            guard !committed else { return }
            if FileOutput.flushToDisk, fsync(fd) != 0 { throw PPError(.io, file: path, "flush failed: \(String(cString: strerror(errno)))") }
            close(fd); fd = -1
            if rename(temporaryPath, path) != 0 {
                throw PPError(.io, file: path, "cannot rename into place: \(String(cString: strerror(errno)))")
            }
            committed = true
        }

        /// Removes the temporary file (called automatically if never committed).
        public func abandon() {
            if fd >= 0 { close(fd); fd = -1 }
            if !committed { unlink(temporaryPath) }
        }

        deinit { abandon() }
    }

    /// Writes `bytes` to `path` atomically.
    public static func writeFile(_ path: String, bytes: [UInt8]) throws {
        let file = try PendingFile(path: path)
        try file.write(bytes)
        try file.commit()
    }

    /// Builds a folder under a temporary name next to `path`, lets `fill` write into it, then puts
    /// it in place. An existing folder at `path` is replaced only after the new one is complete.
    public static func writeFolder(_ path: String, fill: (String) throws -> Void) throws {
        let dir = directory(of: path)
        let base = baseName(of: path)
        removeStaleTemporaries(in: dir, for: base)
        var template = Array("\(dir)/.\(base).tmp-\(getpid())-XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
            throw PPError(.io, file: path, "cannot create a temporary folder in \(dir): \(String(cString: strerror(errno)))")
        }
        let temporary = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        chmod(temporary, 0o755)
        do {
            try fill(temporary)
            var st = stat()
            if lstat(path, &st) == 0 {
                guard (st.st_mode & S_IFMT) == S_IFDIR else {
                    throw PPError(.io, file: path, "exists and is not a folder; not replacing it")
                }
                // Linux: swap the two folders in one step, so the previous checkpoint stays under
                // `path` until the new one is there; the old one then sits at the temporary name.
                if exchange(temporary, path) {
                    removeTree(temporary)
                    syncDirectory(dir)
                    return
                }
                // Elsewhere (or on a file system without RENAME_EXCHANGE): move aside, then rename.
                let old = "\(dir)/.\(base).old-\(getpid())"
                removeTree(old)
                guard rename(path, old) == 0 else {
                    throw PPError(.io, file: path, "cannot move the previous folder aside: \(String(cString: strerror(errno)))")
                }
                guard rename(temporary, path) == 0 else {
                    let reason = String(cString: strerror(errno))
                    _ = rename(old, path)
                    throw PPError(.io, file: path, "cannot rename into place: \(reason)")
                }
                removeTree(old)
            } else if rename(temporary, path) != 0 {
                throw PPError(.io, file: path, "cannot rename into place: \(String(cString: strerror(errno)))")
            }
            syncDirectory(dir)
        } catch {
            removeTree(temporary)
            // Name the output the user asked for, not the temporary folder that no longer exists.
            if var e = error as? PPError, let file = e.file, file.hasPrefix(temporary) {
                e.file = path + file.dropFirst(temporary.count)
                throw e
            }
            throw error
        }
    }

    /// Atomically exchanges two existing paths (Linux renameat2 with RENAME_EXCHANGE); false when the
    /// system or the file system does not offer it.
    static func exchange(_ a: String, _ b: String) -> Bool {
        #if os(Linux)
        return ppflow_renameat2(AT_FDCWD, a, AT_FDCWD, b, 2 /* RENAME_EXCHANGE */) == 0
        #else
        return false
        #endif
    }

    /// Removes what killed runs left beside `base`: `.BASE.tmp-PID-XXXXXX` and `.BASE.old-PID` whose
    /// process no longer exists (a run that is still going keeps its temporaries).
    public static func removeStaleTemporaries(in dir: String, for base: String) {
        var stale: [String] = []
        for name in entries(of: dir) {
            for marker in [".\(base).tmp-", ".\(base).old-"] where name.hasPrefix(marker) {
                let rest = name.dropFirst(marker.count)
                guard let pid = pid_t(rest.prefix { $0.isNumber }), pid > 0 else { continue }
                if kill(pid, 0) != 0 && errno == ESRCH { stale.append(name) }
            }
        }
        for name in stale { removeTree("\(dir)/\(name)") }
    }

    /// The names in a folder, sorted by their bytes (the same order on every system and locale), without
    /// `.` and `..`; names starting with a dot only with `hidden`. Empty when the folder cannot be read.
    public static func entries(of path: String, hidden: Bool = true) -> [String] {
        guard let d = opendir(path) else { return [] }
        defer { closedir(d) }
        var names: [String] = []
        while let entry = readdir(d) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name == "." || name == ".." || (!hidden && name.hasPrefix(".")) { continue }
            names.append(name)
        }
        return names.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
    }

    /// Removes a file or a folder tree (best effort).
    public static func removeTree(_ path: String) {
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            for name in entries(of: path) { removeTree("\(path)/\(name)") }
            rmdir(path)
        } else {
            unlink(path)
        }
    }

    static func syncDirectory(_ dir: String) {
        guard flushToDisk else { return }
        let fd = open(dir, O_RDONLY)
        if fd >= 0 { fsync(fd); close(fd) }
    }

    public static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let d = String(path[..<slash])
        return d.isEmpty ? "/" : d
    }

    public static func baseName(of path: String) -> String {
        var p = path
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        guard let slash = p.lastIndex(of: "/") else { return p }
        return String(p[p.index(after: slash)...])
    }
}

#if os(Linux)
/// glibc's renameat2 (not exposed by the Glibc module).
@_silgen_name("renameat2")
private func ppflow_renameat2(_ oldDirectory: Int32, _ old: UnsafePointer<CChar>, _ newDirectory: Int32,
                              _ new: UnsafePointer<CChar>, _ flags: UInt32) -> Int32
#endif

/// The rule every command applies to its outputs before it starts work: nothing the toolkit did not
/// write is ever replaced or deleted. A path that exists is refused unless `force`; a folder is replaced
/// only when it is empty or is an earlier output of the toolkit (recognised by its owner, see
/// `toolkitEntries`), and even with `force` a folder that also holds other files is refused, naming them.
public enum OutputTarget {
    public enum Kind: Sendable { case file, folder }

    /// Checks `path` as an output of `kind`. `toolkitEntries(folder)` returns the names of the entries
    /// the toolkit writes in such a folder when it recognises the folder as its own output, nil when it
    /// does not. `createParents`: the command creates missing parent folders itself (run folders);
    /// otherwise the parent folder must exist.
    public static func check(_ path: String, kind: Kind, force: Bool,
                             createParents: Bool = false,
                             toolkitEntries: (String) -> Set<String>? = { _ in nil }) throws {
        guard !path.isEmpty else { throw PPError(.usage, "an empty output path") }
        var st = stat()
        guard lstat(path, &st) == 0 else {
            let parent = FileOutput.directory(of: path)
            guard !createParents else { return }
            var ps = stat()
            guard stat(parent, &ps) == 0, (ps.st_mode & S_IFMT) == S_IFDIR else {
                throw PPError(.outputRefused, file: path, "its folder \(parent) does not exist")
            }
            guard access(parent, W_OK) == 0 else {
                throw PPError(.outputRefused, file: path, "its folder \(parent) is not writable")
            }
            return
        }
        let isFolder = (st.st_mode & S_IFMT) == S_IFDIR
        switch (kind, isFolder) {
        case (.file, true):
            throw PPError(.outputRefused, file: path, "is a folder; this output is a file")
        case (.folder, false):
            throw PPError(.outputRefused, file: path, "exists and is not a folder; not replacing it")
        case (.file, false):
            guard (st.st_mode & S_IFMT) == S_IFREG else { throw PPError(.outputRefused, file: path, "exists and is not a regular file; not replacing it") }
            if !force { throw PPError(.outputRefused, file: path, "exists; pass --force to replace it") }
        case (.folder, true):
            let entries = listFolder(path)
            if entries.isEmpty { return }
            guard let owned = toolkitEntries(path) else {
                throw PPError(.outputRefused, file: path, "a folder the toolkit did not write (it holds \(sample(entries))); not replacing it: choose another output")
            }
            let foreign = entries.filter { !owned.contains($0) }
            if !foreign.isEmpty {
                throw PPError(.outputRefused, file: path, "holds files the toolkit did not write (\(sample(foreign))); not replacing it, even with --force: move them away or choose another output")
            }
            if !force { throw PPError(.outputRefused, file: path, "holds an earlier output of the toolkit; pass --force to replace it") }
        }
    }

    /// Names in a folder (see `FileOutput.entries`), hidden ones included.
    public static func listFolder(_ path: String) -> [String] { FileOutput.entries(of: path) }

    private static func sample(_ names: [String]) -> String {
        names.count <= 3 ? names.joined(separator: ", ") : names.prefix(3).joined(separator: ", ") + " and \(names.count - 3) more"
    }
}
