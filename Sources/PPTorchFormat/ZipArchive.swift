import CLibZip
import PPFileIO
import PPTensor

/// One file inside a zip archive, as its central directory describes it (after checks).
public struct ZipEntry: Sendable, Equatable {
    public let name: String
    public let index: Int
    public let uncompressedSize: Int
    public let compressedSize: Int
    /// Method 0: the bytes sit in the archive as they are, so they can be used in place.
    public let isStored: Bool
    public let isDirectory: Bool
    public let crc32: UInt32
    /// Offset of the local header, relative to the start of the archive.
    public let localHeaderOffset: Int
    /// Offset of the entry's (possibly compressed) bytes, relative to the start of the archive.
    public let dataOffset: Int
}

/// A read-only zip archive over a byte storage (a file mapping, or a window of one: a zip inside a zip).
/// libzip opens and checks the archive (ZIP_CHECKCONS) and inflates compressed entries; the central
/// directory and local headers are also parsed here because libzip does not expose where a stored
/// entry's bytes begin, and those offsets are what lets tensors point into the mapping without copies.
/// Not safe for concurrent `contents(of:)` calls on compressed entries (one libzip handle).
/// `@unchecked Sendable` so that an archive (and the tensors mapped from it) can move to another thread:
/// everything but the libzip handle is immutable, and the handle is used by one thread at a time (the
/// readers inflate entries while they load, on the loading thread).
public final class ZipArchive: @unchecked Sendable {
    public let origin: String
    public let storage: ByteStorage
    /// Where the archive starts and how long it is inside `storage`.
    public let baseOffset: Int
    public let byteCount: Int
    public let entries: [ZipEntry]
    private let entryIndexByName: [String: Int]
    private let handle: OpaquePointer

    /// Largest uncompressed size we agree to inflate into memory.
    public static let maximumInflatedSize = 64 << 30

    public convenience init(path: String) throws {
        let storage = try ByteStorage(mappingFile: path)
        try self.init(storage: storage, origin: path)
    }

    public convenience init(storage: ByteStorage, origin: String) throws {
        try self.init(storage: storage, range: 0 ..< storage.count, origin: origin)
    }

    /// An archive occupying `range` of `storage` (e.g. a stored `.pt` entry inside another zip).
    public init(storage: ByteStorage, range: Range<Int>, origin: String) throws {
        guard range.lowerBound >= 0, range.upperBound <= storage.count else {
            throw PPError.badInput(origin, "zip range \(range) lies outside its storage of \(storage.count) bytes")
        }
        self.origin = origin
        self.storage = storage
        self.baseOffset = range.lowerBound
        self.byteCount = range.count
        let bytes = UnsafeRawBufferPointer(rebasing: storage.bytes[range])
        guard bytes.count > 0 else { throw PPError.badInput(origin, "empty file, expected a zip archive") }
        guard ZipArchive.looksLikeZip(bytes) else {
            throw PPError.badInput(origin, "not a zip archive (no PK signature at the start)")
        }
        let parsed = try CentralDirectory.parse(bytes, origin: origin)

        // libzip's own reading, with consistency checks between local and central headers.
        var error = zip_error_t()
        zip_error_init(&error)
        defer { zip_error_fini(&error) }
        guard let source = zip_source_buffer_create(bytes.baseAddress, zip_uint64_t(bytes.count), 0, &error) else {
            throw PPError(.io, file: origin, "libzip cannot create a buffer source: \(String(cString: zip_error_strerror(&error)))")
        }
        guard let archive = zip_open_from_source(source, ZIP_RDONLY | ZIP_CHECKCONS, &error) else {
            zip_source_free(source)
            throw PPError.badInput(origin, "not a valid zip archive: \(String(cString: zip_error_strerror(&error)))")
        }
        handle = archive
        do {
            entries = try ZipArchive.crossCheck(parsed, archive: archive, origin: origin)
        } catch {
            zip_discard(archive)
            throw error
        }
        var byName: [String: Int] = [:]
        for (i, e) in entries.enumerated() where byName[e.name] == nil { byName[e.name] = i }
        entryIndexByName = byName
    }

    deinit { zip_discard(handle) }

    public func entry(named name: String) -> ZipEntry? {
        entryIndexByName[name].map { entries[$0] }
    }

