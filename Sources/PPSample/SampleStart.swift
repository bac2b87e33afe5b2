import PPFileIO
import PPTensor

/// What a sampling run starts from: noise z [B, C, S, S] and labels y [B].
public struct SampleStart: Sendable {
    /// [B, C, S, S]
    public var noise: [Float]
    /// [B]
    public var labels: [Int32]
    public var batch: Int
    public var channels: Int
    public var side: Int

    /// Noise from `seed`; labels as given, or one class per sample drawn from the same seed.
    public static func seeded(_ seed: UInt64, batch: Int, channels: Int, side: Int, labels: [Int32]?, numClasses: Int) throws -> SampleStart {
        guard batch > 0, channels > 0, side > 0 else { throw PPError(.usage, "batch, channels and side must be positive") }
        var random = SeededRandom(seed: seed)
        let noise = random.normals(batch * channels * side * side)
        let y: [Int32]
        if let labels {
            guard labels.count == batch else { throw PPError(.usage, "\(labels.count) labels for a batch of \(batch)") }
            y = labels
        } else {
            y = (0..<batch).map { _ in Int32(random.below(numClasses)) }
        }
        try checkLabels(y, numClasses: numClasses)
        return SampleStart(noise: noise, labels: y, batch: batch, channels: channels, side: side)
    }

    /// Given noise `z` of shape [B, C, H, W] (H == W) and labels `y` [B] (or all `defaultLabel`).
    public static func given(z: [Float], shape: [Int], labels: [Int32]?, defaultLabel: Int32, numClasses: Int) throws -> SampleStart {
        guard shape.count == 4, shape[2] == shape[3], shape.allSatisfy({ $0 > 0 }) else {
            throw PPError(.usage, entry: "z", "shape \(shape), expected [B, C, S, S]")
        }
        guard shape.reduce(1, *) == z.count else { throw PPError(.usage, entry: "z", "\(z.count) values for shape \(shape)") }
        let y = labels ?? [Int32](repeating: defaultLabel, count: shape[0])
        guard y.count == shape[0] else { throw PPError(.usage, entry: "y", "\(y.count) labels for \(shape[0]) noise samples") }
        try checkLabels(y, numClasses: numClasses)
        return SampleStart(noise: z, labels: y, batch: shape[0], channels: shape[1], side: shape[2])
    }

    /// Labels 0..<K are classes, K is the null (unconditional) class.
    static func checkLabels(_ labels: [Int32], numClasses: Int) throws {
        if let bad = labels.first(where: { $0 < 0 || Int($0) > numClasses }) {
            throw PPError(.usage, entry: "y", "label \(bad) outside 0...\(numClasses) (\(numClasses) = unconditional)")
        }
    }
}
