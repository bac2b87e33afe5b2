import PPFileIO
import PPKernels
import PPTensor

#if canImport(Glibc)
import Glibc
#endif

/// A float32 array with its shape (row-major, NCHW for images and latents).
public struct VAETensor: Sendable, Equatable {
    public var values: [Float]
    public var shape: [Int]

    public init(values: [Float], shape: [Int]) {
        precondition(values.count == shape.reduce(1, *), "VAETensor: \(values.count) values for shape \(shape)")
        self.values = values
        self.shape = shape
    }
}

/// The encoder's diagonal Gaussian over latents, as diffusers' DiagonalGaussianDistribution.
public struct VAEPosterior: Sendable {
    /// [B, 2L, h, w]: quant_conv(encoder(x)), mean channels first, then log-variance.
    public let moments: VAETensor
    /// [B, L, h, w]
    public let mean: VAETensor
    /// [B, L, h, w], clamped to [-30, 20]
    public let logvar: VAETensor
    public let scalingFactor: Float
    public let shiftFactor: Float?

    /// z = mean + exp(logvar / 2)·noise (noise [B, L, h, w], standard normal): diffusers' `sample()`.
    public func sample(noise: VAETensor) throws -> VAETensor {
        guard noise.shape == mean.shape else {
            throw PPError(.badInput, entry: "noise", "shape \(noise.shape), expected \(mean.shape)")
        }
        var z = mean.values
        for i in z.indices { z[i] = mean.values[i] + expf(0.5 * logvar.values[i]) * noise.values[i] }
        return VAETensor(values: z, shape: mean.shape)
    }

    /// What a diffusion model trains on: (z - shift)·scale, z sampled with `noise`, or the mean (mode) when nil.
    public func latents(noise: VAETensor?) throws -> VAETensor {
        let z = try noise.map { try sample(noise: $0) } ?? mean
        let shift = shiftFactor ?? 0
        return VAETensor(values: z.values.map { ($0 - shift) * scalingFactor }, shape: z.shape)
    }
}

/// diffusers' `AutoencoderKL` in float32: encoder, decoder, quant convolutions and the posterior.
/// Images are [B, C, H, W] in [-1, 1] with H and W multiples of `config.downsamplingFactor`.
/// Batches run one image at a time through the network, so memory does not grow with the batch.
/// `@unchecked Sendable`: every stored property is a `let`, and the layers' pointers into `parameters` are
/// only read; each encode or decode allocates its own activations.
public final class AutoencoderKL: @unchecked Sendable {
    public let config: VAEConfig
    public let parameters: VAEParameterBuffer
    public let source: VAESource?
    let encoder: Encoder
    let decoder: Decoder
    let quantConv: Conv?
    let postQuantConv: Conv?

    public init(config: VAEConfig, parameters: VAEParameterBuffer, source: VAESource? = nil) {
        self.config = config
        self.parameters = parameters
        self.source = source
        let p = parameters
        encoder = Encoder(config, p)
        decoder = Decoder(config, p)
        quantConv = config.useQuantConv ? Conv(p, "quant_conv", in: 2 * config.latentChannels, out: 2 * config.latentChannels, kernel: 1) : nil
        postQuantConv = config.usePostQuantConv ? Conv(p, "post_quant_conv", in: config.latentChannels, out: config.latentChannels, kernel: 1) : nil
    }

    /// A model with random weights (tests and benchmarks).
    public static func random(_ config: VAEConfig, seed: UInt64) -> AutoencoderKL {
        let parameters = VAEParameterBuffer(layout: VAEParameterLayout(config))
        parameters.fillRandom(seed: seed)
        return AutoencoderKL(config: config, parameters: parameters)
    }

    // MARK: Public entry points