    /// Stored entries: a view into the storage (no copy). Compressed entries: inflated into an owned
    /// ByteStorage, refusing anything whose real size differs from the declared size. Memory: the
    /// entry's real inflated size (checked by a counting pass before anything that size is allocated)
    /// plus 1 MiB of scratch; never a size taken from the headers alone.
    public func contents(of entry: ZipEntry) throws -> (storage: ByteStorage, offset: Int, count: Int) {
        if entry.isStored {
            return (storage, baseOffset + entry.dataOffset, entry.uncompressedSize)
        }
        guard entry.uncompressedSize <= ZipArchive.maximumInflatedSize else {
            throw PPError(.unsupported, file: origin, entry: entry.name,
                          "declares \(entry.uncompressedSize) bytes uncompressed, more than the \(ZipArchive.maximumInflatedSize >> 30) GiB this reader inflates")
        }
        // Deflate cannot expand more than ~1032:1, so a larger declared size is a lie we need not allocate for.
        let (ratioLimit, overflow) = entry.compressedSize.multipliedReportingOverflow(by: 1032)
        guard overflow || entry.uncompressedSize <= ratioLimit + 1024 else {
            throw PPError.badInput(origin, entry: entry.name,
                                   "declares \(entry.uncompressedSize) bytes uncompressed from only \(entry.compressedSize) compressed bytes")
        }
        // A first pass inflates into a small scratch buffer and only counts: the declared size is
        // allocated only once the data really inflates to it, so a lying header costs no memory.
        let name = entry.name
        let origin = self.origin
        do {
            guard let file = zip_fopen_index(handle, zip_uint64_t(entry.index), 0) else {
                throw PPError.badInput(origin, entry: name, "cannot open for reading: \(String(cString: zip_strerror(handle)))")
            }
            defer { zip_fclose(file) }
            let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
            defer { scratch.deallocate() }
            var total = 0
            while true {
                let n = zip_fread(file, scratch.baseAddress!, zip_uint64_t(scratch.count))
                if n < 0 { throw PPError.badInput(origin, entry: name, "cannot inflate: \(String(cString: zip_file_strerror(file)))") }
                if n == 0 { break }
                total += Int(n)
                if total > entry.uncompressedSize {
                    throw PPError.badInput(origin, entry: name, "inflates to more than the declared \(entry.uncompressedSize) bytes")
                }
            }
            guard total == entry.uncompressedSize else {
                throw PPError.badInput(origin, entry: name, "inflates to \(total) bytes but declares \(entry.uncompressedSize)")
            }
        }
        guard let file = zip_fopen_index(handle, zip_uint64_t(entry.index), 0) else {
            throw PPError.badInput(origin, entry: entry.name, "cannot open for reading: \(String(cString: zip_strerror(handle)))")
        }
        defer { zip_fclose(file) }
        let inflated = try ByteStorage(count: entry.uncompressedSize, origin: "\(origin):\(name)") { dst in
            var filled = 0
            while filled < dst.count {
                let n = zip_fread(file, dst.baseAddress! + filled, zip_uint64_t(dst.count - filled))
                if n < 0 {
                    throw PPError.badInput(origin, entry: name, "cannot inflate: \(String(cString: zip_file_strerror(file)))")
                }
                if n == 0 { break }
                filled += Int(n)
            }
            guard filled == dst.count else {
                throw PPError.badInput(origin, entry: name, "inflates to \(filled) bytes but declares \(dst.count)")
            }
            var extra: UInt8 = 0
            let more = zip_fread(file, &extra, 1)
            if more < 0 {
                throw PPError.badInput(origin, entry: name, "cannot inflate: \(String(cString: zip_file_strerror(file)))")
            }
            if more > 0 { throw PPError.badInput(origin, entry: name, "inflates to more than the declared \(dst.count) bytes") }
        }
        return (inflated, 0, inflated.count)
    }

    /// The entry's bytes copied into an array (for small records such as `byteorder`, `version`).
    public func bytes(of entry: ZipEntry) throws -> [UInt8] {
        let (s, offset, count) = try contents(of: entry)
        return Array(s.bytes[offset ..< offset + count])
    }

    public static func looksLikeZip(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count >= 4 else { return false }
        return bytes[0] == 0x50 && bytes[1] == 0x4b && (bytes[2] == 3 && bytes[3] == 4 || bytes[2] == 5 && bytes[3] == 6)
    }

