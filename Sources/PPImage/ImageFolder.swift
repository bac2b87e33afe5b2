import PPFileIO
import PPTensor

#if canImport(Glibc)
import Glibc
#endif

/// A labelled image folder listed exactly as torchvision's `datasets.ImageFolder(root)` lists it, so
/// item i here is sample i there:
///
/// - classes: the names of the entries of `root` that are folders (symlinks to folders count), sorted
///   in Python's order (by code point, which for UTF-8 names is byte order); class index = position;
/// - per class in that order: `os.walk(root/class, followlinks=True)`, the walk's (folder, files)
///   tuples sorted by folder path, and each folder's file names sorted; hidden files and folders count;
/// - a file is kept when its name ends, case-insensitively, in .jpg .jpeg .png .ppm .bmp .pgm .tif
///   .tiff .webp (torchvision's IMG_EXTENSIONS);
/// - no class folder, or a class without any such file, is an error, as in torchvision.
///
/// Only JPEG and PNG are decoded by this toolkit: items with the other extensions stay in the list
/// (indices keep matching torchvision) and each gets one line in `unsupported`.
///
/// Deliberate differences: a folder whose link leads back to one of its own parents is not entered
/// again (os.walk would descend until the path is too long) and is reported in `notes`; a name that is
/// not valid UTF-8 is skipped with a note (Python would keep it with surrogate escapes).
public struct ImageFolder: Sendable {
    public struct Item: Equatable, Sendable {
        public var path: String
        public var classIndex: Int
        /// True for .jpg, .jpeg and .png names (the formats ImageDecoder reads).
        public var isDecodable: Bool
    }

    public static let extensions = [".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"]
    public static let decodableExtensions = [".jpg", ".jpeg", ".png"]

    public let root: String
    public let classes: [String]
    public let items: [Item]
    /// One line per item this toolkit cannot decode ("path: a .bmp file; ...").
    public let unsupported: [String]
    /// Anything skipped for the deliberate differences above, one line each.
    public let notes: [String]

    public var decodableItems: [Item] { items.filter(\.isDecodable) }

    /// Lists `root`.
    public static func scan(_ root: String) throws -> ImageFolder {
        var st = stat()
        guard stat(root, &st) == 0 else { throw PPError(.missingInput, file: root, "no such folder") }
        guard (st.st_mode & S_IFMT) == S_IFDIR else { throw PPError.badInput(root, "not a folder (expected one sub-folder per class)") }
        var notes: [String] = []
        let top = try entries(of: root, notes: &notes)
        let classes = top.filter(\.isDirectory).map(\.name).sorted(by: pythonOrder)
        guard !classes.isEmpty else {
            throw PPError.badInput(root, "no class folder inside (ImageFolder expects root/<class>/<image>)")
        }
        var items: [Item] = []
        var unsupported: [String] = []
        var emptyClasses: [String] = []
        for (index, name) in classes.enumerated() {
            var walked: [(folder: String, files: [String])] = []
            var ancestors: [(UInt64, UInt64)] = []
            walk(join(root, name), ancestors: &ancestors, into: &walked, notes: &notes)
            walked.sort { pythonOrder($0.folder, $1.folder) }
            let before = items.count
            for (folder, files) in walked {
                for file in files.sorted(by: pythonOrder) {
                    let lower = file.lowercased()
                    guard extensions.contains(where: { lower.hasSuffix($0) }) else { continue }
                    let path = join(folder, file)
                    let decodable = decodableExtensions.contains { lower.hasSuffix($0) }
                    items.append(Item(path: path, classIndex: index, isDecodable: decodable))
                    if !decodable {
                        let ext = extensions.filter { lower.hasSuffix($0) }.max(by: { $0.count < $1.count })!
                        unsupported.append("\(path): a \(ext) file; only JPEG and PNG are decoded (convert it to PNG)")
                    }
                }
            }
            if items.count == before { emptyClasses.append(name) }
        }
        guard emptyClasses.isEmpty else {
            throw PPError.badInput(root, "no image file for the classes \(emptyClasses.sorted(by: pythonOrder).joined(separator: ", ")); supported extensions are \(extensions.joined(separator: ", "))")
        }
        return ImageFolder(root: root, classes: classes, items: items, unsupported: unsupported, notes: notes)
    }

    /// Python's string order: by code point, which is the byte order of the UTF-8 encodings.
    public static func pythonOrder(_ a: String, _ b: String) -> Bool {
        a.utf8.lexicographicallyPrecedes(b.utf8)
    }

    /// os.path.join for two parts.
    static func join(_ a: String, _ b: String) -> String { a.hasSuffix("/") ? a + b : a + "/" + b }

    struct Entry {
        var name: String
        var isDirectory: Bool
    }

    /// The entries of one folder, classified as os.scandir's is_dir() does (following symlinks; a
    /// broken link is not a folder).
    static func entries(of folder: String, notes: inout [String]) throws -> [Entry] {
        guard let dir = opendir(folder) else {
            throw PPError(.io, file: folder, "cannot list: \(String(cString: strerror(errno)))")
        }
        defer { closedir(dir) }
        var found: [Entry] = []
        while let entry = readdir(dir) {
            let bytes = withUnsafeBytes(of: entry.pointee.d_name) { Array($0.prefix(while: { $0 != 0 })) }
            if bytes == [0x2E] || bytes == [0x2E, 0x2E] { continue }   // "." and ".."
            guard let name = String(validating: bytes, as: UTF8.self) else {
                notes.append("\(folder): skipped a name that is not UTF-8")
                continue
            }
            var st = stat()
            let isDirectory = stat(join(folder, name), &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
            found.append(Entry(name: name, isDirectory: isDirectory))
        }
        return found
    }

    /// os.walk(top, followlinks=True), top-down, unreadable folders skipped (os.walk's default).
    static func walk(_ folder: String, ancestors: inout [(UInt64, UInt64)], into walked: inout [(folder: String, files: [String])],
                     notes: inout [String]) {
        var st = stat()
        guard stat(folder, &st) == 0 else { return }
        let identity = (UInt64(st.st_dev), UInt64(st.st_ino))
        if ancestors.contains(where: { $0 == identity }) {
            notes.append("\(folder): a link back to a parent folder; not entered again")
            return
        }
        guard let listed = try? entries(of: folder, notes: &notes) else { return }
        walked.append((folder, listed.filter { !$0.isDirectory }.map(\.name)))
        ancestors.append(identity)
        for sub in listed where sub.isDirectory {
            walk(join(folder, sub.name), ancestors: &ancestors, into: &walked, notes: &notes)
        }
        ancestors.removeLast()
    }
}