    /// images [B, inChannels, H, W] in [-1, 1] -> the posterior over latents [B, L, H/f, W/f].
    public func encode(images: VAETensor) throws -> VAEPosterior {
        let f = config.downsamplingFactor
        try checkShape(images, channels: config.inChannels, multiple: f, what: "images")
        let (batch, height, width) = (images.shape[0], images.shape[2], images.shape[3])
        let l = config.latentChannels, h = height / f, w = width / f
        var moments = [Float](repeating: 0, count: batch * 2 * l * h * w)     // [B, 2L, h, w]
        for b in 0..<batch {
            let image = FeatureMap(channels: config.inChannels, height: height, width: width)
            image.load(images.values, offset: b * config.inChannels * height * width)
            var out = encoder.forward(image)
            if let quantConv { out = quantConv.forward(out) }
            precondition(out.channels == 2 * l && out.height == h && out.width == w, "encoder output \(out.channels)x\(out.height)x\(out.width)")
            out.store(into: &moments, offset: b * 2 * l * h * w)
        }
        var mean = [Float](), logvar = [Float]()                               // [B, L, h, w] each
        mean.reserveCapacity(batch * l * h * w)
        logvar.reserveCapacity(batch * l * h * w)
        let half = l * h * w
        for b in 0..<batch {
            let base = b * 2 * half
            mean += moments[base ..< base + half]
            logvar += moments[base + half ..< base + 2 * half].map {
                min(max($0, VAEConfig.logvarRange.lowerBound), VAEConfig.logvarRange.upperBound)
            }
        }
        return VAEPosterior(moments: VAETensor(values: moments, shape: [batch, 2 * l, h, w]),
                            mean: VAETensor(values: mean, shape: [batch, l, h, w]),
                            logvar: VAETensor(values: logvar, shape: [batch, l, h, w]),
                            scalingFactor: config.scalingFactor, shiftFactor: config.shiftFactor)
    }

    /// z [B, L, h, w] as the encoder gives it (no scaling) -> images [B, outChannels, h·f, w·f].
    public func decode(z: VAETensor) throws -> VAETensor {
        try checkShape(z, channels: config.latentChannels, multiple: 1, what: "latents")
        let (batch, h, w) = (z.shape[0], z.shape[2], z.shape[3])
        let f = config.downsamplingFactor, c = config.outChannels
        var images = [Float](repeating: 0, count: batch * c * h * f * w * f)  // [B, C, H, W]
        for b in 0..<batch {
            var latent = FeatureMap(channels: config.latentChannels, height: h, width: w)
            latent.load(z.values, offset: b * config.latentChannels * h * w)
            if let postQuantConv { latent = postQuantConv.forward(latent) }
            let out = decoder.forward(latent)
            out.store(into: &images, offset: b * c * h * f * w * f)
        }
        return VAETensor(values: images, shape: [batch, c, h * f, w * f])
    }

    /// Latents as a diffusion model produces them -> images: decode(latents / scale + shift).
    public func decode(latents: VAETensor) throws -> VAETensor {
        try decode(z: unscale(latents))
    }

    /// (z - shift)·scale: encoder latents to the model's latent space.
    public func scale(_ z: VAETensor) -> VAETensor {
        let shift = config.shiftFactor ?? 0
        return VAETensor(values: z.values.map { ($0 - shift) * config.scalingFactor }, shape: z.shape)
    }

    /// latents / scale + shift: the model's latent space back to encoder latents.
    public func unscale(_ latents: VAETensor) -> VAETensor {
        let shift = config.shiftFactor ?? 0
        return VAETensor(values: latents.values.map { $0 / config.scalingFactor + shift }, shape: latents.shape)
    }

    func checkShape(_ t: VAETensor, channels: Int, multiple: Int, what: String) throws {
        guard t.shape.count == 4, t.shape[1] == channels, t.shape[0] > 0, t.shape[2] > 0, t.shape[3] > 0,
              t.shape[2] % multiple == 0, t.shape[3] % multiple == 0 else {
            throw PPError(.badInput, entry: what,
                "shape \(t.shape), expected [B, \(channels), H, W] with H and W positive\(multiple > 1 ? " multiples of \(multiple)" : "")")
        }
    }
}

// MARK: - Activations and layers

/// One image's activation [C, H, W], freed when the last reference goes (bounded memory).
final class FeatureMap {
    let channels: Int
    let height: Int
    let width: Int
    /// [channels, height, width]; every producer writes all of it.
    let data: UnsafeMutablePointer<Float>
    var plane: Int { height * width }
    var count: Int { channels * height * width }

