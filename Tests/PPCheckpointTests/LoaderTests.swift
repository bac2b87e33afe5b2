import PPCheckpoint
import PPFileIO
import PPJSON
import PPSafetensors
import PPTensor
import PPTorchFormat
import XCTest

final class LoaderTests: XCTestCase {
    func testEveryFixtureCheckpointLoadsWithItsLayout() throws {
        let expectations: [(String, String)] = [
            ("sit.pt", "DiT/SiT"), ("sit.safetensors", "DiT/SiT"), ("sit_bf16.pt", "DiT/SiT"),
            ("sit_fp16.safetensors", "DiT/SiT"), ("sit_train.pt", "DiT/SiT"), ("dit.pt", "DiT/SiT"),
            ("ppf2.pt", "PPFlow-2"), ("ppf3.pt", "PPFlow-3"), ("ppf2_from_sit.safetensors", "PPFlow-2"),
            ("ppf3_from_sit.safetensors", "PPFlow-3"), ("dit_diffusers.zip", "DiT/SiT"),
        ]
        for (name, layout) in expectations {
            let loaded = try CheckpointLoader.load(Paths.fixture(name))
            XCTAssertEqual(loaded.layout.description, layout, name)
            XCTAssertGreaterThan(loaded.tensors.count, 10, name)
        }
    }

    func testTorchAndSafetensorsGiveTheSameTensors() throws {
        let pt = try CheckpointLoader.load(Paths.fixture("sit.pt"))
        let st = try CheckpointLoader.load(Paths.fixture("sit.safetensors"))
        XCTAssertTrue(CheckpointDiff(pt.tensors, st.tensors).isEqual)
        XCTAssertEqual(pt.objective, .unknown, "a bare state dict does not say what it predicts")
    }

    func testHalfPrecisionFilesDecodeToTheRoundedFloat32Values() throws {
        let f32 = try CheckpointLoader.load(Paths.fixture("sit.safetensors")).tensors
        for (name, dtype) in [("sit_bf16.pt", DType.bf16), ("sit_fp16.safetensors", DType.f16)] {
            let half = try CheckpointLoader.load(Paths.fixture(name)).tensors
            for key in f32.names {
                let exact = f32[key]!.floats()
                let rounded = exact.map { dtype == .bf16 ? HalfFloat.bf16ToF32(HalfFloat.f32ToBF16($0)) : HalfFloat.f16ToF32(HalfFloat.f32ToF16($0)) }
                XCTAssertEqual(half[key]!.dtype, dtype, name)
                XCTAssertEqual(half[key]!.floats(), rounded, "\(name) \(key)")
            }
        }
    }

    func testTrainCheckpointTakesEMAByDefaultAndModelOnRequest() throws {
        let ema = try CheckpointLoader.load(Paths.fixture("sit_train.pt"))
        XCTAssertEqual(ema.selectedStateDict, "ema")
        XCTAssertEqual(Set(ema.availableStateDicts), ["model", "ema"])
        let expectedEMA = try SafetensorsFile.open(Paths.fixture("sit_train_ema.safetensors")).tensors
        XCTAssertTrue(CheckpointDiff(ema.tensors, expectedEMA).isEqual)
        XCTAssertTrue(ema.extraEntries.contains { $0.key == "args" }, "args are shown as data")

        let model = try CheckpointLoader.load(Paths.fixture("sit_train.pt"), weights: .model)
        XCTAssertEqual(model.selectedStateDict, "model")
        XCTAssertTrue(CheckpointDiff(model.tensors, try CheckpointLoader.load(Paths.fixture("sit.pt")).tensors).isEqual)
        // The fixture's args say which objective it was trained for.
        XCTAssertEqual(model.objective, .velocity, model.objectiveSource)
    }

    func testDiffusersZipMapsBackToTheOriginalDiT() throws {
        let diffusers = try CheckpointLoader.load(Paths.fixture("dit_diffusers.zip"))
        XCTAssertEqual(diffusers.family, "diffusers DiT")
        XCTAssertTrue(diffusers.diffusersNumerics)
        XCTAssertEqual(diffusers.objective, .epsilon, diffusers.objectiveSource)
        XCTAssertEqual(diffusers.computedKeys, ["pos_embed"])
        var original = try CheckpointLoader.load(Paths.fixture("dit.pt")).tensors
        original["pos_embed"] = nil
        let diff = CheckpointDiff(diffusers.tensors, original)
        XCTAssertTrue(diff.isEqual, diff.lines().joined(separator: "\n"))
        XCTAssertEqual(diffusers.tensors.names, original.names, "original state_dict order")
    }

