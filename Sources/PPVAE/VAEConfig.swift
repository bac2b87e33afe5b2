import PPFileIO
import PPJSON
import PPTensor

/// The architecture and latent conventions of a diffusers `AutoencoderKL` (the Stable Diffusion VAE
/// family): DownEncoderBlock2D / UpDecoderBlock2D blocks, SiLU, GroupNorm eps 1e-6, a single-head
/// attention in each mid block.
public struct VAEConfig: Equatable, Sendable {
    /// Image channels in and out (3).
    public var inChannels: Int
    public var outChannels: Int
    public var latentChannels: Int
    /// Channels of each resolution level, finest first (SD: 128, 256, 512, 512).
    public var blockOutChannels: [Int]
    /// Resnets per encoder block; decoder blocks have one more.
    public var layersPerBlock: Int
    public var normGroups: Int
    /// Latents a diffusion model sees are (z - shift)·scale (SD 1/2: scale 0.18215, no shift).
    public var scalingFactor: Float
    public var shiftFactor: Float?
    public var useQuantConv: Bool
    public var usePostQuantConv: Bool
    public var midBlockAttention: Bool

    /// GroupNorm eps of every norm in diffusers' VAE (resnets, attention, conv_norm_out).
    public static let normEps: Float = 1e-6
    /// diffusers clamps the posterior's log-variance to this range.
    public static let logvarRange: ClosedRange<Float> = -30 ... 20

    public init(inChannels: Int = 3, outChannels: Int = 3, latentChannels: Int = 4, blockOutChannels: [Int],
                layersPerBlock: Int, normGroups: Int = 32, scalingFactor: Float = 0.18215, shiftFactor: Float? = nil,
                useQuantConv: Bool = true, usePostQuantConv: Bool = true, midBlockAttention: Bool = true) {
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.latentChannels = latentChannels
        self.blockOutChannels = blockOutChannels
        self.layersPerBlock = layersPerBlock
        self.normGroups = normGroups
        self.scalingFactor = scalingFactor
        self.shiftFactor = shiftFactor
        self.useQuantConv = useQuantConv
        self.usePostQuantConv = usePostQuantConv
        self.midBlockAttention = midBlockAttention
    }

    /// The Stable Diffusion 1.x/2.x VAE (`sd-vae-ft-mse`, `sd-vae-ft-ema`, the kl-f8 first stage).
    public static let stableDiffusion = VAEConfig(blockOutChannels: [128, 256, 512, 512], layersPerBlock: 2)

    /// Image side / latent side: 2^(blocks - 1).
    public var downsamplingFactor: Int { 1 << (blockOutChannels.count - 1) }

    /// A one-line summary for messages and reports.
    public var summary: String {
        "blocks \(blockOutChannels.map(String.init).joined(separator: "/")), \(layersPerBlock) layer\(layersPerBlock == 1 ? "" : "s") per block, "
            + "\(normGroups) groups, \(latentChannels) latent channels, scaling \(scalingFactor)"
            + (shiftFactor.map { ", shift \($0)" } ?? "")
    }

    /// The architecture is one this implementation runs: groups divide every norm's channels.
    public func validate(origin: String?) throws {
        guard !blockOutChannels.isEmpty, blockOutChannels.allSatisfy({ $0 > 0 }), layersPerBlock > 0,
              inChannels > 0, outChannels > 0, latentChannels > 0 else {
            throw PPError.badInput(origin, "VAE config has empty or non-positive sizes (\(summary))")
        }
        guard normGroups > 0, blockOutChannels.allSatisfy({ $0 % normGroups == 0 }) else {
            throw PPError.badInput(origin, entry: "norm_num_groups",
                "\(normGroups) groups do not divide the block channels \(blockOutChannels)")
        }
        guard scalingFactor.isFinite, scalingFactor != 0 else {
            throw PPError.badInput(origin, entry: "scaling_factor", "\(scalingFactor) is not a usable scaling factor")
        }
    }
}

/// What the user can set over the file's config (or the defaults of an ldm file, which has none).
public struct VAEOverrides: Sendable {
    public var normGroups: Int?
    public var scalingFactor: Float?
    public var shiftFactor: Float?