    /// Our central-directory reading and libzip's must agree entry by entry.
    private static func crossCheck(_ parsed: [CentralDirectory.Record], archive: OpaquePointer, origin: String) throws -> [ZipEntry] {
        let count = zip_get_num_entries(archive, 0)
        guard count == parsed.count else {
            throw PPError.badInput(origin, "libzip sees \(count) entries, the central directory lists \(parsed.count)")
        }
        var result: [ZipEntry] = []
        result.reserveCapacity(parsed.count)
        for (i, record) in parsed.enumerated() {
            var st = zip_stat_t()
            zip_stat_init(&st)
            guard zip_stat_index(archive, zip_uint64_t(i), ZIP_FL_ENC_RAW, &st) == 0 else {
                throw PPError.badInput(origin, entry: record.name, "libzip cannot stat it: \(String(cString: zip_strerror(archive)))")
            }
            let libName = st.name.map { String(cString: $0) } ?? ""
            guard libName == record.name, Int(st.size) == record.uncompressedSize, Int(st.comp_size) == record.compressedSize,
                  Int(st.comp_method) == record.method else {
                throw PPError.badInput(origin, entry: record.name, "central directory and libzip disagree about this entry")
            }
            guard record.method == 0 || record.method == 8 else {
                throw PPError(.unsupported, file: origin, entry: record.name, "compression method \(record.method) (only stored and deflate are read)")
            }
            if record.method == 0 && record.compressedSize != record.uncompressedSize {
                throw PPError.badInput(origin, entry: record.name, "stored entry with compressed size \(record.compressedSize) != uncompressed size \(record.uncompressedSize)")
            }
            result.append(ZipEntry(name: record.name, index: i, uncompressedSize: record.uncompressedSize,
                                   compressedSize: record.compressedSize, isStored: record.method == 0,
                                   isDirectory: record.name.hasSuffix("/"), crc32: record.crc32,
                                   localHeaderOffset: record.localHeaderOffset, dataOffset: record.dataOffset))
        }
        return result
    }
}

/// Our own reading of the end-of-central-directory records, the central directory (with ZIP64 extra
/// fields) and each local header, with every offset and size checked against the archive's length.
enum CentralDirectory {
    struct Record {
        var name: String
        var method: Int
        var flags: Int
        var crc32: UInt32
        var compressedSize: Int
        var uncompressedSize: Int
        var localHeaderOffset: Int
        var dataOffset: Int = 0
    }

