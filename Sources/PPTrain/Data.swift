import PPFileIO
import PPLatents
import PPSafetensors
import PPTensor

/// One file (or file pair) of training latents.
public enum DataSource: Sendable, Equatable {
    /// A safetensors file with `latents` [N, C, H, W] (f32/f16/bf16) and `labels` [N] (integer).
    case safetensors(String)
    /// Two `.npy` files: latents [N, C, H, W] (float32/float16) and labels [N] (int64/int32).
    case npy(latents: String, labels: String)
    /// A latent cache folder written by `ppfinetune encode` (LatentCache): its shards.
    case latentCache(String)
    /// An image folder (ImageFolder layout); a run encodes it with the recipe's `data.vae` first.
    case imageFolder(String)

    public var description: String {
        switch self {
        case .safetensors(let path), .latentCache(let path), .imageFolder(let path): return path
        case .npy(let latents, let labels): return "\(latents) + \(labels)"
        }
    }

    /// The files this source stands for: a cache's shards (refused while unfinished); image folders
    /// must have been encoded into a cache first.
    func files() throws -> [DataSource] {
        switch self {
        case .safetensors, .npy: return [self]
        case .latentCache(let folder): return try LatentCache.shardPaths(of: folder).map { .safetensors($0) }
        case .imageFolder(let folder):
            throw PPError(.usage, file: folder, "an image folder: encode it with ppfinetune encode, or give the recipe's data.vae so the run encodes it")
        }
    }
}

/// Latents with class labels, all in memory as float32.
public struct LatentDataset: Sendable {
    public let channels: Int
    public let side: Int
    /// [N, C, S, S]
    public private(set) var latents: [Float]
    /// [N] class labels in 0..<K
    public private(set) var labels: [Int]
    public var count: Int { labels.count }
    public var sampleSize: Int { channels * side * side }

    public init(channels: Int, side: Int, latents: [Float], labels: [Int]) {
        self.channels = channels; self.side = side; self.latents = latents; self.labels = labels
    }

    /// Loads and concatenates shards, refusing anything that does not fit a model with `channels`
    /// latent channels, side `side` and `classes` classes (checked here, before any training).
    public static func load(_ sources: [DataSource], channels: Int, side: Int, classes: Int) throws -> LatentDataset {
        var latents: [Float] = [], labels: [Int] = []
        for source in try sources.flatMap({ try $0.files() }) {
            let (x, y, origin): (TensorView, TensorView, String)
            switch source {
            case .safetensors(let path):
                let file = try SafetensorsFile.open(path)
                guard let l = file.tensors["latents"] else { throw PPError.badInput(path, entry: "latents", "missing (a data shard needs latents [N,C,H,W] and labels [N])") }
                guard let c = file.tensors["labels"] else { throw PPError.badInput(path, entry: "labels", "missing (a data shard needs latents [N,C,H,W] and labels [N])") }
                (x, y, origin) = (l, c, path)
            case .npy(let latentPath, let labelPath):
                (x, y, origin) = (try NumpyFile.read(latentPath), try NumpyFile.read(labelPath), latentPath)
            case .latentCache, .imageFolder:
                preconditionFailure("expanded by files()")
            }
            guard [DType.f32, .f16, .bf16].contains(x.dtype) else {
                throw PPError.badInput(origin, entry: "latents", "dtype \(x.dtype.shortName), expected f32, f16 or bf16")
            }
            guard x.shape.count == 4, x.shape[1] == channels, x.shape[2] == side, x.shape[3] == side else {
                throw PPError.badInput(origin, entry: "latents", "shape \(x.shape), but the model takes [N, \(channels), \(side), \(side)]")
            }
            guard !y.dtype.isFloatingPoint, y.dtype != .bool else { throw PPError.badInput(origin, entry: "labels", "dtype \(y.dtype.shortName), expected an integer type") }
            guard y.shape == [x.shape[0]] else {
                throw PPError.badInput(origin, entry: "labels", "shape \(y.shape), expected [\(x.shape[0])] (one label per latent)")
            }
            let values = x.floats()
            if let bad = values.firstIndex(where: { !$0.isFinite }) {
                throw PPError.badInput(origin, entry: "latents", "sample \(bad / (channels * side * side)) holds a non-finite value")
            }
            let classLabels = y.int64s()
            if let bad = classLabels.firstIndex(where: { $0 < 0 || $0 >= Int64(classes) }) {
                throw PPError.badInput(origin, entry: "labels", "label \(classLabels[bad]) of sample \(bad) is outside 0..<\(classes)")
            }
            latents += values
            labels += classLabels.map { Int($0) }
        }
        guard !labels.isEmpty else { throw PPError(.badInput, entry: "data", "no samples") }
        return LatentDataset(channels: channels, side: side, latents: latents, labels: labels)
    }

    /// The samples at `indices`, in that order.
    public func subset(_ indices: [Int]) -> LatentDataset {
        var x = [Float](); x.reserveCapacity(indices.count * sampleSize)
        for i in indices { x += latents[(i * sampleSize)..<((i + 1) * sampleSize)] }
        return LatentDataset(channels: channels, side: side, latents: x, labels: indices.map { labels[$0] })
    }

