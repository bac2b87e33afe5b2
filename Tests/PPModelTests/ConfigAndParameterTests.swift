import PPFileIO
import XCTest
import PPModel
import PPKernels
import PPTensor

final class ConfigAndParameterTests: XCTestCase {
    func testInferReadsEveryFamily() throws {
        let sit = try ModelConfig.infer(from: Fixtures.tensors("sit.safetensors"), numHeads: 4, inputSize: nil)
        XCTAssertEqual(sit, ModelConfig(inChannels: 4, inputSize: 8, patchSize: 2, hiddenSize: 64, depth: 2, numHeads: 4, numClasses: 10,
                                        mlpRatio: 4, learnSigma: true, levels: 1))
        XCTAssertEqual(sit.thresholds, [])
        let ppf3 = try ModelConfig.infer(from: Fixtures.tensors("ppf3.pt"), numHeads: 4, inputSize: nil)
        XCTAssertEqual(ppf3.levels, 3)
        XCTAssertEqual(ppf3.thresholds, [0.5, 0.75])
        XCTAssertEqual(ppf3.inputSize, 8)
        let ppf2 = try ModelConfig.infer(from: Fixtures.tensors("ppf2_from_sit.safetensors"), numHeads: 4, inputSize: nil)
        XCTAssertEqual(ppf2.levels, 2)
        XCTAssertEqual(ppf2.thresholds, [0.5])
    }

    func testHeadsMustBeGivenForUnreleasedSizes() throws {
        let tensors = try Fixtures.tensors("sit.safetensors")
        XCTAssertThrowsError(try ModelConfig.infer(from: tensors, numHeads: nil, inputSize: nil)) { error in
            XCTAssert("\(error)".contains("--heads"), "\(error)")
        }
        XCTAssertThrowsError(try ModelConfig.infer(from: tensors, numHeads: 5, inputSize: nil))  // 5 does not divide 64
    }

    /// The layout lists exactly the checkpoint's keys in the checkpoint's (state_dict) order.
    func testParameterShapesFollowStateDictOrder() throws {
        for file in ["sit.pt", "dit.pt", "ppf2.pt", "ppf3.pt"] {
            let tensors = try Fixtures.tensors(file)
            let config = try ModelConfig.infer(from: tensors, numHeads: 4, inputSize: nil)
            XCTAssertEqual(config.parameterShapes.map(\.name), tensors.names, file)
            XCTAssertEqual(config.parameterShapes.map(\.shape), tensors.names.map { tensors[$0]!.shape }, file)
        }
    }

    func testParametersRoundTripAndLayout() throws {
        let tensors = try Fixtures.tensors("ppf2.pt")
        let config = try ModelConfig.infer(from: tensors, numHeads: 4, inputSize: nil)
        let parameters = try ModelParameters(config: config, tensors: tensors)
        XCTAssertEqual(parameters.layout.totalCount, tensors.totalElements)
        let range = parameters.layout.range(of: "blocks.1.mlp.fc2.bias")!
        XCTAssertEqual(Array(parameters.values[range]), tensors["blocks.1.mlp.fc2.bias"]!.floats())
        XCTAssertNil(parameters.layout.range(of: "pos_embed"))
        let back = parameters.tensors()
        XCTAssertEqual(back.names, tensors.names)
        for name in tensors.names { XCTAssertEqual(back[name]!.floats(), tensors[name]!.floats(), name) }
        XCTAssertEqual(parameters.tensors(dtype: .bf16)["x_embedder.proj.bias"]!.dtype, .bf16)
    }

