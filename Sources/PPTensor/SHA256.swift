import CSHA256

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// SHA-256 (FIPS 180-4): checkpoint provenance and integrity hashes without another library.
/// Whole blocks go through the x86 SHA extensions when the CPU has them (multi-GB checkpoints are
/// hashed on every conversion); the plain Swift compression is the reference and the fallback.
/// Streams: feed any number of chunks, then `finish()`.
public struct SHA256: Sendable {
    private var state: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32) =
        (0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19)
    /// Up to 63 bytes not yet compressed, in a fixed block so streaming never allocates.
    private var pending: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
    private var pendingCount = 0
    private var totalBytes: UInt64 = 0
    private let useHardware: Bool

    /// Checked once, on first use.
    static let hardwareAvailable: Bool = csha256_ni_available() != 0

    public init() { useHardware = SHA256.hardwareAvailable }

    /// `forceReference` keeps every block on the Swift compression (tests compare the two paths).
    init(forceReference: Bool) {
        useHardware = !forceReference && SHA256.hardwareAvailable
    }

    /// Whether this hasher uses the SHA extensions.
    var usesHardware: Bool { useHardware }

    public mutating func update(_ data: UnsafeRawBufferPointer) {
        guard let base = data.baseAddress, data.count > 0 else { return }
        totalBytes &+= UInt64(data.count)
        var offset = 0
        if pendingCount > 0 {
            let take = min(64 - pendingCount, data.count)
            let at = pendingCount
            withUnsafeMutableBytes(of: &pending) { ($0.baseAddress! + at).copyMemory(from: base, byteCount: take) }
            pendingCount += take
            offset = take
            if pendingCount == 64 { compressPending(); pendingCount = 0 }
        }
        let blocks = (data.count - offset) / 64
        if blocks > 0 {
            compress(base + offset, blocks: blocks)
            offset += blocks * 64
        }
        if offset < data.count {
            let rest = data.count - offset
            withUnsafeMutableBytes(of: &pending) { $0.baseAddress!.copyMemory(from: base + offset, byteCount: rest) }
            pendingCount = rest
        }
    }

    public mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }
    public mutating func update(_ string: String) { update(Array(string.utf8)) }

    public mutating func finish() -> [UInt8] {
        let bitLength = totalBytes &* 8
        var at = pendingCount
        withUnsafeMutableBytes(of: &pending) { p in
            p[at] = 0x80
            for i in (at + 1)..<64 { p[i] = 0 }
        }
        at += 1
        if at > 56 {
            compressPending()
            withUnsafeMutableBytes(of: &pending) { p in for i in 0..<64 { p[i] = 0 } }
        }
        withUnsafeMutableBytes(of: &pending) { p in
            p.storeBytes(of: bitLength.bigEndian, toByteOffset: 56, as: UInt64.self)
        }
        compressPending()
        pendingCount = 0
        let words = [state.0, state.1, state.2, state.3, state.4, state.5, state.6, state.7]
        return words.flatMap { w in (0..<4).map { UInt8(truncatingIfNeeded: w >> UInt32(24 - 8 * $0)) } }
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

    // MARK: - Compression

    private mutating func compressPending() {
        var block = pending   // a copy, so `state` can be mutated while reading it
        withUnsafeBytes(of: &block) { compress($0.baseAddress!, blocks: 1) }
    }

    private mutating func compress(_ data: UnsafeRawPointer, blocks: Int) {
        if useHardware {
            withUnsafeMutableBytes(of: &state) { s in
                csha256_ni_compress(s.baseAddress!.assumingMemoryBound(to: UInt32.self),
                                    data.assumingMemoryBound(to: UInt8.self), blocks)
            }
        } else {
            sha256RoundConstants.withUnsafeBufferPointer { k in
                for i in 0..<blocks { SHA256.compressReference(&state, data + 64 * i, k.baseAddress!) }
            }
        }
    }

    @inline(__always) private static func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x &>> n) | (x &<< (32 &- n)) }

    /// One round with the working variables passed in rotated order, so an unrolled group of eight
    /// needs no register shuffling.
    @inline(__always) private static func round(
        _ a: UInt32, _ b: UInt32, _ c: UInt32, _ d: inout UInt32,
        _ e: UInt32, _ f: UInt32, _ g: UInt32, _ h: inout UInt32, _ kw: UInt32
    ) {
        let t1 = h &+ (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) &+ (g ^ (e & (f ^ g))) &+ kw
        d = d &+ t1
        h = t1 &+ (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) &+ ((a & b) | (c & (a | b)))
    }

    /// FIPS 180-4 section 6.2.2, one 64-byte block; the schedule (with K added) lives on the stack.
    private static func compressReference(
        _ state: inout (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32),
        _ block: UnsafeRawPointer, _ k: UnsafePointer<UInt32>
    ) {
        withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 64) { wb in
            let w = wb.baseAddress!
            for i in 0..<16 { w[i] = UInt32(bigEndian: block.loadUnaligned(fromByteOffset: i &* 4, as: UInt32.self)) }
            for i in 16..<64 {
                let w15 = w[i &- 15], w2 = w[i &- 2]
                let s0 = rotr(w15, 7) ^ rotr(w15, 18) ^ (w15 &>> 3)
                let s1 = rotr(w2, 17) ^ rotr(w2, 19) ^ (w2 &>> 10)
                w[i] = w[i &- 16] &+ s0 &+ w[i &- 7] &+ s1
            }
            for i in 0..<64 { w[i] = w[i] &+ k[i] }
            var (a, b, c, d, e, f, g, h) = state
            var i = 0
            while i < 64 {
                round(a, b, c, &d, e, f, g, &h, w[i])
                round(h, a, b, &c, d, e, f, &g, w[i &+ 1])
                round(g, h, a, &b, c, d, e, &f, w[i &+ 2])
                round(f, g, h, &a, b, c, d, &e, w[i &+ 3])
                round(e, f, g, &h, a, b, c, &d, w[i &+ 4])
                round(d, e, f, &g, h, a, b, &c, w[i &+ 5])
                round(c, d, e, &f, g, h, a, &b, w[i &+ 6])
                round(b, c, d, &e, f, g, h, &a, w[i &+ 7])
                i &+= 8
            }
            state = (state.0 &+ a, state.1 &+ b, state.2 &+ c, state.3 &+ d,
                     state.4 &+ e, state.5 &+ f, state.6 &+ g, state.7 &+ h)
        }
    }
}

private let sha256RoundConstants: [UInt32] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]
