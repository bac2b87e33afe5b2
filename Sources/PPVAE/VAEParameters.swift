import PPFileIO
import PPTensor

/// Every parameter of an `AutoencoderKL` under its diffusers name, with its shape, in the order of
/// diffusers' state_dict. The loader checks a file against this list, the model reads its weights
/// through it, and tests and benchmarks fill it with random values.
public struct VAEParameterLayout: Sendable {
    public struct Entry: Sendable {
        public var name: String
        public var shape: [Int]
        /// Offset (in floats) inside the flat parameter buffer.
        public var offset: Int
        public var count: Int { shape.reduce(1, *) }
    }

    public let entries: [Entry]
    public let totalCount: Int
    private let index: [String: Int]

    public init(_ config: VAEConfig) {
        var list: [(String, [Int])] = []
        func conv(_ name: String, _ outC: Int, _ inC: Int, _ k: Int) {
            list.append(("\(name).weight", [outC, inC, k, k]))
            list.append(("\(name).bias", [outC]))
        }
        func norm(_ name: String, _ c: Int) {
            list.append(("\(name).weight", [c]))
            list.append(("\(name).bias", [c]))
        }
        func linear(_ name: String, _ c: Int) {
            list.append(("\(name).weight", [c, c]))
            list.append(("\(name).bias", [c]))
        }
        func resnet(_ name: String, _ inC: Int, _ outC: Int) {
            norm("\(name).norm1", inC)
            conv("\(name).conv1", outC, inC, 3)
            norm("\(name).norm2", outC)
            conv("\(name).conv2", outC, outC, 3)
            if inC != outC { conv("\(name).conv_shortcut", outC, inC, 1) }
        }
        func mid(_ name: String, _ c: Int) {
            if config.midBlockAttention {
                let a = "\(name).attentions.0"
                norm("\(a).group_norm", c)
                linear("\(a).to_q", c)
                linear("\(a).to_k", c)
                linear("\(a).to_v", c)
                linear("\(a).to_out.0", c)
            }
            resnet("\(name).resnets.0", c, c)
            resnet("\(name).resnets.1", c, c)
        }
        let channels = config.blockOutChannels
        let last = channels[channels.count - 1]
        // Encoder
        conv("encoder.conv_in", channels[0], config.inChannels, 3)
        var previous = channels[0]
        for (i, c) in channels.enumerated() {
            for j in 0..<config.layersPerBlock {
                resnet("encoder.down_blocks.\(i).resnets.\(j)", j == 0 ? previous : c, c)
            }
            if i < channels.count - 1 { conv("encoder.down_blocks.\(i).downsamplers.0.conv", c, c, 3) }
            previous = c
        }
        mid("encoder.mid_block", last)
        norm("encoder.conv_norm_out", last)
        conv("encoder.conv_out", 2 * config.latentChannels, last, 3)
        // Decoder: levels coarsest first.
        conv("decoder.conv_in", last, config.latentChannels, 3)
        mid("decoder.mid_block", last)
        previous = last
        for (i, c) in channels.reversed().enumerated() {
            for j in 0...config.layersPerBlock {
                resnet("decoder.up_blocks.\(i).resnets.\(j)", j == 0 ? previous : c, c)
            }
            if i < channels.count - 1 { conv("decoder.up_blocks.\(i).upsamplers.0.conv", c, c, 3) }
            previous = c
        }
        norm("decoder.conv_norm_out", channels[0])
        conv("decoder.conv_out", config.outChannels, channels[0], 3)
        if config.useQuantConv { conv("quant_conv", 2 * config.latentChannels, 2 * config.latentChannels, 1) }
        if config.usePostQuantConv { conv("post_quant_conv", config.latentChannels, config.latentChannels, 1) }

        var offset = 0
        var built: [Entry] = []
        for (name, shape) in list {
            built.append(Entry(name: name, shape: shape, offset: offset))
            offset += shape.reduce(1, *)
        }
        entries = built
        totalCount = offset
        index = Dictionary(uniqueKeysWithValues: built.enumerated().map { ($1.name, $0) })
    }

    public subscript(name: String) -> Entry? { index[name].map { entries[$0] } }
    public var names: [String] { entries.map(\.name) }

