import PPFileIO
import PPKernels
import PPSafetensors
import PPTensor
import PPTestSupport
import PPTorchFormat
import PPVAE
import XCTest

/// The ldm layout, the architecture of the real SD VAE, and the one-line errors.
final class VAELoaderTests: XCTestCase {
    // MARK: ldm layout

    /// diffusers name -> ldm name, written independently of the loader's rules (the inverse direction,
    /// by hand), so a wrong rule in either place shows up as a mismatch.
    static func ldmName(_ name: String, blocks: Int) -> String {
        var parts = name.split(separator: ".").map(String.init)
        func replace(_ count: Int, with new: [String]) { parts = new + parts.dropFirst(count) }
        let part = parts[0]
        if parts.count > 4, parts[1] == "down_blocks", parts[3] == "resnets" {
            replace(5, with: [part, "down", parts[2], "block", parts[4]])
        } else if parts.count > 4, parts[1] == "down_blocks", parts[3] == "downsamplers" {
            replace(6, with: [part, "down", parts[2], "downsample", "conv"])
        } else if parts.count > 4, parts[1] == "up_blocks", parts[3] == "resnets" {
            replace(5, with: [part, "up", String(blocks - 1 - Int(parts[2])!), "block", parts[4]])
        } else if parts.count > 4, parts[1] == "up_blocks", parts[3] == "upsamplers" {
            replace(6, with: [part, "up", String(blocks - 1 - Int(parts[2])!), "upsample", "conv"])
        } else if parts.count > 3, parts[1] == "mid_block", parts[2] == "resnets" {
            replace(4, with: [part, "mid", parts[3] == "0" ? "block_1" : "block_2"])
        } else if parts.count > 3, parts[1] == "mid_block", parts[2] == "attentions" {
            let layer = parts[4]
            let ldm = ["group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"][layer]!
            replace(layer == "to_out" ? 6 : 5, with: [part, "mid", "attn_1", ldm])
        } else if parts.count > 1, parts[1] == "conv_norm_out" {
            replace(2, with: [part, "norm_out"])
        }
        return parts.map { $0 == "conv_shortcut" ? "nin_shortcut" : $0 }.joined(separator: ".")
    }

    /// The fixture's tensors under ldm names, attention projections as 1x1 convolutions [C, C, 1, 1].
    static func ldmTensors(prefix: String = "") throws -> TensorDict {
        var out = TensorDict()
        for (name, tensor) in try VAEFixture.weightTensors().items {
            let ldm = ldmName(name, blocks: 2)
            var t = tensor
            if name.contains(".attentions.0.to_"), name.hasSuffix(".weight") {
                t = TensorView(floats: tensor.floats(), shape: tensor.shape + [1, 1])
            }
            out[prefix + ldm] = t
        }
        return out
    }

    func testInverseRulesProduceLDMNames() throws {
        let names = Set(try VAELoaderTests.ldmTensors().names)
        for expected in ["encoder.down.0.block.0.norm1.weight", "encoder.down.0.downsample.conv.weight",
                         "encoder.down.1.block.0.nin_shortcut.weight", "encoder.mid.block_1.conv1.weight",
                         "encoder.mid.attn_1.q.weight", "encoder.mid.attn_1.proj_out.bias", "encoder.norm_out.weight",
                         "decoder.up.1.block.1.conv2.weight", "decoder.up.1.upsample.conv.weight",
                         "decoder.up.0.block.0.nin_shortcut.weight", "decoder.mid.block_2.norm2.bias",
                         "quant_conv.weight", "post_quant_conv.bias"] {
            XCTAssertTrue(names.contains(expected), expected)
        }
    }

    func testLDMRulesOnSDNames() {
        let cases = [
            ("decoder.up.0.block.2.nin_shortcut.weight", "decoder.up_blocks.3.resnets.2.conv_shortcut.weight"),
            ("decoder.up.3.upsample.conv.bias", "decoder.up_blocks.0.upsamplers.0.conv.bias"),
            ("encoder.down.2.downsample.conv.weight", "encoder.down_blocks.2.downsamplers.0.conv.weight"),
            ("decoder.mid.attn_1.proj_out.weight", "decoder.mid_block.attentions.0.to_out.0.weight"),
            ("encoder.mid.block_2.conv1.bias", "encoder.mid_block.resnets.1.conv1.bias"),
            ("decoder.norm_out.weight", "decoder.conv_norm_out.weight"),
            ("encoder.conv_in.weight", "encoder.conv_in.weight"),
            ("post_quant_conv.weight", "post_quant_conv.weight"),
        ]
        for (ldm, diffusers) in cases {
            XCTAssertEqual(VAEKeyRules.diffusersName(ldm: ldm, decoderBlocks: 4), diffusers)
        }
    }

