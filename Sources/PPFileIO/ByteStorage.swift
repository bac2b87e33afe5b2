#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Bytes that tensors point into: a read-only memory mapping of a file (so a 2.7 GB checkpoint costs
/// no resident memory until it is read), or a heap block the storage owns (decompressed zip entries,
/// tensors built in memory). Immutable after creation, so it is safe to share between threads; `@unchecked`
/// only because the compiler cannot see that through the raw pointer and the release closure (which runs
/// once, in deinit, when no other reference is left).
public final class ByteStorage: @unchecked Sendable {
    public let bytes: UnsafeRawBufferPointer
    /// Where the bytes came from, for error messages.
    public let origin: String
    private let release: () -> Void
    /// True for file mappings (their pages can be dropped and re-read from the page cache).
    public let isFileMapping: Bool

    /// Maps `path` read-only. An empty file gives an empty storage (mmap refuses length 0).
    public init(mappingFile path: String) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            let kind: PPError.Kind = errno == ENOENT ? .missingInput : .io
            throw PPError(kind, file: path, String(cString: strerror(errno)))
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw PPError(.io, file: path, String(cString: strerror(errno))) }
        if (st.st_mode & S_IFMT) == S_IFDIR { throw PPError(.badInput, file: path, "is a folder, expected a file") }
        let size = Int(st.st_size)
        origin = path
        isFileMapping = true
        if size == 0 {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            release = {}
            return
        }
        guard let base = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), base != MAP_FAILED else {
            throw PPError(.io, file: path, "cannot map the file: \(String(cString: strerror(errno)))")
        }
        bytes = UnsafeRawBufferPointer(start: base, count: size)
        release = { munmap(base, size) }
    }

    /// Copies `source` into a block this storage owns.
    public init(copying source: UnsafeRawBufferPointer, origin: String) {
        let block = UnsafeMutableRawBufferPointer.allocate(byteCount: max(source.count, 1), alignment: 64)
        if source.count > 0 { block.copyMemory(from: source) }
        bytes = UnsafeRawBufferPointer(start: block.baseAddress, count: source.count)
        self.origin = origin
        isFileMapping = false
        release = { block.deallocate() }
    }

    /// Takes a zero-filled block of `count` bytes and lets `fill` write it once.
    public init(count: Int, origin: String, fill: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows {
        let block = UnsafeMutableRawBufferPointer.allocate(byteCount: max(count, 1), alignment: 64)
        block.initializeMemory(as: UInt8.self, repeating: 0)
        do { try fill(UnsafeMutableRawBufferPointer(start: block.baseAddress, count: count)) } catch {
            block.deallocate()
            throw error
        }
        bytes = UnsafeRawBufferPointer(start: block.baseAddress, count: count)
        self.origin = origin
        isFileMapping = false
        release = { block.deallocate() }
    }

    public convenience init(bytes array: [UInt8], origin: String) {
        self.init(count: array.count, origin: origin) { dst in
            array.withUnsafeBytes { dst.copyMemory(from: $0) }
        }
    }

    /// A window of `parent` (for example a stored zip entry inside a mapped archive). Keeps the parent
    /// alive; no bytes are copied.
    public init(slicing parent: ByteStorage, range: Range<Int>, origin: String) {
        precondition(range.lowerBound >= 0 && range.upperBound <= parent.count, "slice outside the storage")
        bytes = UnsafeRawBufferPointer(rebasing: parent.bytes[range])
        self.origin = origin
        isFileMapping = parent.isFileMapping
        release = { withExtendedLifetime(parent) {} }
    }

    public var count: Int { bytes.count }

    /// Maps the pages of `range` in one call (a file mapping only; Linux 5.14+, harmless before), so that a
    /// `write` from them copies without stopping at a page fault every few pages.
    public func populate(_ range: Range<Int>) {
        #if os(Linux)
        guard isFileMapping, let base = bytes.baseAddress, !range.isEmpty else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = UInt(bitPattern: base + range.lowerBound) / UInt(page) * UInt(page)
        let end = UInt(bitPattern: base + range.upperBound)
        guard let pointer = UnsafeMutableRawPointer(bitPattern: start) else { return }
        _ = madvise(pointer, Int(end - start), 22)   // MADV_POPULATE_READ
        #endif
    }

    /// Lets the kernel drop the resident pages of `range` (a file mapping only; later reads fault them
    /// back in from the page cache). Streaming a multi-GB checkpoint through a mapping then keeps the
    /// resident memory flat instead of growing to the file's size.
    public func dropPages(_ range: Range<Int>) {
        guard isFileMapping, let base = bytes.baseAddress, !range.isEmpty else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = UInt(bitPattern: base + range.lowerBound)
        let end = UInt(bitPattern: base + range.upperBound)
        let alignedStart = (start + UInt(page) - 1) / UInt(page) * UInt(page)   // only whole pages inside the range
        let alignedEnd = end / UInt(page) * UInt(page)
        guard alignedEnd > alignedStart, let pointer = UnsafeMutableRawPointer(bitPattern: alignedStart) else { return }
        _ = madvise(pointer, Int(alignedEnd - alignedStart), MADV_DONTNEED)
    }

    /// Runs `body` with the bytes while keeping this storage alive. Use this (not `bytes` on a
    /// temporary) whenever the storage is not otherwise held: ARC may release a mapping right after
    /// its last use, before a callee has finished reading it.
    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withExtendedLifetime(self) { try body(bytes) }
    }

    deinit { release() }
}
