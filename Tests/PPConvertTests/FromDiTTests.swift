import PPCheckpoint
import PPConvert
import PPJSON
import PPModel
import PPSafetensors
import PPTensor
import XCTest

#if canImport(Glibc)
import Glibc
#endif

final class FromDiTTests: XCTestCase {
    /// The SiT fixtures are bare state dicts: they need `--objective velocity` (the default here).
    func convert(_ source: String, levels: Int, weights: WeightsChoice? = nil, objective: Objective? = .velocity) throws -> ConversionResult {
        var options = FromDiTOptions()
        options.levels = levels
        options.objective = objective
        options.heads = 4
        return try FromDiT.convert(try CheckpointLoader.load(Paths.fixture(source), weights: weights), options: options, sourceSHA256: nil)
    }

    /// The official rule, exactly: every tensor bit-identical to what the official code produced.
    func testSiTSourcesGiveTheOfficialTensorsBitForBit() throws {
        for levels in [2, 3] {
            let expected = try SafetensorsFile.open(Paths.fixture("ppf\(levels)_from_sit.safetensors")).tensors
            for (source, weights) in [("sit.pt", nil), ("sit.safetensors", nil), ("sit_train.pt", WeightsChoice.model)] {
                let result = try convert(source, levels: levels, weights: weights)
                let diff = CheckpointDiff(result.tensors, expected)
                XCTAssertTrue(diff.isEqual, "\(source) -> \(levels) levels:\n" + diff.lines().joined(separator: "\n"))
            }
        }
    }

    /// The key set and shapes are the official PPFlow model's, in its state_dict order.
    func testOutputKeysAreTheOfficialPPFlowKeys() throws {
        for levels in [2, 3] {
            let official = try CheckpointLoader.load(Paths.fixture("ppf\(levels).pt")).tensors
            let result = try convert("sit.pt", levels: levels)
            XCTAssertEqual(result.tensors.names, official.names, "state_dict order")
            for name in official.names { XCTAssertEqual(result.tensors[name]!.shape, official[name]!.shape, name) }
        }
    }

    /// DiT sources convert too; compared tensor by tensor with the rule applied by hand.
    func testDiTAndDiffusersSourcesFollowTheSameMapping() throws {
        let dit = try CheckpointLoader.load(Paths.fixture("dit.pt")).tensors
        for source in ["dit.pt", "dit_diffusers.zip"] {
            let result = try convert(source, levels: 3, objective: .epsilon)
            XCTAssertEqual(result.nativeConfig["objective"]?.stringValue, "epsilon", source)
            for name in dit.names where name != "pos_embed" {
                XCTAssertEqual(result.tensors[name]!.floats(), dit[name]!.floats(), "\(source): \(name) copied")
            }
            let w = dit["x_embedder.proj.weight"]!.floats()               // [D, C, p, p]
            let proj2 = result.tensors["x_embedder.proj2.weight"]!.floats() // [D, 2C, p, p]
            let (d, c, pp) = (64, 4, 4)
            for row in 0..<d { for ch in 0..<c { for k in 0..<2 { for q in 0..<pp {
                XCTAssertEqual(proj2[((row * 2 * c) + ch * 2 + k) * pp + q], w[(row * c + ch) * pp + q] / 2)
            } } } }
            let lin = dit["final_layer.linear.weight"]!.floats()            // [p*p*Cout, D]
            let lin1 = result.tensors["final_layer.linear1.weight"]!.floats()
            for r in 0..<(4 * 8) { for k in 0..<4 { for j in 0..<d {
                XCTAssertEqual(lin1[(r * 4 + k) * d + j], lin[r * d + j])
            } } }
            XCTAssertTrue(result.tensors["level_embedder.embedding_table.weight"]!.floats().allSatisfy { $0 == 0 })
        }
    }

