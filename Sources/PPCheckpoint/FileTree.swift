import PPFileIO
import PPTensor
import PPTorchFormat

#if canImport(Glibc)
import Glibc
#endif

/// A set of files addressed by relative path: a folder on disk or a zip archive (a zipped folder).
/// Format detection and the loaders work on this, so `weights.zip` and the unpacked folder behave alike.
public protocol FileTree {
    /// What to call the tree in messages (the folder or archive path).
    var origin: String { get }
    /// Relative paths of the regular files, sorted.
    var files: [String] { get }
    /// The bytes of one file (a mapping or a view into the archive; compressed entries are inflated).
    func open(_ relativePath: String) throws -> ByteStorage
}

extension FileTree {
    public func contains(_ relativePath: String) -> Bool { files.contains(relativePath) }

    /// The files directly inside `folder` ("" for the top level).
    public func files(in folder: String) -> [String] {
        let prefix = folder.isEmpty ? "" : folder + "/"
        return files.filter { $0.hasPrefix(prefix) && !$0.dropFirst(prefix.count).contains("/") }
    }

    /// A path to show in messages: `archive.zip:inner/file` or `folder/file`.
    public func displayPath(_ relativePath: String) -> String {
        self is ZipTree ? "\(origin):\(relativePath)" : "\(origin)/\(relativePath)"
    }
}

/// A folder on disk (walked recursively, hidden files and symlinked folders skipped).
public struct DirectoryTree: FileTree {
    public let origin: String
    public let files: [String]

    public init(path: String) throws {
        var st = stat()
        guard stat(path, &st) == 0 else { throw PPError(.missingInput, file: path, "no such file or folder") }
        guard (st.st_mode & S_IFMT) == S_IFDIR else { throw PPError(.badInput, file: path, "not a folder") }
        origin = path.hasSuffix("/") && path.count > 1 ? String(path.dropLast()) : path
        var found: [String] = []
        DirectoryTree.walk(origin, relative: "", depth: 0, into: &found)
        files = found.sorted()
    }

    private static func walk(_ root: String, relative: String, depth: Int, into found: inout [String]) {
        guard depth < 4, let dir = opendir(relative.isEmpty ? root : "\(root)/\(relative)") else { return }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name.hasPrefix(".") { continue }
            let rel = relative.isEmpty ? name : "\(relative)/\(name)"
            var st = stat()
            guard stat("\(root)/\(rel)", &st) == 0 else { continue }
            if (st.st_mode & S_IFMT) == S_IFDIR {
                var lst = stat()
                if lstat("\(root)/\(rel)", &lst) == 0, (lst.st_mode & S_IFMT) == S_IFLNK { continue }
                walk(root, relative: rel, depth: depth + 1, into: &found)
            } else if (st.st_mode & S_IFMT) == S_IFREG {
                found.append(rel)
            }
        }
    }

    public func open(_ relativePath: String) throws -> ByteStorage {
        try ByteStorage(mappingFile: "\(origin)/\(relativePath)")
    }
}

/// A zip archive seen as a folder. Entries are read lazily; stored entries are not copied.
public struct ZipTree: FileTree {
    public let origin: String
    public let archive: ZipArchive
    public let files: [String]

    public init(archive: ZipArchive, origin: String) {
        self.archive = archive
        self.origin = origin
        files = archive.entries.filter { !$0.isDirectory }.map(\.name).sorted()
    }

    public func open(_ relativePath: String) throws -> ByteStorage {
        guard let entry = archive.entry(named: relativePath) else {
            throw PPError(.badInput, file: origin, entry: relativePath, "no such entry in the archive")
        }
        let (storage, offset, count) = try archive.contents(of: entry)
        if offset == 0 && count == storage.count { return storage }
        return ByteStorage(slicing: storage, range: offset ..< offset + count, origin: displayPath(relativePath))
    }
}