    /// vae-ft-mse-840000-ema-pruned.safetensors style: ldm names, no config (groups given).
    func testLDMSafetensorsGivesTheSameOutputs() throws {
        let path = Paths.scratch(self) + "/vae-small-ldm.safetensors"
        try SafetensorsWriter.write(try VAELoaderTests.ldmTensors(), metadata: [], to: path)
        let vae = try VAELoader.load(path, overrides: VAEOverrides(normGroups: 8))
        XCTAssertEqual(vae.source?.layout, .ldm)
        XCTAssertEqual(vae.config, VAEConfig(blockOutChannels: [32, 64], layersPerBlock: 1, normGroups: 8))
        try checkAgainstReference(vae, "ldm safetensors")
    }

    /// A Stable Diffusion .ckpt: {"state_dict": {first_stage_model.*, model.diffusion_model.*, ...}, "global_step": N}.
    func testFullSDCheckpointTakesTheFirstStage() throws {
        var all = try VAELoaderTests.ldmTensors(prefix: "first_stage_model.")
        all["model.diffusion_model.input_blocks.0.0.weight"] = TensorView(floats: [1, 2, 3, 4], shape: [2, 2])
        all["cond_stage_model.transformer.embeddings.position_ids"] = TensorView(int64s: [0, 1, 2], shape: [1, 3])
        let path = Paths.scratch(self) + "/sd-small.ckpt"
        try TorchWriter.write(.dict([("state_dict", .stateDict(all)), ("global_step", .int(840000))]), to: path, archiveName: "archive")
        let vae = try VAELoader.load(path, overrides: VAEOverrides(normGroups: 8, scalingFactor: 0.18215))
        XCTAssertEqual(vae.source?.layout, .ldm)
        XCTAssertTrue(vae.source!.notes.contains { $0.contains("first_stage_model.") }, "\(vae.source!.notes)")
        try checkAgainstReference(vae, "SD ckpt")
    }

    /// A VAE-only .ckpt still holding its training loss keeps working (they are dropped).
    func testLDMCheckpointDropsTrainingKeys() throws {
        var tensors = try VAELoaderTests.ldmTensors()
        tensors["loss.logvar"] = TensorView(floats: [0], shape: [])
        let path = Paths.scratch(self) + "/vae.ckpt"
        try TorchWriter.write(.dict([("state_dict", .stateDict(tensors))]), to: path, archiveName: "vae")
        let vae = try VAELoader.load(path, overrides: VAEOverrides(normGroups: 8))
        try checkAgainstReference(vae, "ldm ckpt")
    }

    // MARK: The Stable Diffusion architecture

    func testRandomSDArchitectureRunsWithTheRightShapes() throws {
        let config = VAEConfig.stableDiffusion
        let layout = VAEParameterLayout(config)
        XCTAssertEqual(layout.totalCount, 83_653_863)                      // diffusers' sd-vae-ft-mse parameter count
        XCTAssertEqual(layout.entries.count, 248)
        let vae = AutoencoderKL.random(config, seed: 7)
        var random = SeededRandom(seed: 3)
        let images = VAETensor(values: (0..<(2 * 3 * 32 * 32)).map { _ in Float(random.uniform() * 2 - 1) }, shape: [2, 3, 32, 32])
        let posterior = try vae.encode(images: images)
        XCTAssertEqual(posterior.moments.shape, [2, 8, 4, 4])
        XCTAssertEqual(posterior.mean.shape, [2, 4, 4, 4])
        XCTAssertTrue(posterior.moments.values.allSatisfy(\.isFinite))
        let latents = try posterior.latents(noise: nil)
        let decoded = try vae.decode(latents: latents)
        XCTAssertEqual(decoded.shape, [2, 3, 32, 32])
        XCTAssertTrue(decoded.values.allSatisfy(\.isFinite))
        XCTAssertTrue(decoded.values.contains { $0 != 0 })
    }

    // MARK: Errors: one line naming the file, the entry, the problem

    /// A diffusers folder with the fixture's config and `tensors` as its weights.
    private func folder(with tensors: TensorDict, config: String? = nil) throws -> String {
        let dir = Paths.scratch(self)
        try write(config.map { Array($0.utf8) } ?? (try fileBytes(VAEFixture.config)), to: "\(dir)/config.json")
        try SafetensorsWriter.write(tensors, metadata: [], to: "\(dir)/diffusion_pytorch_model.safetensors")
        return dir
    }