    func testObjectiveIsNeverGuessed() throws {
        // Settled at conversion: a source nothing speaks for is refused, naming the flag.
        assertPPError(.usage, mentions: ["sit.pt", "objective", "--objective velocity"]) { try self.convert("sit.pt", levels: 2, objective: nil) }
        let given = try convert("sit.pt", levels: 2, objective: .velocity)
        XCTAssertEqual(given.nativeConfig["objective"]?.stringValue, "velocity")
        XCTAssertEqual(given.nativeConfig["provenance"]?["objective_source"]?.stringValue, "--objective")
        XCTAssertTrue(given.warnings.isEmpty)
        // The official release names settle it when nothing else does (SiT-* velocity, DiT-* epsilon).
        XCTAssertEqual(CheckpointLoader.releaseNameObjective("SiT-XL-2-256.pt"), .velocity)
        XCTAssertEqual(CheckpointLoader.releaseNameObjective("DiT-XL-2-512x512.pt"), .epsilon)
        XCTAssertNil(CheckpointLoader.releaseNameObjective("SiT-custom.pt"))
        XCTAssertNil(CheckpointLoader.releaseNameObjective("my-SiT-XL-2.pt"))
        let folder = Paths.scratch(self)
        XCTAssertEqual(link(Paths.fixture("sit.pt"), "\(folder)/SiT-B-2-256.pt"), 0)
        let named = try CheckpointLoader.load("\(folder)/SiT-B-2-256.pt")
        XCTAssertEqual(named.objective, .velocity)
        XCTAssertTrue(named.objectiveSource.contains("release name"), named.objectiveSource)
        // Metadata says velocity; a contradicting flag is a usage error, not a silent override.
        assertPPError(.usage, mentions: ["--objective", "velocity"]) { try self.convert("sit_train.pt", levels: 2, objective: .epsilon) }
    }

    func testConvertedModelsReproduceTheOfficialForwardFixtures() throws {
        for levels in [2, 3] {
            let result = try convert("sit.pt", levels: levels)
            let model = Model(config: result.config, parameters: try ModelParameters(config: result.config, tensors: result.tensors))
            let ref = try SafetensorsFile.open(Paths.fixture("ref_ppf\(levels)_from_sit_forward.safetensors")).tensors
            let x = ref["x"]!.floats(), y = ref["y"]!.int64s().map { Int32($0) }
            let batch = ref["x"]!.shape[0], c = 4, s = 8
            for name in ref.names where name.hasPrefix("out_t") {
                let t = Float(String(name.dropFirst(5)))!
                let out = model.forward(x: x, t: [Float](repeating: t, count: batch), y: y, batch: batch)
                let expected = ref[name]!.floats()                        // [B, C, S, S]: prediction only
                var prediction = [Float](); prediction.reserveCapacity(expected.count)
                let perSample = c * s * s                                       // first C of 2C output channels
            for b in 0..<batch {
                let start = b * 2 * perSample
                prediction += out[start ..< start + perSample]
            }
                XCTAssertLessThanOrEqual(relativeError(prediction, expected), 1e-5, "\(levels) levels \(name)")
            }
        }
    }

    /// `ppconvert verify` reads a tensor the converted model shares with its source once: byte-identical
    /// tensors are taken from the source, any other stays the model's own.
    func testVerificationSharesOnlyIdenticalTensorsWithTheSource() throws {
        let source = try CheckpointLoader.load(Paths.fixture("sit.pt"))
        let result = try convert("sit.pt", levels: 2)
        var stored = TensorDict()   // as if read back from the written folder: every tensor in memory of its own
        for (name, tensor) in result.tensors.items { stored[name] = TensorView(floats: tensor.floats(), shape: tensor.shape) }
        var changed = stored["blocks.1.attn.proj.bias"]!.floats(); changed[3] += 1e-3
        stored["blocks.1.attn.proj.bias"] = TensorView(floats: changed, shape: [changed.count])
        let (shared, bytes) = Verification.sharingSource(stored, source: source.tensors)
        var expected = 0
        for (name, tensor) in shared.items {
            let identical = name != "blocks.1.attn.proj.bias" && source.tensors[name].map { $0.floats() == tensor.floats() && $0.shape == tensor.shape } == true
            XCTAssertEqual(tensor.storage === source.tensors[name]?.storage, identical, name)
            XCTAssertEqual(tensor.floats(), stored[name]!.floats(), name)
            if identical { expected += tensor.byteCount }
        }
        XCTAssertEqual(bytes, expected)
        XCTAssertGreaterThan(bytes, 0)
        XCTAssertTrue(shared["blocks.0.attn.qkv.weight"]!.storage === source.tensors["blocks.0.attn.qkv.weight"]!.storage)
    }