    init(channels: Int, height: Int, width: Int) {
        self.channels = channels
        self.height = height
        self.width = width
        data = .allocate(capacity: max(1, channels * height * width))
    }

    deinit { data.deallocate() }

    func load(_ values: [Float], offset: Int) {
        values.withUnsafeBufferPointer { data.update(from: $0.baseAddress! + offset, count: count) }
    }

    func store(into values: inout [Float], offset: Int) {
        values.withUnsafeMutableBufferPointer { ($0.baseAddress! + offset).update(from: data, count: count) }
    }
}

/// A convolution's parameters: weight [out, in, k, k], bias [out].
struct Conv {
    let weight: UnsafePointer<Float>
    let bias: UnsafePointer<Float>
    let inChannels: Int
    let outChannels: Int
    let kernel: Int

    init(_ p: VAEParameterBuffer, _ name: String, in inChannels: Int, out outChannels: Int, kernel: Int) {
        weight = UnsafePointer(p.pointer("\(name).weight"))
        bias = UnsafePointer(p.pointer("\(name).bias"))
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernel = kernel
    }

    /// A "same" convolution (3x3 pad 1 or 1x1), optionally over the input upsampled x2 and with a
    /// per-channel transform (GroupNorm + SiLU) applied as it is read.
    func forward(_ x: FeatureMap, upsample: Bool = false, transform: ChannelMap? = nil) -> FeatureMap {
        let g = Conv2DGeometry.same(inChannels: inChannels, outChannels: outChannels, height: x.height, width: x.width,
                                    kernel: kernel, upsample: upsample)
        return run(x, g, transform: transform)
    }

    /// output = conv(x) written into `into` (which already holds a residual): out += conv(x) + bias.
    func accumulate(_ x: FeatureMap, into out: FeatureMap, transform: ChannelMap?) {
        let g = Conv2DGeometry.same(inChannels: inChannels, outChannels: outChannels, height: x.height, width: x.width, kernel: kernel)
        precondition(out.channels == outChannels && out.height == g.outHeight && out.width == g.outWidth)
        convolve(x, g, into: out, transform: transform, accumulate: true)
    }

    /// diffusers' Downsample2D: zero pad (left 0, right 1, top 0, bottom 1), then 3x3 stride 2, no padding.
    func downsample(_ x: FeatureMap) -> FeatureMap {
        let g = Conv2DGeometry(inChannels: inChannels, outChannels: outChannels, height: x.height, width: x.width,
                               kernel: 3, stride: 2, padTop: 0, padLeft: 0, padBottom: 1, padRight: 1)
        return run(x, g, transform: nil)
    }

    private func run(_ x: FeatureMap, _ g: Conv2DGeometry, transform: ChannelMap?) -> FeatureMap {
        precondition(x.channels == inChannels, "conv: \(x.channels) channels in, expected \(inChannels)")
        let out = FeatureMap(channels: outChannels, height: g.outHeight, width: g.outWidth)
        convolve(x, g, into: out, transform: transform, accumulate: false)
        return out
    }

    private func convolve(_ x: FeatureMap, _ g: Conv2DGeometry, into out: FeatureMap, transform: ChannelMap?, accumulate: Bool) {
        if let transform {
            transform.scale.withUnsafeBufferPointer { scale in
                transform.shift.withUnsafeBufferPointer { shift in
                    Kernels.conv2d(input: x.data, weight: weight, bias: bias, output: out.data, geometry: g,
                                   transform: ChannelTransform(scale: scale.baseAddress!, shift: shift.baseAddress!, silu: transform.silu),
                                   accumulate: accumulate)
                }
            }
        } else {
            Kernels.conv2d(input: x.data, weight: weight, bias: bias, output: out.data, geometry: g, accumulate: accumulate)
        }
    }
}

/// GroupNorm folded into a per-channel map (x·scale + shift), with SiLU after it when `silu`.
struct ChannelMap {
    /// [C] each
    var scale: [Float]
    var shift: [Float]
    var silu: Bool
}

