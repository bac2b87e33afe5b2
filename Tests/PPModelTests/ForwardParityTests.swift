import XCTest
#if canImport(Glibc)
import Glibc
#endif
import PPKernels
import PPModel
import PPTensor

/// Forward passes against the official PyTorch outputs (Tests/Fixtures, written by gen_fixtures.py).
final class ForwardParityTests: XCTestCase {
    let tolerance = 1e-5
    // Two threads for every test here (the parallel paths of the kernels).
    override func invokeTest() { Parallel.withThreads(2) { super.invokeTest() } }

    func loadModel(_ file: String, heads: Int = 4) throws -> Model {
        let tensors = try Fixtures.tensors(file)
        let config = try ModelConfig.infer(from: tensors, numHeads: heads, inputSize: nil)
        return Model(config: config, parameters: try ModelParameters(config: config, tensors: tensors))
    }

    func testSiTForward() throws {
        let model = try loadModel("sit.safetensors")
        let ref = try Fixtures.tensors("ref_sit_forward.safetensors")
        let out = model.forward(x: ref.floats("x"), t: ref.floats("t"), y: ref.labels("y"), batch: 4)
        // SiT.forward returns the prediction half: compare the first C of 2C channels.
        assertClose(samples(out, size: 8 * 64, range: 0..<4, keep: 4 * 64), ref.floats("out"), tolerance: tolerance, "SiT out")
        XCTAssertEqual(model.forwardCount, 4)
    }

    /// Official forward_with_cfg(cat[x, x], t, [y, null], s): the first half is the guided output.
    func testSiTGuidance() throws {
        let model = try loadModel("sit.safetensors")
        let ref = try Fixtures.tensors("ref_sit_forward.safetensors")
        let x = Array(ref.floats("cfg_x")[0..<(2 * 256)]), t = Array(ref.floats("cfg_t")[0..<2]), y = Array(ref.labels("cfg_y")[0..<2])
        XCTAssertEqual(ref.labels("cfg_y")[2...].map { $0 }, [10, 10], "the fixture's second half is the null class")
        let scale = ref.floats("cfg_scale")[0]
        let guided = model.forwardWithGuidance(x: x, t: t, y: y, batch: 2, scales: [scale], channels: .first3)
        assertClose(samples(guided, size: 512, range: 0..<2, keep: 256), Array(ref.floats("cfg_out")[0..<512]), tolerance: tolerance, "SiT cfg_out")
        XCTAssertEqual(model.forwardCount, 4, "2 conditional + 2 unconditional evaluations")

        // .all guides channel 3 too; channels 0..<3 agree with .first3.
        let all = model.forwardWithGuidance(x: x, t: t, y: y, batch: 2, scales: [scale], channels: .all)
        assertClose(Array(all[0..<192]), Array(guided[0..<192]), tolerance: 0, "first3 vs all on channels 0..<3")
        XCTAssertNotEqual(Array(all[192..<256]), Array(guided[192..<256]))

        // Scale 1: no unconditional pass at all, and the result is the plain forward.
        let before = model.forwardCount
        let unguided = model.forwardWithGuidance(x: x, t: t, y: y, batch: 2, scales: [1], channels: .first3)
        XCTAssertEqual(model.forwardCount - before, 2)
        XCTAssertEqual(unguided, model.forward(x: x, t: t, y: y, batch: 2))
    }

    func testDiTForwardReturnsBothHalves() throws {
        let model = try loadModel("dit.pt")
        let ref = try Fixtures.tensors("ref_dit_forward.safetensors")
        let out = model.forward(x: ref.floats("x"), t: ref.floats("t"), y: ref.labels("y"), batch: 4)
        assertClose(out, ref.floats("out"), tolerance: tolerance, "DiT out (2C channels, DDPM steps)")
    }