    /// A held-out split: `fraction` of the samples (at least one, at most all but one), chosen by a
    /// permutation from `seed`. Returns (train, validation).
    public func split(validationFraction fraction: Double, seed: UInt64) -> (train: LatentDataset, validation: LatentDataset) {
        let held = min(count - 1, max(1, Int((Double(count) * fraction).rounded())))
        var random = SeededRandom(seed: seed)
        let order = Self.permutation(count, using: &random)
        return (subset(Array(order[held...]).sorted()), subset(Array(order[..<held]).sorted()))
    }

    /// Fisher-Yates over 0..<n.
    public static func permutation(_ n: Int, using random: inout SeededRandom) -> [Int] {
        var order = Array(0..<n)
        if n > 1 { for i in stride(from: n - 1, to: 0, by: -1) { order.swapAt(i, random.below(i + 1)) } }
        return order
    }
}

/// Where the data order stands: epoch e visits the samples in a permutation drawn from (seed, e), so
/// the position alone restores the order on resume.
public struct DataCursor: Sendable, Equatable {
    public var epoch: Int
    public var position: Int
    private var order: [Int] = []
    private let seed: UInt64
    private let count: Int

    public init(count: Int, seed: UInt64, epoch: Int = 0, position: Int = 0) {
        self.count = count; self.seed = seed; self.epoch = epoch; self.position = position
        order = Self.order(count: count, seed: seed, epoch: epoch)
    }

    static func order(count: Int, seed: UInt64, epoch: Int) -> [Int] {
        var random = SeededRandom(seed: seed ^ (0xD1B5_4A32_D192_ED03 &* UInt64(epoch + 1)))
        return LatentDataset.permutation(count, using: &random)
    }

    /// The next sample index.
    public mutating func next() -> Int {
        if position == count {
            epoch += 1; position = 0
            order = Self.order(count: count, seed: seed, epoch: epoch)
        }
        defer { position += 1 }
        return order[position]
    }
}

/// A minimal `.npy` reader (format 1.0-3.0, little-endian, C order): float32, float16, int64, int32.
public enum NumpyFile {
    public static func read(_ path: String) throws -> TensorView {
        let storage = try ByteStorage(mappingFile: path)
        let bytes = storage.bytes
        guard bytes.count >= 10, Array(bytes[0..<6]) == [0x93] + Array("NUMPY".utf8) else {
            throw PPError.badInput(path, "not a .npy file (magic bytes missing)")
        }
        let major = bytes[6]
        let headerLength: Int, headerStart: Int
        if major == 1 { headerLength = Int(bytes[8]) | Int(bytes[9]) << 8; headerStart = 10 } else {
            guard bytes.count >= 12 else { throw PPError.badInput(path, "truncated .npy header") }
            headerLength = (0..<4).reduce(0) { $0 | Int(bytes[8 + $1]) << (8 * $1) }; headerStart = 12
        }
        guard headerStart + headerLength <= bytes.count else { throw PPError.badInput(path, "truncated .npy header") }
        let header = String(decoding: bytes[headerStart..<(headerStart + headerLength)], as: UTF8.self)
        func field(_ key: String) -> Substring? {
            let needle = Array("'\(key)':"), chars = Array(header)
            guard chars.count >= needle.count else { return nil }
            for start in 0...(chars.count - needle.count) where Array(chars[start..<(start + needle.count)]) == needle {
                return Substring(String(chars[(start + needle.count)...])).drop { $0 == " " }
            }
            return nil
        }
        guard let descr = field("descr"), let quoteEnd = descr.dropFirst().firstIndex(of: "'") else { throw PPError.badInput(path, entry: "descr", "missing") }
        let code = String(descr[descr.index(after: descr.startIndex)..<quoteEnd])
        let dtype: DType
        switch code {
        case "<f4": dtype = .f32
        case "<f2": dtype = .f16
        case "<i8": dtype = .i64
        case "<i4": dtype = .i32
        default: throw PPError.badInput(path, entry: "descr", "dtype '\(code)' is not supported (float32, float16, int64, int32, little-endian)")
        }
        if let order = field("fortran_order"), order.hasPrefix("True") {
            throw PPError.badInput(path, entry: "fortran_order", "Fortran order is not supported; save with np.ascontiguousarray")
        }
        guard let shapeText = field("shape"), let open = shapeText.firstIndex(of: "("), let close = shapeText.firstIndex(of: ")") else {
            throw PPError.badInput(path, entry: "shape", "missing")
        }
        let shape = shapeText[shapeText.index(after: open)..<close].split(separator: ",").compactMap { Int($0.filter { !$0.isWhitespace }) }
        let dataStart = headerStart + headerLength
        let count = shape.reduce(1, *)
        guard bytes.count - dataStart == count * dtype.byteSize else {
            throw PPError.badInput(path, "data holds \(bytes.count - dataStart) bytes, the header's shape \(shape) needs \(count * dtype.byteSize)")
        }
        return TensorView(dtype: dtype, shape: shape, storage: storage, byteOffset: dataStart)
    }
}