    public init(normGroups: Int? = nil, scalingFactor: Float? = nil, shiftFactor: Float? = nil) {
        self.normGroups = normGroups
        self.scalingFactor = scalingFactor
        self.shiftFactor = shiftFactor
    }
}

/// What a diffusers `config.json` of an `AutoencoderKL` says; every field optional, checked against
/// the weights' shapes by the loader.
struct DiffusersVAEConfig {
    var inChannels: Int?
    var outChannels: Int?
    var latentChannels: Int?
    var blockOutChannels: [Int]?
    var layersPerBlock: Int?
    var normGroups: Int?
    var scalingFactor: Float?
    var shiftFactor: Float?
    var useQuantConv: Bool?
    var usePostQuantConv: Bool?
    var midBlockAttention: Bool?

    /// True when `config` names the class this reader handles.
    static func isAutoencoderKL(_ config: JSONValue) -> Bool {
        config["_class_name"]?.stringValue == "AutoencoderKL"
    }

    /// Reads the fields; refuses block types, activations or features this implementation lacks.
    init(_ config: JSONValue, origin: String) throws {
        func int(_ key: String) throws -> Int? {
            guard let value = config[key], !value.isNull else { return nil }
            guard let v = value.intValue, v > 0, v < 1 << 20 else { throw PPError.badInput(origin, entry: key, "expected a positive integer, found \(value.kindDescription)") }
            return Int(v)
        }
        func float(_ key: String) throws -> Float? {
            guard let value = config[key], !value.isNull else { return nil }
            guard let v = value.doubleValue, v.isFinite else { throw PPError.badInput(origin, entry: key, "expected a number, found \(value.kindDescription)") }
            return Float(v)
        }
        func bool(_ key: String) throws -> Bool? {
            guard let value = config[key], !value.isNull else { return nil }
            guard let v = value.boolValue else { throw PPError.badInput(origin, entry: key, "expected true or false, found \(value.kindDescription)") }
            return v
        }
        func strings(_ key: String) throws -> [String]? {
            guard let value = config[key], !value.isNull else { return nil }
            guard let items = value.arrayValue?.compactMap(\.stringValue), items.count == value.arrayValue?.count else {
                throw PPError.badInput(origin, entry: key, "expected a list of strings")
            }
            return items
        }
        inChannels = try int("in_channels")
        outChannels = try int("out_channels")
        latentChannels = try int("latent_channels")
        layersPerBlock = try int("layers_per_block")
        normGroups = try int("norm_num_groups")
        scalingFactor = try float("scaling_factor")
        shiftFactor = try float("shift_factor")
        useQuantConv = try bool("use_quant_conv")
        usePostQuantConv = try bool("use_post_quant_conv")
        midBlockAttention = try bool("mid_block_add_attention")
        if let value = config["block_out_channels"], !value.isNull {
            guard let items = value.arrayValue, !items.isEmpty,
                  case let channels = items.compactMap({ $0.intValue.map(Int.init) }), channels.count == items.count,
                  channels.allSatisfy({ $0 > 0 && $0 < 1 << 20 }) else {
                throw PPError.badInput(origin, entry: "block_out_channels", "expected a non-empty list of positive integers")
            }
            blockOutChannels = channels
        }
        if let act = config["act_fn"]?.stringValue, act != "silu" {
            throw PPError(.unsupported, file: origin, entry: "act_fn", "'\(act)' is not supported (the VAE reader runs silu)")
        }
        if let types = try strings("down_block_types"), let other = types.first(where: { $0 != "DownEncoderBlock2D" }) {
            throw PPError(.unsupported, file: origin, entry: "down_block_types", "'\(other)' is not supported (only DownEncoderBlock2D)")
        }
        if let types = try strings("up_block_types"), let other = types.first(where: { $0 != "UpDecoderBlock2D" }) {
            throw PPError(.unsupported, file: origin, entry: "up_block_types", "'\(other)' is not supported (only UpDecoderBlock2D)")
        }
        if let types = try strings("down_block_types"), let channels = blockOutChannels, types.count != channels.count {
            throw PPError.badInput(origin, entry: "down_block_types", "\(types.count) block types for \(channels.count) block_out_channels")
        }
    }
}