    /// The diffusers layout mapped onto the original names (a stand-in for the real diffusers reader).
    func testDiffusersDiT() throws {
        let source = try Fixtures.diffusersTransformer()
        var mapped = TensorDict()
        func copy(_ to: String, _ from: String) { mapped[to] = source[from]! }
        let embed = "transformer_blocks.0.norm1.emb."
        copy("x_embedder.proj.weight", "pos_embed.proj.weight"); copy("x_embedder.proj.bias", "pos_embed.proj.bias")
        copy("t_embedder.mlp.0.weight", embed + "timestep_embedder.linear_1.weight"); copy("t_embedder.mlp.0.bias", embed + "timestep_embedder.linear_1.bias")
        copy("t_embedder.mlp.2.weight", embed + "timestep_embedder.linear_2.weight"); copy("t_embedder.mlp.2.bias", embed + "timestep_embedder.linear_2.bias")
        copy("y_embedder.embedding_table.weight", embed + "class_embedder.embedding_table.weight")
        var depth = 0
        while source.contains("transformer_blocks.\(depth).norm1.linear.weight") {
            let from = "transformer_blocks.\(depth).", to = "blocks.\(depth)."
            for kind in ["weight", "bias"] {
                let parts = ["to_q", "to_k", "to_v"].map { source[from + "attn1.\($0).\(kind)"]! }
                mapped[to + "attn.qkv.\(kind)"] = TensorView(floats: parts.flatMap { $0.floats() },
                                                            shape: [3 * parts[0].shape[0]] + parts[0].shape.dropFirst())
                copy(to + "attn.proj.\(kind)", from + "attn1.to_out.0.\(kind)")
                copy(to + "mlp.fc1.\(kind)", from + "ff.net.0.proj.\(kind)")
                copy(to + "mlp.fc2.\(kind)", from + "ff.net.2.\(kind)")
                copy(to + "adaLN_modulation.1.\(kind)", from + "norm1.linear.\(kind)")
            }
            depth += 1
        }
        for kind in ["weight", "bias"] {
            copy("final_layer.adaLN_modulation.1.\(kind)", "proj_out_1.\(kind)")
            copy("final_layer.linear.\(kind)", "proj_out_2.\(kind)")
        }
        var config = try ModelConfig.infer(from: mapped, numHeads: 4, inputSize: 8)
        config.mlpNormEps = 1e-5  // diffusers' norm3
        let table = ModelParameters.positionTable(config: config, level: 0)
        mapped["pos_embed"] = TensorView(floats: table, shape: [1, table.count / config.hiddenSize, config.hiddenSize])
        let parameters = try ModelParameters(config: config, tensors: mapped)
        let ref = try Fixtures.tensors("ref_dit_diffusers_forward.safetensors")
        let original = Model(config: config, parameters: parameters)
        assertClose(original.forward(x: ref.floats("x"), t: ref.floats("t"), y: ref.labels("y"), batch: 4), ref.floats("out_freq_shift0"),
                    tolerance: tolerance, "diffusers with the original frequencies")
        config.timeFeatures = .diffusers
        let shifted = Model(config: config, parameters: parameters)
        assertClose(shifted.forward(x: ref.floats("x"), t: ref.floats("t"), y: ref.labels("y"), batch: 4), ref.floats("out_diffusers"),
                    tolerance: tolerance, "diffusers with its own frequencies")
    }

    func checkPPFlow(weights: String, reference: String, times: [Float], guidance: Bool) throws {
        let model = try loadModel(weights)
        let ref = try Fixtures.tensors(reference)
        let x = ref.floats("x"), y = ref.labels("y")
        for time in times {
            let key = "out_t\(time)"
            let out = model.forward(x: x, t: [time, time], y: y, batch: 2)
            assertClose(samples(out, size: 512, range: 0..<2, keep: 256), ref.floats(key), tolerance: tolerance, "\(weights) \(key) (level \(model.level(forTime: time)))")
            if let sit = ref[("sit_t\(time)")], model.level(forTime: time) == model.config.levels - 1 {
                assertClose(samples(out, size: 512, range: 0..<2, keep: 256), sit.floats(), tolerance: tolerance, "\(weights) finest level = source SiT")
            }
            if guidance {
                let scales = ref.floats("cfg_scales")
                let guided = model.forwardWithGuidance(x: Array(ref.floats("cfg_x")[0..<512]), t: [time, time], y: Array(ref.labels("cfg_y")[0..<2]),
                                                       batch: 2, scales: scales, channels: .first3)
                assertClose(samples(guided, size: 512, range: 0..<2, keep: 256), Array(ref.floats("cfg_out_t\(time)")[0..<512]),
                            tolerance: tolerance, "\(weights) cfg_out_t\(time)")
            }
        }
        // A batch mixing levels runs each level as its own group and matches the per-level outputs.
        let mixed = model.forward(x: x, t: [times[0], times[times.count - 1]], y: y, batch: 2)
        assertClose(Array(mixed[0..<256]), Array(ref.floats("out_t\(times[0])")[0..<256]), tolerance: tolerance, "mixed batch, coarse sample")
        assertClose(Array(mixed[512..<768]), Array(ref.floats("out_t\(times[times.count - 1])")[256..<512]), tolerance: tolerance, "mixed batch, fine sample")
    }

    func testPPFlow2Levels() throws {
        try checkPPFlow(weights: "ppf2.pt", reference: "ref_ppf2_forward.safetensors", times: [0.3, 0.8], guidance: true)
    }

    func testPPFlow3Levels() throws {
        try checkPPFlow(weights: "ppf3.pt", reference: "ref_ppf3_forward.safetensors", times: [0.3, 0.6, 0.9], guidance: true)
    }

    func testPPFlowConvertedFromSiT() throws {
        try checkPPFlow(weights: "ppf2_from_sit.safetensors", reference: "ref_ppf2_from_sit_forward.safetensors", times: [0.3, 0.8], guidance: false)
        try checkPPFlow(weights: "ppf3_from_sit.safetensors", reference: "ref_ppf3_from_sit_forward.safetensors", times: [0.3, 0.6, 0.9], guidance: false)
    }

    /// Position tables computed from the config equal the checkpoints' stored pos_embed* to float32 rounding.
    func testPositionTablesMatchCheckpoints() throws {
        for file in ["sit.safetensors", "ppf2.pt", "ppf3.pt"] {
            let tensors = try Fixtures.tensors(file)
            let config = try ModelConfig.infer(from: tensors, numHeads: 4, inputSize: nil)
            for level in 0..<config.levels {
                let name = config.positionEmbedName(level: level)
                assertClose(ModelParameters.positionTable(config: config, level: level), tensors.floats(name), tolerance: 1e-7, "\(file) \(name)")
            }
        }
    }
}