    func testDiffusersBlocksWithDifferentEmbeddersAreRefused() throws {
        let folder = Paths.scratch(self)
        let archive = try ZipArchive(path: Paths.fixture("dit_diffusers.zip"))
        let weights = try SafetensorsFile.parse(
            ZipTree(archive: archive, origin: "z").open("transformer/diffusion_pytorch_model.safetensors"), origin: "w").tensors
        var edited = weights
        let key = "transformer_blocks.1.norm1.emb.timestep_embedder.linear_1.bias"
        var values = edited[key]!.floats()
        values[0] += 1
        edited[key] = TensorView(floats: values, shape: edited[key]!.shape)
        try FileOutput.writeFolder("\(folder)/dit") { tmp in
            try FileOutput.writeFolder("\(tmp)/transformer") { t in
                try SafetensorsWriter.write(edited, metadata: [], to: "\(t)/diffusion_pytorch_model.safetensors")
                try FileOutput.writeFile("\(t)/config.json", bytes: Array(#"{"_class_name": "DiTTransformer2DModel", "num_attention_heads": 4}"#.utf8))
            }
        }
        assertPPError(.badInput, mentions: [key, "differs"]) { try CheckpointLoader.load("\(folder)/dit") }
    }

    func testDigitsExampleZipReadsItsConfig() throws {
        let loaded = try CheckpointLoader.load(Paths.digitsZip)
        XCTAssertEqual(loaded.containers, ["zip archive", "torch.save"])
        XCTAssertEqual(loaded.weightsFile, "digits_sit.pt")
        XCTAssertEqual(loaded.family, "SiT")
        XCTAssertEqual(loaded.objective, .velocity)
        XCTAssertEqual(loaded.numHeads, 4)
        XCTAssertEqual(loaded.inputSize, 16)
    }

    func testConfigBesideAWeightsFileIsRead() throws {
        let folder = Paths.scratch(self)
        try write(try fileBytes(Paths.fixture("sit.safetensors")), to: "\(folder)/weights.safetensors")
        try write(Array(#"{"num_heads": 4, "prediction": "velocity", "path_type": "Linear"}"#.utf8), to: "\(folder)/config.json")
        let loaded = try CheckpointLoader.load("\(folder)/weights.safetensors")
        XCTAssertEqual(loaded.objective, .velocity)
        XCTAssertEqual(loaded.numHeads, 4)
        // The same folder given as a folder.
        XCTAssertEqual(try CheckpointLoader.load(folder).objective, .velocity)
    }

    func testShardedSetInsideAZip() throws {
        let folder = Paths.scratch(self)
        let tensors = try CheckpointLoader.load(Paths.fixture("sit.safetensors")).tensors
        try FileOutput.writeFolder("\(folder)/sharded") { tmp in
            try ShardedSafetensors.write(tensors, metadata: [], folder: tmp, maxShardBytes: 200_000)
        }
        XCTAssertTrue(CheckpointDiff(try CheckpointLoader.load("\(folder)/sharded").tensors, tensors).isEqual)
        // Zip the folder with the system zip tool (stored and deflated entries both occur in the wild).
        XCTAssertEqual(system("cd \(folder) && zip -qr sharded.zip sharded"), 0)
        let zipped = try CheckpointLoader.load("\(folder)/sharded.zip")
        XCTAssertEqual(zipped.containers.first, "zip archive")
        XCTAssertTrue(CheckpointDiff(zipped.tensors, tensors).isEqual)
    }

    func testBadInputsGiveOneLineErrors() throws {
        let folder = Paths.scratch(self)
        try write([], to: "\(folder)/empty.pt")
        assertPPError(.badInput, mentions: ["empty.pt", "empty"]) { try CheckpointLoader.load("\(folder)/empty.pt") }
        try write(Array("hello world, not weights".utf8), to: "\(folder)/text.bin")
        assertPPError(.badInput, mentions: ["text.bin", "not a format"]) { try CheckpointLoader.load("\(folder)/text.bin") }
        try write([0x80, 0x02, 0x8a, 0x0a], to: "\(folder)/legacy.pt")
        assertPPError(.unsupported, mentions: ["legacy.pt", "legacy"]) { try CheckpointLoader.load("\(folder)/legacy.pt") }
        FileOutput.removeTree("\(folder)/nothing"); _ = mkdir("\(folder)/nothing", 0o755)
        try write(Array("{}".utf8), to: "\(folder)/nothing/notes.json")
        assertPPError(.badInput, mentions: ["nothing", "no weights found"]) { try CheckpointLoader.load("\(folder)/nothing") }
        assertPPError(.missingInput, mentions: ["does-not-exist"]) { try CheckpointLoader.load("\(folder)/does-not-exist.pt") }
        let onlyModel = "\(folder)/only-model.pt"
        try TorchWriter.write(.dict([("model", .stateDict(try CheckpointLoader.load(Paths.fixture("sit.pt")).tensors))]),
                              to: onlyModel, archiveName: "only-model")
        assertPPError(.usage, mentions: ["only-model.pt", "ema", "'model'"]) { try CheckpointLoader.load(onlyModel, weights: .ema) }
        XCTAssertEqual(try CheckpointLoader.load(onlyModel).selectedStateDict, "model")
    }
}