    func testVerificationPassesAtTheFinestLevelAndReportsCoarseDeviation() throws {
        let source = try CheckpointLoader.load(Paths.fixture("sit.pt"))
        let sourceConfig = try ContainerConversion.modelConfig(of: source, heads: 4)
        let result = try convert("sit.pt", levels: 3)
        let v = Verification(source: try ModelWeights(config: sourceConfig, tensors: source.tensors), ppflow: try ModelWeights(config: result.config, tensors: result.tensors))
        XCTAssertTrue(v.passed)
        XCTAssertEqual(v.levels.map(\.layout), ["down_square", "down_w", "full"])
        XCTAssertLessThanOrEqual(v.levels[2].relativeError, 1e-6)
        XCTAssertGreaterThan(v.levels[0].relativeError, 1e-3, "the coarse level is a warm start, not an equivalence")
        // A broken conversion fails the finest level.
        var broken = result.tensors
        var w = broken["blocks.0.mlp.fc1.bias"]!.floats(); w[0] += 0.5
        broken["blocks.0.mlp.fc1.bias"] = TensorView(floats: w, shape: [256])
        let bad = Verification(source: try ModelWeights(config: sourceConfig, tensors: source.tensors), ppflow: try ModelWeights(config: result.config, tensors: broken))
        XCTAssertFalse(bad.passed)
    }

    func testJobIsDeterministicAndCheckDetectsAnyChangedByte() throws {
        let folder = Paths.scratch(self)
        var options = FromDiTOptions(); options.heads = 4; options.objective = .velocity
        var job = FromDiTJob(sourcePath: Paths.fixture("sit.pt"), options: options)
        job.log = { _ in }
        job.output = "\(folder)/a"
        XCTAssertEqual(try job.run().exitCode, 0)
        job.output = "\(folder)/b"
        XCTAssertEqual(try job.run().exitCode, 0)
        for file in ["config.json", "model.safetensors"] {
            XCTAssertEqual(try fileBytes("\(folder)/a/\(file)"), try fileBytes("\(folder)/b/\(file)"), file)
        }
        job.mode = .check
        XCTAssertEqual(try job.run().exitCode, 0)
        // Flip one byte in the middle of the weights: --check must fail, and the loader must refuse it.
        let path = "\(folder)/b/model.safetensors"
        var bytes = try fileBytes(path)
        bytes[bytes.count / 2] ^= 0x01
        try write(bytes, to: path)
        XCTAssertEqual(try job.run().exitCode, 1)
        assertPPError(.badInput, mentions: ["model.safetensors", "sha256"]) { try CheckpointLoader.load("\(folder)/b") }
        XCTAssertEqual(try CheckpointLoader.load("\(folder)/b", verifyHashes: false).layout, .ppflow(levels: 2))  // on the user's word
        // Nothing was written by --check: no temporary folders left beside the output.
        let leftovers = try DirectoryTree(path: folder).files.filter { $0.hasPrefix(".") }
        XCTAssertEqual(leftovers, [])
    }

    func testNativeOutputLoadsBackAsTheSameModel() throws {
        let folder = Paths.scratch(self)
        let result = try convert("sit.pt", levels: 2, objective: .velocity)
        try NativeCheckpoint.write(tensors: result.tensors, config: result.nativeConfig, to: "\(folder)/n")
        let loaded = try CheckpointLoader.load("\(folder)/n")
        XCTAssertEqual(loaded.layout, .ppflow(levels: 2))
        XCTAssertEqual(loaded.objective, .velocity)
        XCTAssertEqual(loaded.numHeads, 4)
        XCTAssertTrue(CheckpointDiff(loaded.tensors, result.tensors).isEqual)
        let metadata = try SafetensorsFile.open("\(folder)/n/model.safetensors").metadata
        XCTAssertEqual(metadata.first?.0, NativeCheckpoint.metadataKey)
    }

    func relativeError(_ a: [Float], _ b: [Float]) -> Double {
        var d = 0.0, n = 0.0
        for i in 0..<b.count { d += Double(a[i] - b[i]) * Double(a[i] - b[i]); n += Double(b[i]) * Double(b[i]) }
        return (d / max(n, 1e-30)).squareRoot()
    }
}
