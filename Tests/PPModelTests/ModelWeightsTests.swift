import XCTest
import PPModel
import PPSafetensors
import PPTensor

/// Inference on weights where they lie: a mapped float32 checkpoint is read in place (nothing copied),
/// other dtypes are converted once, and both give the same outputs as the flat-parameter path.
final class ModelWeightsTests: XCTestCase {
    func testMappedFloat32IsReadInPlaceAndMatchesFlatParameters() throws {
        let tensors = try Fixtures.tensors("sit.safetensors")
        let config = try ModelConfig.infer(from: tensors, numHeads: 4, inputSize: nil)
        let weights = try ModelWeights(config: config, tensors: tensors)
        XCTAssertEqual(weights.convertedBytes, 0, "float32 tensors of a mapped file must not be copied")
        let ref = try Fixtures.tensors("ref_sit_forward.safetensors")
        let x = try XCTUnwrap(ref["x"]).floats(), t = try XCTUnwrap(ref["t"]).floats()
        let y = try XCTUnwrap(ref["y"]).int64s().map { Int32($0) }
        let inPlace = Model(weights: weights).forward(x: x, t: t, y: y, batch: 4)
        let flat = Model(config: config, parameters: try ModelParameters(config: config, tensors: tensors)).forward(x: x, t: t, y: y, batch: 4)
        XCTAssertEqual(inPlace, flat)
        XCTAssertEqual(weights.parameters().values, try ModelParameters(config: config, tensors: tensors).values)
    }

    func testHalfPrecisionIsConvertedOnce() throws {
        let tensors = try Fixtures.tensors("sit_fp16.safetensors")
        let config = try ModelConfig.infer(from: tensors, numHeads: 4, inputSize: nil)
        let weights = try ModelWeights(config: config, tensors: tensors)
        XCTAssertEqual(weights.convertedBytes, ParameterLayout(config: config).totalCount * 4)
        let flat = try ModelParameters(config: config, tensors: tensors)
        XCTAssertEqual(weights.parameters().values, flat.values)
    }

    func testWrongShapeIsAnErrorNamingTheTensor() throws {
        var tensors = try Fixtures.tensors("sit.safetensors")
        let config = try ModelConfig.infer(from: tensors, numHeads: 4, inputSize: nil)
        tensors["blocks.0.mlp.fc1.bias"] = TensorView(floats: [1, 2, 3], shape: [3])
        assertPPError(.badInput, mentions: ["blocks.0.mlp.fc1.bias", "[3]"]) { _ = try ModelWeights(config: config, tensors: tensors) }
    }
}