    private func assertOneLine(_ kind: PPError.Kind, mentions: [String], _ body: () throws -> Void,
                               file: StaticString = #filePath, line: UInt = #line) {
        assertPPError(kind, mentions: mentions, file: file, line: line, body)
        do { try body() } catch { XCTAssertFalse("\(error)".contains("\n"), "\(error)", file: file, line: line) }
    }

    func testMissingKey() throws {
        var tensors = TensorDict()
        for (name, t) in try VAEFixture.weightTensors().items where name != "decoder.conv_out.bias" { tensors[name] = t }
        let dir = try folder(with: tensors)
        assertOneLine(.badInput, mentions: ["\(dir)/diffusion_pytorch_model.safetensors", "decoder.conv_out.bias", "missing"]) {
            _ = try VAELoader.load(dir)
        }
    }

    func testWrongShape() throws {
        var tensors = TensorDict()
        for (name, t) in try VAEFixture.weightTensors().items {
            tensors[name] = name == "encoder.mid_block.resnets.0.norm1.weight" ? TensorView(floats: [Float](repeating: 1, count: 63), shape: [63]) : t
        }
        let dir = try folder(with: tensors)
        assertOneLine(.badInput, mentions: ["encoder.mid_block.resnets.0.norm1.weight", "shape [63], expected [64]"]) {
            _ = try VAELoader.load(dir)
        }
    }

    func testUnusedKey() throws {
        var tensors = try VAEFixture.weightTensors()
        tensors["decoder.mid_block.attentions.1.to_q.weight"] = TensorView(floats: [1], shape: [1])
        let dir = try folder(with: tensors)
        assertOneLine(.badInput, mentions: ["decoder.mid_block.attentions.1.to_q.weight", "unexpected key"]) {
            _ = try VAELoader.load(dir)
        }
    }

    func testUnknownLayout() throws {
        let path = Paths.scratch(self) + "/unet.safetensors"
        try SafetensorsWriter.write(TensorDict([("conv_in.weight", TensorView(floats: [1, 2], shape: [2]))]), metadata: [], to: path)
        assertOneLine(.badInput, mentions: [path, "not an AutoencoderKL"]) { _ = try VAELoader.load(path) }
    }

    func testConfigDisagreeingWithWeights() throws {
        var config = String(decoding: try fileBytes(VAEFixture.config), as: UTF8.self)
        config = config.replacing("\"layers_per_block\": 1", with: "\"layers_per_block\": 2")
        let dir = try folder(with: try VAEFixture.weightTensors(), config: config)
        assertOneLine(.badInput, mentions: ["\(dir)/config.json", "layers_per_block", "says 2 but the weights have 1"]) {
            _ = try VAELoader.load(dir)
        }
    }

    func testUnsupportedBlockType() throws {
        var config = String(decoding: try fileBytes(VAEFixture.config), as: UTF8.self)
        config = config.replacing("\"UpDecoderBlock2D\",", with: "\"AttnUpDecoderBlock2D\",")
        let dir = try folder(with: try VAEFixture.weightTensors(), config: config)
        assertOneLine(.unsupported, mentions: ["up_block_types", "AttnUpDecoderBlock2D"]) { _ = try VAELoader.load(dir) }
    }

    func testGroupsThatDoNotDivide() {
        assertOneLine(.badInput, mentions: ["norm_num_groups", "12 groups"]) {
            _ = try VAELoader.load(VAEFixture.folder, overrides: VAEOverrides(normGroups: 12))
        }
    }

    func testMissingPathAndBadShapes() throws {
        assertOneLine(.missingInput, mentions: ["/nonexistent/vae", "no such file"]) { _ = try VAELoader.load("/nonexistent/vae") }
        let vae = try VAELoader.load(VAEFixture.folder)
        assertOneLine(.badInput, mentions: ["images", "[1, 3, 15, 16]", "multiples of 2"]) {
            _ = try vae.encode(images: VAETensor(values: [Float](repeating: 0, count: 3 * 15 * 16), shape: [1, 3, 15, 16]))
        }
        assertOneLine(.badInput, mentions: ["latents", "[1, 3, 8, 8]"]) {
            _ = try vae.decode(z: VAETensor(values: [Float](repeating: 0, count: 3 * 64), shape: [1, 3, 8, 8]))
        }
    }
}