/// GroupNorm parameters: gamma, beta [C].
struct Norm {
    let gamma: UnsafePointer<Float>
    let beta: UnsafePointer<Float>
    let channels: Int
    let groups: Int

    init(_ p: VAEParameterBuffer, _ name: String, channels: Int, groups: Int) {
        gamma = UnsafePointer(p.pointer("\(name).weight"))
        beta = UnsafePointer(p.pointer("\(name).bias"))
        self.channels = channels
        self.groups = groups
    }

    /// This norm's statistics over `x` folded with gamma and beta (eps 1e-6).
    func map(_ x: FeatureMap, silu: Bool) -> ChannelMap {
        precondition(x.channels == channels, "norm: \(x.channels) channels, expected \(channels)")
        var scale = [Float](repeating: 0, count: channels), shift = [Float](repeating: 0, count: channels)
        scale.withUnsafeMutableBufferPointer { s in
            shift.withUnsafeMutableBufferPointer { b in
                Kernels.groupNormChannelMap(x.data, channels: channels, plane: x.plane, groups: groups, eps: VAEConfig.normEps,
                                            gamma: gamma, beta: beta, scale: s.baseAddress!, shift: b.baseAddress!)
            }
        }
        return ChannelMap(scale: scale, shift: shift, silu: silu)
    }
}

/// diffusers' ResnetBlock2D without time embedding: norm1, SiLU, conv1, norm2, SiLU, conv2, plus the
/// input (through a 1x1 conv_shortcut when the channel count changes); output_scale_factor 1.
struct Resnet {
    let norm1: Norm
    let conv1: Conv
    let norm2: Norm
    let conv2: Conv
    let shortcut: Conv?

    init(_ p: VAEParameterBuffer, _ name: String, in inChannels: Int, out outChannels: Int, groups: Int) {
        norm1 = Norm(p, "\(name).norm1", channels: inChannels, groups: groups)
        conv1 = Conv(p, "\(name).conv1", in: inChannels, out: outChannels, kernel: 3)
        norm2 = Norm(p, "\(name).norm2", channels: outChannels, groups: groups)
        conv2 = Conv(p, "\(name).conv2", in: outChannels, out: outChannels, kernel: 3)
        shortcut = inChannels == outChannels ? nil : Conv(p, "\(name).conv_shortcut", in: inChannels, out: outChannels, kernel: 1)
    }

    /// Consumes `x`: with an identity shortcut the result is accumulated into x's own buffer.
    func forward(_ x: FeatureMap) -> FeatureMap {
        let hidden = conv1.forward(x, transform: norm1.map(x, silu: true))     // [Cout, H, W]
        let hiddenMap = norm2.map(hidden, silu: true)
        let out = shortcut?.forward(x) ?? x                                       // [Cout, H, W], the residual
        conv2.accumulate(hidden, into: out, transform: hiddenMap)
        return out
    }
}

/// The mid block's single-head self-attention over the H·W pixels (diffusers Attention with
/// group_norm, to_q/to_k/to_v/to_out.0 Linear layers, residual connection, rescale 1).
struct Attention {
    let norm: Norm
    let query: (weight: UnsafePointer<Float>, bias: UnsafePointer<Float>)
    let key: (weight: UnsafePointer<Float>, bias: UnsafePointer<Float>)
    let value: (weight: UnsafePointer<Float>, bias: UnsafePointer<Float>)
    let output: (weight: UnsafePointer<Float>, bias: UnsafePointer<Float>)
    let channels: Int

    /// Upper bound (floats) of one block of attention scores [queries, T]: 16 MiB, so a 512x512 image
    /// (4096 latent-level tokens, 64 MiB of scores) runs in 4 query blocks.
    static let scoreBudget = 1 << 22

    init(_ p: VAEParameterBuffer, _ name: String, channels: Int, groups: Int) {
        norm = Norm(p, "\(name).group_norm", channels: channels, groups: groups)
        func linear(_ n: String) -> (UnsafePointer<Float>, UnsafePointer<Float>) {
            (UnsafePointer(p.pointer("\(name).\(n).weight")), UnsafePointer(p.pointer("\(name).\(n).bias")))
        }
        query = linear("to_q")
        key = linear("to_k")
        value = linear("to_v")
        output = linear("to_out.0")
        self.channels = channels
    }

