import CZlib

/// CRC-32 (IEEE, the one zip uses) by zlib's `crc32_z`, which also takes lengths beyond 4 GiB in one call.
public struct CRC32: Sendable {
    private var state: UInt = 0  // zlib's running value: 0 to start, no pre- or post-inversion needed

    public init() {}

    public var value: UInt32 { UInt32(truncatingIfNeeded: state) }

    public mutating func update(_ data: UnsafeRawBufferPointer) {
        guard let base = data.baseAddress, data.count > 0 else { return }
        state = crc32_z(state, base.assumingMemoryBound(to: Bytef.self), data.count)
    }

    public mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var crc = CRC32()
        crc.update(bytes)
        return crc.value
    }
}
