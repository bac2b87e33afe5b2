import PPFileIO
import PPTensor

/// The byte layout torch's miniz writer produces (formats.md §5.2), as pure functions so that the
/// ZIP64 cases can be tested without multi-GB files.
public enum TorchZipLayout {
    static let u32Max = 0xFFFF_FFFF
    public static let alignment = 64

    /// ZIP64 is needed for a record when its size or its header offset does not fit 32 bits.
    public static func needsZip64(size: Int, headerOffset: Int) -> Bool {
        size >= u32Max || headerOffset >= u32Max
    }

    /// Local header for `name` at `headerOffset`: flags 0x0808 (data descriptor follows, UTF-8),
    /// zeroed time/date/CRC, a ZIP64 extra when needed, then torch's 'FB' padding field so that the
    /// data starts on a 64-byte boundary.
    public static func localHeader(name: String, size: Int, headerOffset: Int) -> [UInt8] {
        let nameBytes = Array(name.utf8)
        var zip64Extra: [UInt8] = []
        let largeSize = size >= u32Max, largeOffset = headerOffset >= u32Max
        if largeSize || largeOffset {
            var fields: [UInt8] = []
            if largeSize { fields += le64(size) + le64(size) }
            if largeOffset { fields += le64(headerOffset) }
            zip64Extra = le16(1) + le16(fields.count) + fields
        }
        let unpadded = headerOffset + 30 + nameBytes.count + zip64Extra.count + 4
        let padding = (alignment - unpadded % alignment) % alignment
        let extra = zip64Extra + [0x46, 0x42] + le16(padding) + [UInt8](repeating: 0x5a, count: padding)
        var h: [UInt8] = le32(0x0403_4b50) + le16(0) + le16(flags(size: size)) + le16(0) + le16(0) + le16(0)
        h += le32(0) + le32(largeSize ? u32Max : 0) + le32(largeSize ? u32Max : 0)
        h += le16(nameBytes.count) + le16(extra.count) + nameBytes + extra
        return h
    }

    /// miniz writes a data descriptor only after non-empty records.
    static func flags(size: Int) -> Int { size > 0 ? 0x0808 : 0x0800 }

    /// Data descriptor after the data: 64-bit sizes under ZIP64 (the rule torch's offset calculation assumes).
    public static func dataDescriptor(crc: UInt32, size: Int, headerOffset: Int) -> [UInt8] {
        guard size > 0 else { return [] }
        if needsZip64(size: size, headerOffset: headerOffset) {
            return le32(0x0807_4b50) + le32(Int(crc)) + le64(size) + le64(size)
        }
        return le32(0x0807_4b50) + le32(Int(crc)) + le32(size) + le32(size)
    }

    /// Central directory record; fields that do not fit 32 bits go to a ZIP64 extra (id 1), in
    /// the order uncompressed size, compressed size, local header offset.
    public static func centralRecord(name: String, crc: UInt32, size: Int, headerOffset: Int) -> [UInt8] {
        let nameBytes = Array(name.utf8)
        let largeSize = size >= u32Max, largeOffset = headerOffset >= u32Max
        var fields: [UInt8] = []
        if largeSize { fields += le64(size) + le64(size) }
        if largeOffset { fields += le64(headerOffset) }
        let extra = fields.isEmpty ? [] : le16(1) + le16(fields.count) + fields
        let versionNeeded = fields.isEmpty ? 0 : 45
        var r: [UInt8] = le32(0x0201_4b50) + le16(0) + le16(versionNeeded) + le16(flags(size: size)) + le16(0) + le16(0) + le16(0)
        r += le32(Int(crc)) + le32(min(size, u32Max)) + le32(min(size, u32Max))
        r += le16(nameBytes.count) + le16(extra.count) + le16(0) + le16(0) + le16(0) + le32(0)
        r += le32(min(headerOffset, u32Max)) + nameBytes + extra
        return r
    }

    /// ZIP64 end record, its locator and the classic end record (torch always writes all three).
    public static func endRecords(entryCount: Int, directoryOffset: Int, directorySize: Int) -> [UInt8] {
        let zip64EndOffset = directoryOffset + directorySize
        var e: [UInt8] = le32(0x0606_4b50) + le64(44) + le16(0x031e) + le16(45) + le32(0) + le32(0)
        e += le64(entryCount) + le64(entryCount) + le64(directorySize) + le64(directoryOffset)
        e += le32(0x0706_4b50) + le32(0) + le64(zip64EndOffset) + le32(1)
        e += le32(0x0605_4b50) + le16(0) + le16(0) + le16(min(entryCount, 0xFFFF)) + le16(min(entryCount, 0xFFFF))
        e += le32(min(directorySize, u32Max)) + le32(min(directoryOffset, u32Max)) + le16(0)
        return e
    }

    static func le16(_ v: Int) -> [UInt8] { [UInt8(truncatingIfNeeded: v), UInt8(truncatingIfNeeded: v >> 8)] }
    static func le32(_ v: Int) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
    static func le64(_ v: Int) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
}

/// Streams records into a zip with torch's layout through an atomic pending file.
final class TorchZipWriter {
    struct Written { let name: String; let crc: UInt32; let size: Int; let headerOffset: Int; let dataOffset: Int }
    let file: FileOutput.PendingFile
    private(set) var cursor = 0
    private(set) var records: [Written] = []

    init(path: String) throws { file = try FileOutput.PendingFile(path: path) }

    private func emit(_ bytes: [UInt8]) throws {
        try file.write(bytes)
        cursor += bytes.count
    }

    /// Writes one record whose `size` bytes `produce` hands over in pieces; checks the count.
    func addRecord(name: String, size: Int, produce: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws {
        let headerOffset = cursor
        try emit(TorchZipLayout.localHeader(name: name, size: size, headerOffset: headerOffset))
        let dataOffset = cursor
        var crc = CRC32()
        var written = 0
        try produce { piece in
            crc.update(piece)
            try file.write(piece)
            written += piece.count
        }
        cursor += written
        guard written == size else { throw PPError(.io, file: file.path, entry: name, "wrote \(written) bytes, expected \(size)") }
        try emit(TorchZipLayout.dataDescriptor(crc: crc.value, size: size, headerOffset: headerOffset))
        records.append(Written(name: name, crc: crc.value, size: size, headerOffset: headerOffset, dataOffset: dataOffset))
    }

    func addRecord(name: String, bytes: [UInt8]) throws {
        try addRecord(name: name, size: bytes.count) { sink in try bytes.withUnsafeBytes { try sink($0) } }
    }

    /// Central directory and end records, then rename into place.
    func finish() throws {
        let directoryOffset = cursor
        var directory: [UInt8] = []
        for r in records {
            directory += TorchZipLayout.centralRecord(name: r.name, crc: r.crc, size: r.size, headerOffset: r.headerOffset)
        }
        try emit(directory)
        try emit(TorchZipLayout.endRecords(entryCount: records.count, directoryOffset: directoryOffset, directorySize: directory.count))
        try file.commit()
    }
}