    /// x [C, T] += to_out(softmax(q·kᵀ/√C)·v), in place.
    func forward(_ x: FeatureMap) {
        let c = channels, t = x.plane
        let map = norm.map(x, silu: false)
        let normalized = UnsafeMutablePointer<Float>.allocate(capacity: c * t)      // [C, T], later o [T, C]
        defer { normalized.deallocate() }
        map.scale.withUnsafeBufferPointer { s in
            map.shift.withUnsafeBufferPointer { b in
                Kernels.applyChannelMap(x.data, normalized, channels: c, plane: t, scale: s.baseAddress!, shift: b.baseAddress!, silu: false)
            }
        }
        // q, k, v [T, C] = normalizedᵀ · Wᵀ + b
        let q = UnsafeMutablePointer<Float>.allocate(capacity: t * c), k = UnsafeMutablePointer<Float>.allocate(capacity: t * c)
        let v = UnsafeMutablePointer<Float>.allocate(capacity: t * c)
        defer { q.deallocate(); k.deallocate(); v.deallocate() }
        for (projection, result) in [(query, q), (key, k), (value, v)] {
            Parallel.forChunks(t, minimumPerChunk: max(1, 16384 / c)) { rows in
                for row in rows { (result + row * c).update(from: projection.bias, count: c) }
            }
            BLAS.sgemm(transposeA: true, transposeB: true, m: t, n: c, k: c, a: normalized, lda: t,
                       b: projection.weight, ldb: c, beta: 1, c: result, ldc: c)
        }
        // o [T, C] = softmax(q·kᵀ·scale)·v, in blocks of query rows; o reuses `normalized`.
        let o = normalized
        let blockRows = max(1, min(t, Attention.scoreBudget / t))
        let scores = UnsafeMutablePointer<Float>.allocate(capacity: blockRows * t)    // [blockRows, T]
        defer { scores.deallocate() }
        let scale = 1 / Float(c).squareRoot()
        var start = 0
        while start < t {
            let rows = min(blockRows, t - start)
            BLAS.sgemm(transposeA: false, transposeB: true, m: rows, n: t, k: c, alpha: scale, a: q + start * c, lda: c,
                       b: k, ldb: c, beta: 0, c: scores, ldc: t)
            Kernels.softmaxRows(scores, rows: rows, cols: t)
            BLAS.sgemm(transposeA: false, transposeB: false, m: rows, n: c, k: t, a: scores, lda: t,
                       b: v, ldb: c, beta: 0, c: o + start * c, ldc: c)
            start += rows
        }
        // x [C, T] += Wout · oᵀ + bout (the residual connection)
        let bias = output.bias
        Parallel.forChunks(c, minimumPerChunk: max(1, 16384 / t)) { channelRange in
            for ch in channelRange {
                let row = x.data + ch * t
                let b = bias[ch]
                for i in 0..<t { row[i] += b }
            }
        }
        BLAS.sgemm(transposeA: false, transposeB: true, m: c, n: t, k: c, a: output.weight, lda: c,
                   b: o, ldb: c, beta: 1, c: x.data, ldc: t)
    }
}

/// UNetMidBlock2D as the VAE uses it: resnet, attention (unless disabled), resnet.
struct MidBlock {
    let first: Resnet
    let attention: Attention?
    let second: Resnet

    init(_ p: VAEParameterBuffer, _ name: String, channels: Int, groups: Int, attention withAttention: Bool) {
        first = Resnet(p, "\(name).resnets.0", in: channels, out: channels, groups: groups)
        attention = withAttention ? Attention(p, "\(name).attentions.0", channels: channels, groups: groups) : nil
        second = Resnet(p, "\(name).resnets.1", in: channels, out: channels, groups: groups)
    }

    func forward(_ x: FeatureMap) -> FeatureMap {
        let h = first.forward(x)
        attention?.forward(h)
        return second.forward(h)
    }
}