    func testParametersRejectWrongKeysAndShapes() throws {
        let tensors = try Fixtures.tensors("sit.safetensors")
        let config = try ModelConfig.infer(from: tensors, numHeads: 4, inputSize: nil)
        var missing = tensors
        missing["blocks.1.attn.proj.bias"] = nil
        XCTAssertThrowsError(try ModelParameters(config: config, tensors: missing)) { error in
            XCTAssertEqual((error as? PPError)?.entry, "blocks.1.attn.proj.bias")
            XCTAssert("\(error)".contains("missing"), "\(error)")
        }
        var extra = tensors
        extra["level_embedder.embedding_table.weight"] = TensorView(floats: [Float](repeating: 0, count: 128), shape: [2, 64])
        XCTAssertThrowsError(try ModelParameters(config: config, tensors: extra)) { error in
            XCTAssertEqual((error as? PPError)?.entry, "level_embedder.embedding_table.weight")
            XCTAssert("\(error)".contains("unexpected"), "\(error)")
        }
        var wrong = tensors
        wrong["final_layer.linear.bias"] = TensorView(floats: [Float](repeating: 0, count: 16), shape: [16])
        XCTAssertThrowsError(try ModelParameters(config: config, tensors: wrong)) { error in
            XCTAssertEqual((error as? PPError)?.entry, "final_layer.linear.bias")
            XCTAssert("\(error)".contains("[16]") && "\(error)".contains("[32]"), "\(error)")
        }
    }

    /// Level selection follows the official thresholds, inclusive at the boundary.
    func testLevelSelection() throws {
        let tensors = try Fixtures.tensors("ppf3.pt")
        let config = try ModelConfig.infer(from: tensors, numHeads: 4, inputSize: nil)
        let model = Model(config: config, parameters: try ModelParameters(config: config, tensors: tensors))
        XCTAssertEqual([0, 0.5, 0.5001, 0.75, 0.76, 1].map { model.level(forTime: $0) }, [0, 0, 1, 1, 2, 2])
    }

    /// Position tables exist for latent sizes other than the training size, and the forward runs there.
    func testOtherLatentSize() throws {
        let tensors = try Fixtures.tensors("ppf3.pt")
        let config = try ModelConfig.infer(from: tensors, numHeads: 4, inputSize: nil)
        let model = Model(config: config, parameters: try ModelParameters(config: config, tensors: tensors))
        let full = ModelParameters.positionTable(config: config, level: 2, latentSize: 16)
        let coarse = ModelParameters.positionTable(config: config, level: 0, latentSize: 16)
        // The coarse 4x4 table is the full 8x8 table at even rows and columns.
        for i in 0..<4 { for j in 0..<4 {
            let coarseStart: Int = (i * 4 + j) * 64
            let fullStart: Int = (2 * i * 8 + 2 * j) * 64
            XCTAssertEqual(Array(coarse[coarseStart..<(coarseStart + 64)]), Array(full[fullStart..<(fullStart + 64)]))
        } }
        let x: [Float] = (0..<(4 * 16 * 16)).map { (k: Int) -> Float in Float((k * 37) % 101) / 50 - 1 }
        let out = model.forward(x: x, t: [0.3], y: [1], batch: 1)
        XCTAssertEqual(out.count, 8 * 16 * 16)
        XCTAssert(out.allSatisfy { $0.isFinite })
    }
}

final class FinalFeatureTests: XCTestCase {
    /// The features times the level's output projection, unpatchified and mapped back, give the forward output.
    func testFinalFeaturesReproduceTheCoarseOutput() throws {
        let tensors = try Fixtures.tensors("ppf2.pt")
        let ref = try Fixtures.tensors("ref_ppf2_forward.safetensors")
        let config = try ModelConfig.infer(from: tensors, numHeads: 4, inputSize: nil)
        let model = Model(config: config, parameters: try ModelParameters(config: config, tensors: tensors))
        let features = model.finalFeatures(x: ref.floats("x"), t: [0.3, 0.3], y: ref.labels("y"), batch: 2, level: 0)
        XCTAssertEqual(features.count, 2 * 4 * 64)
        let head = Reference.linear(input: features, weight: tensors.floats("final_layer.linear1.weight"), bias: tensors.floats("final_layer.linear1.bias"),
                                    rows: 8, inFeatures: 64, outFeatures: 128)
        // Sample 1, token (row 0, col 1) of the 2x2 grid, feature (u=1, v=0, level channel 11): level pixel (1, 2);
        // channel 11 = 4c + 2a + b with c=2, a=1, b=1 is prediction channel 2 at latent (2·1+1, 2·2+1) = (3, 5).
        let token = 1 * 4 + 0 * 2 + 1, feature = (1 * 2 + 0) * 32 + 11
        let expected = head[token * 128 + feature]
        let out = ref.floats("out_t0.3")
        XCTAssertEqual(out[((1 * 4 + 2) * 8 + 3) * 8 + 5], expected, accuracy: 1e-5)
    }
}