    /// True for the attention projections: diffusers stores them as Linear [C, C]; the ldm layout
    /// and old diffusers conversions as 1x1 convolutions [C, C, 1, 1], the same values.
    static func acceptsPointwiseConvShape(_ name: String) -> Bool {
        name.contains(".attentions.0.to_") && name.hasSuffix(".weight")
    }
}

/// The parameters of one VAE in a single float32 allocation; layers hold pointers into it.
/// `@unchecked Sendable` because of the raw pointer: the values are written while the buffer is filled
/// (before it is shared) and only read afterwards.
public final class VAEParameterBuffer: @unchecked Sendable {
    public let layout: VAEParameterLayout
    /// [layout.totalCount]
    public let values: UnsafeMutablePointer<Float>

    public init(layout: VAEParameterLayout) {
        self.layout = layout
        values = .allocate(capacity: max(1, layout.totalCount))
        values.initialize(repeating: 0, count: max(1, layout.totalCount))
    }

    deinit { values.deallocate() }

    /// The parameter's values; the name must be in the layout (a programming error otherwise).
    public func pointer(_ name: String) -> UnsafeMutablePointer<Float> {
        guard let entry = layout[name] else { preconditionFailure("no parameter \(name) in the VAE layout") }
        return values + entry.offset
    }

    /// Copies named tensors (diffusers names, any float dtype) in, after the three checks: no unused
    /// key, every parameter present, every shape right. Errors name `origin` and the key.
    public func fill(from tensors: TensorDict, origin: String) throws {
        let unused = tensors.names.filter { layout[$0] == nil }
        if let first = unused.first {
            throw PPError.badInput(origin, entry: first,
                "unexpected key for this VAE (\(unused.count) unused key\(unused.count == 1 ? "" : "s"); the architecture is inferred from the weights)")
        }
        for entry in layout.entries {
            guard let tensor = tensors[entry.name] else {
                throw PPError.badInput(origin, entry: entry.name, "missing (expected shape \(entry.shape))")
            }
            let squeezed = VAEParameterLayout.acceptsPointwiseConvShape(entry.name) && tensor.shape == entry.shape + [1, 1]
            guard tensor.shape == entry.shape || squeezed else {
                throw PPError.badInput(origin, entry: entry.name, "shape \(tensor.shape), expected \(entry.shape)")
            }
            guard tensor.dtype.isFloatingPoint else {
                throw PPError.badInput(origin, entry: entry.name, "dtype \(tensor.dtype.shortName) is not a floating-point type")
            }
            tensor.writeFloats(into: UnsafeMutableBufferPointer(start: values + entry.offset, count: entry.count))
            // The file's pages are not needed again: resident memory holds the weights once, not twice.
            if let range = tensor.contiguousByteRange { tensor.storage.dropPages(range) }
        }
    }

    /// Random weights for tests and benchmarks: convolutions and linears N(0, 1/fan_in) so activations
    /// keep their scale through the network, norms gamma ~ 1 + N(0, 0.1²), biases N(0, 0.02²).
    public func fillRandom(seed: UInt64) {
        var random = SeededRandom(seed: seed)
        for entry in layout.entries {
            let p = values + entry.offset
            let isNorm = entry.name.contains("norm")
            if entry.shape.count >= 2 {
                let fanIn = entry.shape.dropFirst().reduce(1, *)
                let std = 1 / Double(fanIn).squareRoot()
                for i in 0..<entry.count { p[i] = Float(random.normal() * std) }
            } else if isNorm && entry.name.hasSuffix(".weight") {
                for i in 0..<entry.count { p[i] = Float(1 + 0.1 * random.normal()) }
            } else {
                for i in 0..<entry.count { p[i] = Float(0.02 * random.normal()) }
            }
        }
    }

    /// The parameters as named float32 tensors (diffusers names and shapes), e.g. to write a file.
    public func tensors() -> TensorDict {
        var dict = TensorDict()
        for entry in layout.entries {
            dict[entry.name] = TensorView(floats: Array(UnsafeBufferPointer(start: values + entry.offset, count: entry.count)), shape: entry.shape)
        }
        return dict
    }
}
