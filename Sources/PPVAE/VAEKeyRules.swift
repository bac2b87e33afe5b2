import PPTensor

/// Key layouts a VAE file can come in, told apart by names alone.
public enum VAEKeyLayout: String, Sendable {
    /// diffusers `AutoencoderKL.state_dict()`: encoder.down_blocks.0.resnets.0.norm1.weight, ...
    case diffusers
    /// The original latent-diffusion ("ldm") names of `vae-ft-mse-840000-ema-pruned` and of the
    /// `first_stage_model.` part of a Stable Diffusion checkpoint: encoder.down.0.block.0.norm1.weight, ...
    case ldm

    /// nil when the names are neither.
    static func detect(_ names: [String]) -> VAEKeyLayout? {
        if names.contains(where: { $0.hasPrefix("encoder.down_blocks.") || $0.hasPrefix("decoder.up_blocks.") }) { return .diffusers }
        if names.contains(where: { $0.hasPrefix("encoder.down.") || $0.hasPrefix("decoder.up.") }) { return .ldm }
        return nil
    }
}

/// Renaming rules from the ldm layout (and old diffusers attention names) to diffusers names, as
/// data: each rule maps a dotted prefix pattern to a replacement; `{i}`, `{j}` match a block or layer
/// number, `{part}` matches `encoder` or `decoder`, `{n-1-i}` writes the decoder block number counted
/// from the other end (ldm numbers decoder levels finest first, diffusers coarsest first). The part
/// of the key after the matched prefix is kept, then the suffix rules apply. docs/VAE.md has the table.
public enum VAEKeyRules {
    public static let ldmPrefixRules: [(ldm: String, diffusers: String)] = [
        ("encoder.down.{i}.block.{j}", "encoder.down_blocks.{i}.resnets.{j}"),
        ("encoder.down.{i}.downsample.conv", "encoder.down_blocks.{i}.downsamplers.0.conv"),
        ("decoder.up.{i}.block.{j}", "decoder.up_blocks.{n-1-i}.resnets.{j}"),
        ("decoder.up.{i}.upsample.conv", "decoder.up_blocks.{n-1-i}.upsamplers.0.conv"),
        ("{part}.mid.block_1", "{part}.mid_block.resnets.0"),
        ("{part}.mid.block_2", "{part}.mid_block.resnets.1"),
        ("{part}.mid.attn_1.norm", "{part}.mid_block.attentions.0.group_norm"),
        ("{part}.mid.attn_1.q", "{part}.mid_block.attentions.0.to_q"),
        ("{part}.mid.attn_1.k", "{part}.mid_block.attentions.0.to_k"),
        ("{part}.mid.attn_1.v", "{part}.mid_block.attentions.0.to_v"),
        ("{part}.mid.attn_1.proj_out", "{part}.mid_block.attentions.0.to_out.0"),
        ("{part}.norm_out", "{part}.conv_norm_out"),
    ]

    /// Applied after the prefix rules, to any layer name component.
    public static let ldmComponentRules: [(ldm: String, diffusers: String)] = [
        ("nin_shortcut", "conv_shortcut"),
    ]

    /// diffusers before 0.14 (and files converted then, e.g. the original `sd-vae-ft-mse` upload) named
    /// the mid-block attention's projections differently; diffusers renames them on load.
    public static let deprecatedAttentionRules: [(old: String, new: String)] = [
        ("{part}.mid_block.attentions.0.query", "{part}.mid_block.attentions.0.to_q"),
        ("{part}.mid_block.attentions.0.key", "{part}.mid_block.attentions.0.to_k"),
        ("{part}.mid_block.attentions.0.value", "{part}.mid_block.attentions.0.to_v"),
        ("{part}.mid_block.attentions.0.proj_attn", "{part}.mid_block.attentions.0.to_out.0"),
    ]

    /// Keys of a training checkpoint that are not part of the autoencoder: the LPIPS/discriminator loss
    /// and LitEma's bookkeeping scalars. Dropped (and counted in the load notes).
    public static let ldmTrainingOnlyPrefixes = ["loss.", "model_ema.decay", "model_ema.num_updates"]

    /// Maps one ldm name to its diffusers name. Names outside the renamed parts (conv_in, conv_out, quant_conv, post_quant_conv, resnet inner
    /// layers) are the same in both layouts.
    public static func diffusersName(ldm name: String, decoderBlocks: Int) -> String {
        var result = name
        for (pattern, replacement) in ldmPrefixRules {
            if let renamed = apply(pattern, replacement, to: name, decoderBlocks: decoderBlocks) { result = renamed; break }
        }
        var parts = result.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        for i in parts.indices {
            for (from, to) in ldmComponentRules where parts[i] == from { parts[i] = to }
        }
        return parts.joined(separator: ".")
    }

    /// Renames old diffusers attention names; other names unchanged.
    public static func currentDiffusersName(_ name: String) -> String {
        for (pattern, replacement) in deprecatedAttentionRules {
            if let renamed = apply(pattern, replacement, to: name, decoderBlocks: 0) { return renamed }
        }
        return name
    }

    /// Decoder levels in an ldm file: 1 + the largest N of `decoder.up.N.`.
    static func ldmDecoderBlocks(_ names: [String]) -> Int {
        var count = 0
        for name in names where name.hasPrefix("decoder.up.") {
            let rest = name.dropFirst("decoder.up.".count)
            if let number = Int(rest.prefix { $0 != "." }) { count = max(count, number + 1) }
        }
        return count
    }

    /// Matches `pattern` against the leading dotted components of `name`; returns the replacement
    /// followed by the rest of the name.
    static func apply(_ pattern: String, _ replacement: String, to name: String, decoderBlocks: Int) -> String? {
        let patternParts = pattern.split(separator: ".").map(String.init)
        let nameParts = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard nameParts.count > patternParts.count else { return nil }     // a parameter name follows the prefix
        var captures: [String: String] = [:]
        for (p, n) in zip(patternParts, nameParts) {
            switch p {
            case "{i}", "{j}":
                guard let number = Int(n), number >= 0, String(number) == n else { return nil }
                captures[p] = n
            case "{part}":
                guard n == "encoder" || n == "decoder" else { return nil }
                captures[p] = n
            default:
                guard p == n else { return nil }
            }
        }
        var out: [String] = []
        for r in replacement.split(separator: ".").map(String.init) {
            switch r {
            case "{n-1-i}": out.append(String(decoderBlocks - 1 - Int(captures["{i}"]!)!))
            case "{i}", "{j}", "{part}": out.append(captures[r]!)
            default: out.append(r)
            }
        }
        return (out + nameParts.dropFirst(patternParts.count)).joined(separator: ".")
    }
}
