import PPFileIO
import PPTensor

/// diffusers' `DiTTransformer2DModel` layout mapped back to the original DiT key names
/// (formats.md §4): q/k/v re-fused, the per-block copies of the time and class embedders checked
/// equal and collapsed, `proj_out_1/2` to the final layer. `pos_embed` is not stored by diffusers; the
/// caller regenerates it (it is a fixed sin-cos table).
public enum DiffusersDiT {
    /// True when the names look like a diffusers DiT transformer.
    public static func matches(_ names: [String]) -> Bool {
        names.contains("pos_embed.proj.weight") && names.contains { $0.hasPrefix("transformer_blocks.") }
    }

    /// Per-block renames: diffusers suffix -> original suffix.
    private static let blockRenames: [(String, String)] = [
        ("norm1.linear.weight", "adaLN_modulation.1.weight"),
        ("norm1.linear.bias", "adaLN_modulation.1.bias"),
        ("attn1.to_out.0.weight", "attn.proj.weight"),
        ("attn1.to_out.0.bias", "attn.proj.bias"),
        ("ff.net.0.proj.weight", "mlp.fc1.weight"),
        ("ff.net.0.proj.bias", "mlp.fc1.bias"),
        ("ff.net.2.weight", "mlp.fc2.weight"),
        ("ff.net.2.bias", "mlp.fc2.bias"),
    ]

    /// Shared embedders copied into every block: diffusers suffix -> original key.
    private static let sharedEmbedders: [(String, String)] = [
        ("norm1.emb.timestep_embedder.linear_1.weight", "t_embedder.mlp.0.weight"),
        ("norm1.emb.timestep_embedder.linear_1.bias", "t_embedder.mlp.0.bias"),
        ("norm1.emb.timestep_embedder.linear_2.weight", "t_embedder.mlp.2.weight"),
        ("norm1.emb.timestep_embedder.linear_2.bias", "t_embedder.mlp.2.bias"),
        ("norm1.emb.class_embedder.embedding_table.weight", "y_embedder.embedding_table.weight"),
    ]

    private static let topRenames: [(String, String)] = [
        ("pos_embed.proj.weight", "x_embedder.proj.weight"),
        ("pos_embed.proj.bias", "x_embedder.proj.bias"),
        ("proj_out_1.weight", "final_layer.adaLN_modulation.1.weight"),
        ("proj_out_1.bias", "final_layer.adaLN_modulation.1.bias"),
        ("proj_out_2.weight", "final_layer.linear.weight"),
        ("proj_out_2.bias", "final_layer.linear.bias"),
    ]

    /// Maps `tensors` (diffusers names) to original DiT names, in the original state_dict order
    /// (without `pos_embed`). Every source tensor must be used; errors name the key.
    public static func toOriginal(_ tensors: TensorDict, origin: String) throws -> TensorDict {
        var used = Set<String>()
        func take(_ name: String) throws -> TensorView {
            guard let t = tensors[name] else { throw PPError.badInput(origin, entry: name, "missing from the diffusers DiT weights") }
            used.insert(name)
            return t
        }
        var depth = 0
        while tensors.contains("transformer_blocks.\(depth).norm1.linear.weight") { depth += 1 }
        guard depth > 0 else { throw PPError.badInput(origin, entry: "transformer_blocks.0.norm1.linear.weight", "missing: no transformer blocks") }

        var out = TensorDict()
        out["x_embedder.proj.weight"] = try take("pos_embed.proj.weight")
        out["x_embedder.proj.bias"] = try take("pos_embed.proj.bias")
        // The embedders: block 0's copy, after checking every other block holds the same values.
        for (suffix, original) in sharedEmbedders {
            let first = try take("transformer_blocks.0.\(suffix)")
            let firstBytes = first.rowMajorBytes()
            for i in 1..<depth {
                let name = "transformer_blocks.\(i).\(suffix)"
                let copy = try take(name)
                guard copy.shape == first.shape, copy.dtype == first.dtype, copy.rowMajorBytes() == firstBytes else {
                    throw PPError.badInput(origin, entry: name,
                        "differs from transformer_blocks.0's copy; diffusers DiT shares one embedder across blocks")
                }
            }
            out[original] = first
        }
        for i in 0..<depth {
            let p = "transformer_blocks.\(i)"
            for kind in ["weight", "bias"] {
                let q = try take("\(p).attn1.to_q.\(kind)")
                let k = try take("\(p).attn1.to_k.\(kind)")
                let v = try take("\(p).attn1.to_v.\(kind)")
                out["blocks.\(i).attn.qkv.\(kind)"] = try concatenateRows([q, k, v], names: ["to_q", "to_k", "to_v"].map { "\(p).attn1.\($0).\(kind)" }, origin: origin)
            }
        }
        // Original order: blocks.{i}: attn.qkv, attn.proj, mlp.fc1, mlp.fc2, adaLN_modulation.1.
        var ordered = TensorDict()
        for name in ["x_embedder.proj.weight", "x_embedder.proj.bias", "t_embedder.mlp.0.weight", "t_embedder.mlp.0.bias",
                     "t_embedder.mlp.2.weight", "t_embedder.mlp.2.bias", "y_embedder.embedding_table.weight"] {
            ordered[name] = out[name]
        }
        for i in 0..<depth {
            ordered["blocks.\(i).attn.qkv.weight"] = out["blocks.\(i).attn.qkv.weight"]
            ordered["blocks.\(i).attn.qkv.bias"] = out["blocks.\(i).attn.qkv.bias"]
            for (from, to) in blockRenames where to.hasPrefix("attn.") {
                ordered["blocks.\(i).\(to)"] = try take("transformer_blocks.\(i).\(from)")
            }
            for (from, to) in blockRenames where to.hasPrefix("mlp.") {
                ordered["blocks.\(i).\(to)"] = try take("transformer_blocks.\(i).\(from)")
            }
            for (from, to) in blockRenames where to.hasPrefix("adaLN") {
                ordered["blocks.\(i).\(to)"] = try take("transformer_blocks.\(i).\(from)")
            }
        }
        for (from, to) in topRenames where to.hasPrefix("final_layer.linear") {
            ordered[to] = try take(from)
        }
        for (from, to) in topRenames where to.hasPrefix("final_layer.adaLN") {
            ordered[to] = try take(from)
        }
        // A stored non-persistent table (pos_embed_max_size models) or anything else unknown is refused,
        // so nothing is silently dropped.
        let unused = tensors.names.filter { !used.contains($0) }
        if let first = unused.first {
            throw PPError.badInput(origin, entry: first,
                "unexpected key in a diffusers DiT (\(unused.count) unused key\(unused.count == 1 ? "" : "s")); not a layout this reader knows")
        }
        return ordered
    }

    /// Stacks tensors along dim 0 (same dtype, same trailing shape) into a new owned tensor.
    static func concatenateRows(_ parts: [TensorView], names: [String], origin: String) throws -> TensorView {
        let first = parts[0]
        var rows = 0
        for (part, name) in zip(parts, names) {
            guard part.dtype == first.dtype, part.rank >= 1, Array(part.shape.dropFirst()) == Array(first.shape.dropFirst()) else {
                throw PPError.badInput(origin, entry: name, "shape \(part.shape) \(part.dtype.shortName) does not stack with \(names[0]) \(first.shape) \(first.dtype.shortName)")
            }
            rows += part.shape[0]
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(parts.reduce(0) { $0 + $1.byteCount })
        for part in parts { bytes += part.rowMajorBytes() }
        return TensorView(dtype: first.dtype, shape: [rows] + first.shape.dropFirst(), bytes: bytes)
    }
}