/// conv_in, DownEncoderBlock2D per level (resnets, then a stride-2 downsample except at the last
/// level), the mid block, GroupNorm + SiLU + conv_out to 2L channels.
struct Encoder {
    let convIn: Conv
    let blocks: [(resnets: [Resnet], downsample: Conv?)]
    let mid: MidBlock
    let normOut: Norm
    let convOut: Conv

    init(_ config: VAEConfig, _ p: VAEParameterBuffer) {
        let channels = config.blockOutChannels, groups = config.normGroups, last = channels[channels.count - 1]
        convIn = Conv(p, "encoder.conv_in", in: config.inChannels, out: channels[0], kernel: 3)
        var previous = channels[0]
        var built: [(resnets: [Resnet], downsample: Conv?)] = []
        for (i, c) in channels.enumerated() {
            let resnets = (0..<config.layersPerBlock).map { j in
                Resnet(p, "encoder.down_blocks.\(i).resnets.\(j)", in: j == 0 ? previous : c, out: c, groups: groups)
            }
            let down = i < channels.count - 1 ? Conv(p, "encoder.down_blocks.\(i).downsamplers.0.conv", in: c, out: c, kernel: 3) : nil
            built.append((resnets, down))
            previous = c
        }
        blocks = built
        mid = MidBlock(p, "encoder.mid_block", channels: last, groups: groups, attention: config.midBlockAttention)
        normOut = Norm(p, "encoder.conv_norm_out", channels: last, groups: groups)
        convOut = Conv(p, "encoder.conv_out", in: last, out: 2 * config.latentChannels, kernel: 3)
    }

    /// image [Cin, H, W] -> [2L, H/f, W/f]
    func forward(_ image: FeatureMap) -> FeatureMap {
        var h = convIn.forward(image)
        for block in blocks {
            for resnet in block.resnets { h = resnet.forward(h) }
            if let down = block.downsample { h = down.downsample(h) }
        }
        h = mid.forward(h)
        return convOut.forward(h, transform: normOut.map(h, silu: true))
    }
}

/// conv_in, the mid block, UpDecoderBlock2D per level coarsest first (layers+1 resnets, then nearest
/// x2 upsampling and a 3x3 conv except at the last level), GroupNorm + SiLU + conv_out.
struct Decoder {
    let convIn: Conv
    let mid: MidBlock
    let blocks: [(resnets: [Resnet], upsample: Conv?)]
    let normOut: Norm
    let convOut: Conv

    init(_ config: VAEConfig, _ p: VAEParameterBuffer) {
        let channels = config.blockOutChannels, groups = config.normGroups, last = channels[channels.count - 1]
        convIn = Conv(p, "decoder.conv_in", in: config.latentChannels, out: last, kernel: 3)
        mid = MidBlock(p, "decoder.mid_block", channels: last, groups: groups, attention: config.midBlockAttention)
        var previous = last
        var built: [(resnets: [Resnet], upsample: Conv?)] = []
        for (i, c) in channels.reversed().enumerated() {
            let resnets = (0...config.layersPerBlock).map { j in
                Resnet(p, "decoder.up_blocks.\(i).resnets.\(j)", in: j == 0 ? previous : c, out: c, groups: groups)
            }
            let up = i < channels.count - 1 ? Conv(p, "decoder.up_blocks.\(i).upsamplers.0.conv", in: c, out: c, kernel: 3) : nil
            built.append((resnets, up))
            previous = c
        }
        blocks = built
        normOut = Norm(p, "decoder.conv_norm_out", channels: channels[0], groups: groups)
        convOut = Conv(p, "decoder.conv_out", in: channels[0], out: config.outChannels, kernel: 3)
    }

    /// z [L, h, w] (after post_quant_conv) -> image [Cout, h·f, w·f]
    func forward(_ z: FeatureMap) -> FeatureMap {
        var h = convIn.forward(z)
        h = mid.forward(h)
        for block in blocks {
            for resnet in block.resnets { h = resnet.forward(h) }
            if let up = block.upsample { h = up.forward(h, upsample: true) }
        }
        return convOut.forward(h, transform: normOut.map(h, silu: true))
    }
}
