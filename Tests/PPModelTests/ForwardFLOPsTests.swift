import XCTest
import PPModel

final class ForwardFLOPsTests: XCTestCase {
    /// The fixture shape: C=4, S=8, p=2, D=64, depth 2, MLP 256, learn_sigma. Counted by hand:
    /// full level, 16 tokens: patch 32768 + time MLP 40960 + 2 blocks × 1687552 + final 16384 + 65536.
    /// square level, 4 tokens of 16 channels: 32768 + 40960 + 2 × 446464 + 16384 + 65536.
    func testForwardFLOPsCountEveryMatrixProduct() {
        let config = ModelConfig(inChannels: 4, inputSize: 8, patchSize: 2, hiddenSize: 64, depth: 2, numHeads: 4, numClasses: 10, levels: 3)
        XCTAssertEqual(config.forwardFLOPs(level: 2, latentSide: 8), 3_530_752)
        XCTAssertEqual(config.forwardFLOPs(level: 0, latentSide: 8), 1_048_576)
        // width level, 8 tokens of 8 channels: patch 32768 + 40960 + 2 × (196608 + 8192 + 8192 + 65536
        // + 524288 + 49152) + 16384 + 65536.
        XCTAssertEqual(config.forwardFLOPs(level: 1, latentSide: 8), 1_859_584)
    }

    /// A batch of 2 on a SiT (16 tokens, D 32, MLP 128, depth 2), counted by hand term by term.
    func testBatchCountsEverySample() {
        let config = ModelConfig(inChannels: 4, inputSize: 8, patchSize: 2, hiddenSize: 32, depth: 2, numHeads: 4, numClasses: 10)
        let rows = 32.0
        let expected = 2 * rows * 16 * 32 + (2 * 2 * 256 * 32 + 2 * 2 * 32 * 32)
            + 2 * (2 * 2 * 32 * 192 + 2 * rows * 32 * 96 + 4 * 2 * 16 * 16 * 32 + 2 * rows * 32 * 32 + 4 * rows * 32 * 128)
            + (2 * 2 * 32 * 64 + 2 * rows * 32 * 32)
        XCTAssertEqual(config.forwardFLOPs(level: 0, batch: 2), expected)
    }
}
