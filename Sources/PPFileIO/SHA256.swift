import COpenSSL

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// SHA-256 (FIPS 180-4) from OpenSSL's libcrypto: checkpoint provenance and integrity hashes. Multi-GB
/// checkpoints are hashed on every conversion, so this is a maintained implementation that uses the CPU's
/// SHA extensions (or its vector units) rather than code of our own.
/// Streams: feed any number of chunks, then `finish()`. A value type: a copy hashes on independently.
/// `@unchecked Sendable` because of the OpenSSL context class: it is copied before a shared context is
/// changed (copy on write), so a value sent to another thread never changes a context this one uses.
public struct SHA256: @unchecked Sendable {
    /// The OpenSSL context, owned by one value at a time (copied before a shared one is changed).
    private final class Context {
        let pointer: OpaquePointer
        init() {
            pointer = EVP_MD_CTX_new()
            precondition(EVP_DigestInit_ex(pointer, EVP_sha256(), nil) == 1, "OpenSSL: SHA-256 unavailable")
        }
        init(copying other: Context) {
            pointer = EVP_MD_CTX_new()
            precondition(EVP_MD_CTX_copy_ex(pointer, other.pointer) == 1, "OpenSSL: cannot copy a digest context")
        }
        deinit { EVP_MD_CTX_free(pointer) }
    }

    private var context = Context()

    public init() {}

    private mutating func unique() -> OpaquePointer {
        if !isKnownUniquelyReferenced(&context) { context = Context(copying: context) }
        return context.pointer
    }

    public mutating func update(_ data: UnsafeRawBufferPointer) {
        guard let base = data.baseAddress, data.count > 0 else { return }
        let ctx = unique()
        precondition(EVP_DigestUpdate(ctx, base, data.count) == 1, "OpenSSL: digest update failed")
    }

    public mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }
    public mutating func update(_ string: String) { update(Array(string.utf8)) }

    /// The digest; the hasher then starts over (as OpenSSL does after a final).
    public mutating func finish() -> [UInt8] {
        let ctx = unique()
        var digest = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        precondition(EVP_DigestFinal_ex(ctx, &digest, &length) == 1 && length == 32, "OpenSSL: digest final failed")
        precondition(EVP_DigestInit_ex(ctx, EVP_sha256(), nil) == 1, "OpenSSL: SHA-256 unavailable")
        return digest
    }

    public mutating func finishHex() -> String { SHA256.hex(finish()) }

    public static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8](); out.reserveCapacity(bytes.count * 2)
        for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 15)]) }
        return String(decoding: out, as: UTF8.self)
    }

    public static func hash(_ data: UnsafeRawBufferPointer) -> String {
        var h = SHA256(); h.update(data); return h.finishHex()
    }

    public static func hash(_ storage: ByteStorage) -> String { storage.withBytes { hash($0) } }

    public static func hash(_ bytes: [UInt8]) -> String { bytes.withUnsafeBytes { hash($0) } }

    /// The hex digest of the file at `path`, read through a memory mapping in chunks.
    public static func hashFile(_ path: String) throws -> String {
        let storage = try ByteStorage(mappingFile: path)
        return withExtendedLifetime(storage) {
            let bytes = storage.bytes
            var h = SHA256()
            guard let base = bytes.baseAddress else { return h.finishHex() }
            let mapping = UnsafeMutableRawPointer(mutating: base)
            _ = madvise(mapping, bytes.count, MADV_SEQUENTIAL)   // read ahead aggressively
            let chunk = 64 << 20
            var offset = 0
            while offset < bytes.count {
                let n = min(chunk, bytes.count - offset)
                // Start reading the next chunk while this one is hashed, and map this one's pages in
                // one call instead of one fault at a time.
                if offset + n < bytes.count {
                    _ = madvise(mapping + offset + n, min(chunk, bytes.count - offset - n), MADV_WILLNEED)
                }
                #if os(Linux)
                _ = madvise(mapping + offset, n, 22)   // MADV_POPULATE_READ (Linux 5.14+); fails harmlessly before
                #endif
                h.update(UnsafeRawBufferPointer(start: base + offset, count: n))
                // Unmap hashed pages from this read-only mapping (they stay in the page cache), so
                // resident memory stays flat while hashing a multi-GB checkpoint.
                _ = madvise(mapping + offset, n, MADV_DONTNEED)
                offset += n
            }
            return h.finishHex()
        }
    }
}