    static func parse(_ bytes: UnsafeRawBufferPointer, origin: String) throws -> [Record] {
        let reader = LittleEndianReader(bytes: bytes, origin: origin)
        // The EOCD record is 22 bytes plus a comment of at most 65535 bytes, at the very end.
        guard bytes.count >= 22 else { throw PPError.badInput(origin, "too short for a zip archive (\(bytes.count) bytes)") }
        var eocd = -1
        var at = bytes.count - 22
        let lowest = max(0, bytes.count - 22 - 65535)
        while at >= lowest {
            if try reader.u32(at) == 0x0605_4b50, try Int(reader.u16(at + 20)) == bytes.count - at - 22 { eocd = at; break }
            at -= 1
        }
        guard eocd >= 0 else { throw PPError.badInput(origin, "no end-of-central-directory record (truncated zip?)") }
        var entryCount = try Int(reader.u16(eocd + 10))
        var directorySize = try Int(reader.u32(eocd + 12))
        var directoryOffset = try Int(reader.u32(eocd + 16))
        var directoryEnd = eocd
        // ZIP64: a locator right before the EOCD points to the zip64 EOCD record.
        if eocd >= 20, try reader.u32(eocd - 20) == 0x0706_4b50 {
            let record = try reader.int64(eocd - 20 + 8, what: "zip64 end record offset")
            guard record >= 0, record + 56 <= eocd - 20, try reader.u32(record) == 0x0606_4b50 else {
                throw PPError.badInput(origin, "zip64 end-of-central-directory locator points to no zip64 record")
            }
            entryCount = try reader.int64(record + 32, what: "entry count")
            directorySize = try reader.int64(record + 40, what: "central directory size")
            directoryOffset = try reader.int64(record + 48, what: "central directory offset")
            directoryEnd = record
        }
        guard directoryOffset >= 0, directorySize >= 0, directoryOffset <= directoryEnd,
              directorySize <= directoryEnd - directoryOffset else {
            throw PPError.badInput(origin, "central directory (offset \(directoryOffset), \(directorySize) bytes) lies outside the file")
        }
        // Each central record takes at least 46 bytes: a larger count is a lie.
        guard entryCount >= 0, entryCount <= directorySize / 46 else {
            throw PPError.badInput(origin, "declares \(entryCount) entries, more than its \(directorySize)-byte central directory can hold")
        }
        var records: [Record] = []
        records.reserveCapacity(entryCount)
        var cursor = directoryOffset
        let limit = directoryOffset + directorySize
        for _ in 0..<entryCount {
            guard cursor + 46 <= limit, try reader.u32(cursor) == 0x0201_4b50 else {
                throw PPError.badInput(origin, "central directory record \(records.count) is malformed")
            }
            let nameLength = try Int(reader.u16(cursor + 28))
            let extraLength = try Int(reader.u16(cursor + 30))
            let commentLength = try Int(reader.u16(cursor + 32))
            let recordEnd = cursor + 46 + nameLength + extraLength + commentLength
            guard recordEnd <= limit else { throw PPError.badInput(origin, "central directory record \(records.count) runs past the directory") }
            let name = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[cursor + 46 ..< cursor + 46 + nameLength]), as: UTF8.self)
            var record = Record(name: name, method: try Int(reader.u16(cursor + 10)), flags: try Int(reader.u16(cursor + 8)),
                                crc32: try reader.u32(cursor + 16),
                                compressedSize: try Int(reader.u32(cursor + 20)), uncompressedSize: try Int(reader.u32(cursor + 24)),
                                localHeaderOffset: try Int(reader.u32(cursor + 42)))
            // ZIP64 extra field (id 1): 8-byte values, in this order, for the fields that read 0xFFFFFFFF.
            var extra = cursor + 46 + nameLength
            let extraEnd = extra + extraLength
            while extra + 4 <= extraEnd {
                let id = try reader.u16(extra), size = try Int(reader.u16(extra + 2))
                guard extra + 4 + size <= extraEnd else { throw PPError.badInput(origin, entry: name, "extra field runs past its record") }
                if id == 1 {
                    var field = extra + 4
                    func next(_ what: String) throws -> Int {
                        guard field + 8 <= extra + 4 + size else { throw PPError.badInput(origin, entry: name, "zip64 extra field lacks the \(what)") }
                        defer { field += 8 }
                        return try reader.int64(field, what: what)
                    }
                    if record.uncompressedSize == 0xFFFF_FFFF { record.uncompressedSize = try next("uncompressed size") }
                    if record.compressedSize == 0xFFFF_FFFF { record.compressedSize = try next("compressed size") }
                    if record.localHeaderOffset == 0xFFFF_FFFF { record.localHeaderOffset = try next("local header offset") }
                }
                extra += 4 + size
            }
            if record.flags & 1 != 0 { throw PPError(.unsupported, file: origin, entry: name, "encrypted zip entries are not supported") }
            records.append(record)
            cursor = recordEnd
        }
        // Local headers: where the data starts, and that it fits before the next entry / the directory.
        for i in records.indices {
            let header = records[i].localHeaderOffset
            let name = records[i].name
            guard header >= 0, header <= directoryOffset - 30, try reader.u32(header) == 0x0403_4b50 else {
                throw PPError.badInput(origin, entry: name, "local header offset \(header) does not point to a local header")
            }
            let localNameLength = try Int(reader.u16(header + 26))
            let localExtraLength = try Int(reader.u16(header + 28))
            let dataOffset = header + 30 + localNameLength + localExtraLength
            guard localNameLength == records[i].name.utf8.count,
                  dataOffset <= directoryOffset,
                  Array(bytes[header + 30 ..< header + 30 + localNameLength]) == Array(records[i].name.utf8) else {
                throw PPError.badInput(origin, entry: name, "local header disagrees with the central directory")
            }
            guard records[i].compressedSize >= 0, records[i].uncompressedSize >= 0,
                  records[i].compressedSize <= directoryOffset - dataOffset else {
                throw PPError.badInput(origin, entry: name, "declares \(records[i].compressedSize) bytes of data, more than the file holds at offset \(dataOffset)")
            }
            records[i].dataOffset = dataOffset
        }
        // No two entries may share bytes: sorted by header offset, each one's data ends before the next header.
        let order = records.indices.sorted { records[$0].localHeaderOffset < records[$1].localHeaderOffset }
        for (a, b) in zip(order, order.dropFirst()) {
            if records[a].dataOffset + records[a].compressedSize > records[b].localHeaderOffset {
                throw PPError.badInput(origin, entry: records[b].name, "overlaps entry \(records[a].name)")
            }
        }
        return records
    }
}

/// Bounds-checked little-endian reads for headers.
struct LittleEndianReader {
    let bytes: UnsafeRawBufferPointer
    let origin: String

    func u16(_ at: Int) throws -> UInt16 {
        guard at >= 0, at + 2 <= bytes.count else { throw PPError.badInput(origin, "zip header read past the end of the file") }
        return UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8
    }

    func u32(_ at: Int) throws -> UInt32 {
        guard at >= 0, at + 4 <= bytes.count else { throw PPError.badInput(origin, "zip header read past the end of the file") }
        return UInt32(try u16(at)) | UInt32(try u16(at + 2)) << 16
    }

    func u64(_ at: Int) throws -> UInt64 {
        UInt64(try u32(at)) | UInt64(try u32(at + 4)) << 32
    }

    /// A u64 field that must fit an Int (every legal offset and size does).
    func int64(_ at: Int, what: String) throws -> Int {
        let v = try u64(at)
        guard v <= UInt64(Int.max) else { throw PPError.badInput(origin, "zip64 \(what) \(v) is impossible") }
        return Int(v)
    }
}
