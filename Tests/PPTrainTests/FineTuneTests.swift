import Foundation
import PPFileIO
import XCTest
import PPJSON
import PPModel
import PPModelIO
import PPTensor
import PPTrain
import PPConvert
import PPCheckpoint

#if canImport(Glibc)
import Glibc
#endif

/// Scratch folders, the built executables, and small recipes on the random `ppf2.pt` fixture model.
enum FineTuneSupport {
    static func scratch(_ test: XCTestCase) -> String {
        var template = Array("/tmp/ppfinetune-test-XXXXXX".utf8CString)
        let path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
        test.addTeardownBlock { FileOutput.removeTree(path) }
        return path
    }

    /// The products folder holding the test bundle also holds the executables.
    static let binaries: String = {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        return FileOutput.directory(of: String(cString: Array(buffer[0..<max(n, 0)]) + [0]))
    }()

    static var repository: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    /// Random latents [n, C, S, S] with labels, as a data shard.
    static func writeData(_ path: String, count: Int, channels: Int, side: Int, classes: Int, seed: UInt64,
                          dtype: DType = .f32, labelOverride: Int? = nil) throws {
        var random = SeededRandom(seed: seed)
        // Two blobs per class so there is something to learn: class c has mean (c % 3 - 1)·0.5.
        var latents: [Float] = [], labels: [Int64] = []
        for i in 0..<count {
            let label = i % classes
            labels.append(Int64(labelOverride ?? label))
            for _ in 0..<(channels * side * side) { latents.append(Float(Double(label % 3 - 1) * 0.5 + 0.3 * random.normal())) }
        }
        var tensors = TensorDict()
        tensors["latents"] = TensorView(floats: latents, shape: [count, channels, side, side], dtype: dtype)
        tensors["labels"] = TensorView(int64s: labels, shape: [count])
        try TensorFiles.writeSafetensors(tensors, to: path)
    }

    /// A recipe on the ppf2 fixture model (4 heads) and a random data shard, as a JSON object.
    static func recipe(folder: String, steps: Int = 6, extra: [(String, JSONValue)] = []) throws -> JSONObject {
        let model = try ModelLoader.load(Fixtures.path("ppf2.pt"), heads: 4).config
        let data = "\(folder)/data.safetensors"
        var st = stat()
        if stat(data, &st) != 0 {
            try writeData(data, count: 40, channels: model.inChannels, side: model.inputSize, classes: model.numClasses, seed: 5)
        }
        var r = JSONObject([
            ("name", "test"),
            ("start", .object(JSONObject([("checkpoint", .string(Fixtures.path("ppf2.pt"))), ("heads", 4)]))),
            ("data", .object(JSONObject([("train", .array([.string(data)])), ("validation_fraction", 0.2)]))),
            ("pyramid", .object(JSONObject([("shares", [0.5, 0.5])]))),
            ("batch_size", 8), ("steps", .int(Int64(steps))),
            ("learning_rate", .object(JSONObject([("schedule", "cosine"), ("peak", 1e-3), ("warmup_steps", 2)]))),
            ("label_dropout", 0.1), ("ema_decay", 0.9), ("seed", 7), ("max_grad_norm", 1.0),
            ("checkpoint_every", 2), ("validate_every", 3), ("output", .string("\(folder)/run")),
        ])
        for (k, v) in extra { r[k] = v }
        return r
    }

    static func save(_ recipe: JSONObject, _ path: String) throws {
        try FileOutput.writeFile(path, bytes: Array(JSON.serialize(.object(recipe)).utf8))
    }

    static func bytes(_ path: String) throws -> [UInt8] {
        let storage = try ByteStorage(mappingFile: path)
        return Array(storage.bytes)
    }
}

final class RecipeValidationTests: XCTestCase {
    /// Each broken recipe is refused with a one-line error naming the file, the field and the problem.
    func testBrokenRecipesAreRefusedWithTheField() throws {
        let folder = FineTuneSupport.scratch(self)
        let good = try FineTuneSupport.recipe(folder: folder)
        let path = "\(folder)/r.json"
        func refused(_ edit: (inout JSONObject) throws -> Void, kind: PPError.Kind, entry: String?, mentions: String,
                     file: StaticString = #filePath, line: UInt = #line) throws {
            var r = good
            try edit(&r)
            try FineTuneSupport.save(r, path)
            do {
                let recipe = try Recipe.load(path)
                _ = try FineTuneRun(recipe: recipe, folder: "\(folder)/never", resume: false, log: { _ in })
                XCTFail("accepted a broken recipe (\(mentions))", file: file, line: line)
            } catch let error as PPError {
                XCTAssertEqual(error.kind, kind, error.description, file: file, line: line)
                XCTAssertEqual(error.entry, entry, error.description, file: file, line: line)
                XCTAssertTrue(error.description.contains(mentions), error.description, file: file, line: line)
            }
        }
        try refused({ $0["learning_rat"] = 1 }, kind: .badInput, entry: "learning_rat", mentions: "unknown field")
        try refused({ $0["adamw"] = .object(JSONObject([("beta1", 0.9), ("betta2", 0.99)])) }, kind: .badInput, entry: "adamw.betta2", mentions: "unknown field")
        try refused({ $0["batch_size"] = "32" }, kind: .badInput, entry: "batch_size", mentions: "expected an integer, got a string")
        try refused({ $0["ema_decay"] = .bool(true) }, kind: .badInput, entry: "ema_decay", mentions: "expected a number")
        try refused({ $0["steps"] = nil }, kind: .badInput, entry: "steps", mentions: "required field is missing")
        try refused({ $0["start"] = .object(JSONObject([("checkpoint", "no/such/model.pt")])) }, kind: .missingInput, entry: "start.checkpoint", mentions: "does not exist")
        try refused({ $0["data"] = .object(JSONObject([("train", ["missing.safetensors"])])) }, kind: .missingInput, entry: "data.train[0]", mentions: "does not exist")
        try refused({ $0["pyramid"] = .object(JSONObject([("shares", [0.5, 0.3])])) }, kind: .badInput, entry: "pyramid.shares", mentions: "summing to 1")
        try refused({ $0["pyramid"] = .object(JSONObject([("shares", [0.5, 0.25, 0.25])])) }, kind: .badInput, entry: "pyramid.shares", mentions: "the model has 2 level(s)")
        try refused({ $0["learning_rate"] = .object(JSONObject([("schedule", "linear"), ("peak", 1e-4)])) }, kind: .badInput, entry: "learning_rate.schedule", mentions: "constant, warmup or cosine")
        try refused({ $0["phases"] = .array([.object(JSONObject([("train", ["blocks.99.*"])]))]) }, kind: .badInput, entry: "phases[0].train", mentions: "matches no trainable tensor")
        let digits = "\(FineTuneSupport.repository)/examples/digits/"
        try refused({ $0["start"] = .object(JSONObject([("from_dit", .object(JSONObject([("source", .string(digits + "digits-sit.zip")), ("detail_scale", 0.5)])))])) },
                    kind: .badInput, entry: "start.from_dit.detail_scale", mentions: "only the calibrated initializer")
        try refused({ $0["start"] = .object(JSONObject([("from_dit", .object(JSONObject([("source", .string(digits + "digits-sit.zip")), ("initializer", "calibrated"),
                                                                                         ("calibration_data", .string(digits + "digits.safetensors")), ("detail_scale", -1)])))])) },
                    kind: .badInput, entry: "start.from_dit.detail_scale", mentions: "below the minimum")
        var off = good                                                   // 0 turns the detail off: fine with any initializer
        off["start"] = .object(JSONObject([("from_dit", .object(JSONObject([("source", .string(digits + "digits-sit.zip")), ("detail_scale", 0)])))]))
        try FineTuneSupport.save(off, path)
        guard case .fromDiT(let start) = try Recipe.load(path).start else { return XCTFail("expected a from_dit start") }
        XCTAssertEqual(start.detailScale, 0)
        // Data that does not fit the model is refused before training.
        let model = try ModelLoader.load(Fixtures.path("ppf2.pt"), heads: 4).config
        let wrongShape = "\(folder)/wrong-shape.safetensors", wrongLabel = "\(folder)/wrong-label.safetensors", wrongType = "\(folder)/wrong-type.safetensors"
        try FineTuneSupport.writeData(wrongShape, count: 4, channels: model.inChannels + 1, side: model.inputSize, classes: 2, seed: 1)
        try FineTuneSupport.writeData(wrongLabel, count: 4, channels: model.inChannels, side: model.inputSize, classes: 2, seed: 1, labelOverride: model.numClasses)
        var ints = TensorDict()
        ints["latents"] = TensorView(int64s: [Int64](repeating: 0, count: 4 * model.inChannels * model.inputSize * model.inputSize),
                                     shape: [4, model.inChannels, model.inputSize, model.inputSize])
        ints["labels"] = TensorView(int64s: [0, 0, 0, 0], shape: [4])
        try TensorFiles.writeSafetensors(ints, to: wrongType)
        try refused({ $0["data"] = .object(JSONObject([("train", .array([.string(wrongShape)]))])) }, kind: .badInput, entry: "latents", mentions: "but the model takes")
        try refused({ $0["data"] = .object(JSONObject([("train", .array([.string(wrongLabel)]))])) }, kind: .badInput, entry: "labels", mentions: "is outside 0..<\(model.numClasses)")
        try refused({ $0["data"] = .object(JSONObject([("train", .array([.string(wrongType)]))])) }, kind: .badInput, entry: "latents", mentions: "dtype i64")
        // An image folder needs data.vae; a VAE whose latents do not fit the model is refused by name.
        let images = "\(FineTuneSupport.repository)/examples/tiny-images"
        try refused({ $0["data"] = .object(JSONObject([("train", .array([.string(images)]))])) }, kind: .badInput, entry: "data.train[0]", mentions: "give data.vae")
        let vae = "\(FineTuneSupport.repository)/Tests/Fixtures/vae-small-v1/vae"
        var withVAE = good
        withVAE["data"] = .object(JSONObject([("train", .array([.string(images)])), ("vae", .string(vae))]))
        try FineTuneSupport.save(withVAE, path)
        let parsed = try Recipe.load(path)
        XCTAssertEqual(parsed.dataFiles, [.imageFolder(images)])
        XCTAssertEqual(parsed.vae, vae)
    }

    /// The recipes shipped in recipes/ parse (the XL ones need downloaded files, so only their JSON is checked).
    func testShippedRecipesParse() throws {
        for name in ["digits-ppf2", "digits-ppf3", "digits-ppf2-1000", "digits-sit-1000", "fixture-images"] {
            let recipe = try Recipe.load("\(FineTuneSupport.repository)/recipes/\(name).json")
            XCTAssertEqual(recipe.name, name)
        }
        for (name, shares) in [("ppf2-from-sit-xl", [0.5, 0.5]), ("ppf3-from-sit-xl", [0.5, 0.25, 0.25]), ("ppf2-from-sit-xl-images", [0.5, 0.5])] {
            let json = try JSON.parse(file: "\(FineTuneSupport.repository)/recipes/\(name).json")
            XCTAssertEqual(json["learning_rate"]?["peak"]?.doubleValue, 1e-4)
            XCTAssertEqual(json["adamw"]?["weight_decay"]?.doubleValue, 0)
            XCTAssertEqual(json["batch_size"]?.intValue, 256)
            XCTAssertEqual(json["ema_decay"]?.doubleValue, 0.9999)
            XCTAssertEqual(json["label_dropout"]?.doubleValue, 0.1)
            XCTAssertEqual(json["pyramid"]?["shares"]?.arrayValue?.compactMap(\.doubleValue), shares)
        }
    }

    func testLevelCountsAndSchedules() throws {
        let folder = FineTuneSupport.scratch(self)
        var r = try FineTuneSupport.recipe(folder: folder, steps: 10)
        r["batch_size"] = 7
        r["pyramid"] = .object(JSONObject([("shares", [0.5, 0.5])]))
        try FineTuneSupport.save(r, "\(folder)/r.json")
        let recipe = try Recipe.load("\(folder)/r.json")
        XCTAssertEqual(recipe.levelCounts(), [4, 3])
        // cosine with 2 warmup steps from 1e-3 to 0: 5e-4, 1e-3, then half-cosine down to 0 at step 10.
        XCTAssertEqual(recipe.learningRate(atStep: 1), 5e-4, accuracy: 1e-12)
        XCTAssertEqual(recipe.learningRate(atStep: 2), 1e-3, accuracy: 1e-12)
        XCTAssertEqual(recipe.learningRate(atStep: 6), 5e-4, accuracy: 1e-12)
        XCTAssertEqual(recipe.learningRate(atStep: 10), 0, accuracy: 1e-12)
        XCTAssertTrue(NamePattern.matches("blocks.*.attn.*", "blocks.3.attn.qkv.weight"))
        XCTAssertFalse(NamePattern.matches("x_embedder.proj1.*", "x_embedder.proj.weight"))
    }
}

final class FineTuneRunTests: XCTestCase {
    /// A phase that trains only the level embedding leaves every other raw weight bit-identical.
    func testFrozenTensorsStayBitIdentical() throws {
        let folder = FineTuneSupport.scratch(self)
        let r = try FineTuneSupport.recipe(folder: folder, steps: 4, extra: [
            ("phases", .array([.object(JSONObject([("steps", 4), ("train", ["level_embedder.*", "final_layer.linear1.*"])]))])),
        ])
        try FineTuneSupport.save(r, "\(folder)/r.json")
        let recipe = try Recipe.load("\(folder)/r.json")
        let start = try ModelLoader.load(Fixtures.path("ppf2.pt"), heads: 4).parameters()
        let run = try FineTuneRun(recipe: recipe, folder: "\(folder)/run", resume: false, log: { _ in })
        for _ in 0..<4 { _ = try run.trainStep() }
        for name in start.layout.names {
            let r = start.layout.range(of: name)!
            let same = Array(run.model.parameters[r]) == Array(start.values[r])
            if name.hasPrefix("level_embedder") || name.hasPrefix("final_layer.linear1") {
                XCTAssertFalse(same, "\(name) should have trained")
            } else {
                XCTAssertTrue(same, "\(name) is frozen but changed")
            }
        }
    }

    /// A diverging run stops at the first non-finite loss with exit 1, naming the last good checkpoint,
    /// and leaves that checkpoint in place.
    func testNonFiniteLossStopsAndKeepsTheLastCheckpoint() throws {
        let folder = FineTuneSupport.scratch(self)
        let r = try FineTuneSupport.recipe(folder: folder, steps: 50, extra: [
            ("learning_rate", .object(JSONObject([("peak", 1e30)]))), ("max_grad_norm", .null), ("checkpoint_every", 1), ("validate_every", 50)])
        try FineTuneSupport.save(r, "\(folder)/r.json")
        let recipe = try Recipe.load("\(folder)/r.json")
        try FineTuneRun.prepareFolder(recipe.output, recipe: recipe, resume: false)
        let run = try FineTuneRun(recipe: recipe, folder: recipe.output, resume: false, log: { _ in })
        do {
            try run.run(onStep: { _ in }, onValidation: { _ in })
            XCTFail("a learning rate of 1e30 should diverge")
        } catch let error as PPError {
            XCTAssertEqual(error.exitCode, 1)
            let last = try XCTUnwrap(RunFolder.latestCheckpoint(recipe.output))
            XCTAssertEqual(last.step, run.step)
            XCTAssertTrue(error.description.contains("training stopped") && error.description.contains(last.path), error.description)
            let state = try TensorFiles.read(path: RunFolder.statePath(last.path))
            XCTAssertTrue(state.items.allSatisfy { $0.tensor.floats().allSatisfy(\.isFinite) }, "the kept checkpoint holds only finite numbers")
        }
    }

    /// A short run on the digits example (converted with the repeat rule) lowers the validation loss of
    /// every level.
    func testShortDigitsRunLowersValidationLossAtEveryLevel() throws {
        let folder = FineTuneSupport.scratch(self)
        var r = try JSON.parse(file: "\(FineTuneSupport.repository)/recipes/digits-ppf2.json").objectValue!
        r["start"] = .object(JSONObject([("from_dit", .object(JSONObject([
            ("source", .string("\(FineTuneSupport.repository)/examples/digits/digits-sit.zip")), ("levels", 2)])))]))
        r["data"] = .object(JSONObject([("train", .array([.string("\(FineTuneSupport.repository)/examples/digits/digits.safetensors")])),
                                        ("validation_fraction", 0.05)]))
        r["steps"] = 30; r["batch_size"] = 16; r["validate_every"] = 30; r["checkpoint_every"] = 30; r["validation_samples"] = 64
        r["phases"] = nil
        r["learning_rate"] = .object(JSONObject([("schedule", "constant"), ("peak", 5e-4)]))
        r["ema_decay"] = 0.8
        r["output"] = .string("\(folder)/run")
        try FineTuneSupport.save(r, "\(folder)/r.json")
        let recipe = try Recipe.load("\(folder)/r.json")
        try FineTuneRun.prepareFolder(recipe.output, recipe: recipe, resume: false)
        let run = try FineTuneRun(recipe: recipe, folder: recipe.output, resume: false, log: { _ in })
        var validations: [ValidationReport] = []
        try run.run(onStep: { _ in }, onValidation: { validations.append($0) })
        let summary = try run.finish(seconds: 0)
        XCTAssertEqual(validations.map(\.step), [0, 30])
        for level in 0..<2 {
            XCTAssertLessThan(validations[1].levelLoss[level], validations[0].levelLoss[level], "level \(level)")
        }
        XCTAssertEqual(summary.before ?? [], validations[0].levelLoss)
        XCTAssertEqual(summary.pictures.count, 2)
        // The checkpoint is a native PPFlow folder the loader reads, holding the EMA weights.
        let final = try ModelLoader.load(summary.finalCheckpoint)
        XCTAssertEqual(final.parameters().values, run.ema.values)
    }

    /// A one-level SiT as `start.checkpoint` continues its own training (the baseline a pyramid fine-tune is
    /// judged against, docs/QUALITY.md): the run starts from the SiT's weights exactly, trains them, and its
    /// checkpoint is a SiT the loader reads back.
    func testSiTStartContinuesTraining() throws {
        let folder = FineTuneSupport.scratch(self)
        let sitPath = "\(FineTuneSupport.repository)/examples/digits/digits-sit.zip"
        var r = try JSON.parse(file: "\(FineTuneSupport.repository)/recipes/digits-sit-1000.json").objectValue!
        r["start"] = .object(JSONObject([("checkpoint", .string(sitPath))]))
        r["data"] = .object(JSONObject([("train", .array([.string("\(FineTuneSupport.repository)/examples/digits/digits.safetensors")])),
                                        ("validation_fraction", 0.05)]))
        r["steps"] = 10; r["batch_size"] = 16; r["validate_every"] = 10; r["checkpoint_every"] = 10; r["validation_samples"] = 64
        r["learning_rate"] = .object(JSONObject([("schedule", "constant"), ("peak", 1e-4)]))
        r["output"] = .string("\(folder)/run")
        try FineTuneSupport.save(r, "\(folder)/r.json")
        let recipe = try Recipe.load("\(folder)/r.json")
        try FineTuneRun.prepareFolder(recipe.output, recipe: recipe, resume: false)
        let run = try FineTuneRun(recipe: recipe, folder: recipe.output, resume: false, log: { _ in })
        let source = try ModelLoader.load(sitPath).parameters().values
        XCTAssertEqual(run.ema.values, source)
        var validations: [ValidationReport] = []
        try run.run(onStep: { _ in }, onValidation: { validations.append($0) })
        let summary = try run.finish(seconds: 0)
        XCTAssertEqual(validations.map(\.step), [0, 10])
        XCTAssertEqual(validations[1].levelLoss.count, 1)
        XCTAssertTrue(validations[1].levelLoss[0].isFinite)
        XCTAssertLessThan(validations[1].levelLoss[0], 1.5 * validations[0].levelLoss[0])
        XCTAssertNotEqual(run.ema.values, source)
        let final = try ModelLoader.load(summary.finalCheckpoint)
        XCTAssertEqual(final.config.levels, 1)
        XCTAssertEqual(final.checkpoint.family, "SiT")
        XCTAssertEqual(final.parameters().values, run.ema.values)
    }
}

final class FineTuneCommandTests: XCTestCase {
    func runTool(_ arguments: [String]) -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "\(FineTuneSupport.binaries)/ppfinetune")
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe; process.standardError = pipe
        do { try process.run() } catch { return (-1, "\(error)") }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// `ppfinetune step --attention official` reproduces the official trainer's step on its fixture.
    func testStepCommandMatchesTheOfficialFixture() throws {
        let folder = FineTuneSupport.scratch(self)
        for levels in [2, 3] {
            let reference = try TensorFiles.read(path: Fixtures.path("ref_ppf\(levels)_train_step.safetensors"))
            var batch = TensorDict()
            for name in ["x1", "x0", "t", "y"] { batch[name] = try XCTUnwrap(reference[name]) }
            try TensorFiles.writeSafetensors(batch, to: "\(folder)/batch\(levels).safetensors")
            let out = "\(folder)/out\(levels).safetensors"
            let result = runTool(["step", Fixtures.path("ppf\(levels).pt"), "--batch", "\(folder)/batch\(levels).safetensors", "--lr", "1e-3",
                                  "--ema-decay", "0.99", "--out", out, "--attention", "official", "--heads", "4"])
            XCTAssertEqual(result.status, 0, result.output)
            let written = try TensorFiles.read(path: out)
            assertClose(try XCTUnwrap(written["loss"]).floats(), try XCTUnwrap(reference["loss"]).floats(), tolerance: 1e-5, "loss")
            let gradients = reference.names.filter { $0.hasPrefix("grad.") }
            XCTAssertEqual(written.names.filter { $0.hasPrefix("grad.") }.sorted(), gradients.sorted())
            for name in gradients {
                assertClose(try XCTUnwrap(written[name]).floats(), try XCTUnwrap(reference[name]).floats(), tolerance: 1e-4, "ppf\(levels) \(name)")
            }
            XCTAssertEqual(written.names.filter { $0.hasPrefix("after.") }.count, reference.names.filter { $0.hasPrefix("after.") }.count)
            XCTAssertEqual(written.names.filter { $0.hasPrefix("ema.") }.count, reference.names.filter { $0.hasPrefix("ema.") }.count)
        }
    }

    /// A run killed (SIGKILL) after its first checkpoint and resumed ends with the same bytes as a run
    /// that was never interrupted: weights, EMA, AdamW moments, RNG and data position.
    func testKilledAndResumedRunIsBitIdentical() throws {
        let folder = FineTuneSupport.scratch(self)
        let steps = 300
        var r = try FineTuneSupport.recipe(folder: folder, steps: steps)
        r["checkpoint_every"] = 10; r["validate_every"] = 100; r["keep_checkpoints"] = 1
        r["phases"] = .array([.object(JSONObject([("steps", 5), ("train", ["level_embedder.*"])])), .object(JSONObject([("train", ["*"])]))])
        try FineTuneSupport.save(r, "\(folder)/r.json")

        let whole = runTool(["--recipe", "\(folder)/r.json", "--out", "\(folder)/whole", "--threads", "1"])
        XCTAssertEqual(whole.status, 0, whole.output)

        let process = Process()
        process.executableURL = URL(fileURLWithPath: "\(FineTuneSupport.binaries)/ppfinetune")
        process.arguments = ["--recipe", "\(folder)/r.json", "--out", "\(folder)/killed", "--threads", "1"]
        process.standardOutput = FileHandle.nullDevice; process.standardError = FileHandle.nullDevice
        try process.run()
        var killedAt: Int? = nil
        while process.isRunning {
            if let latest = RunFolder.latestCheckpoint("\(folder)/killed") {
                kill(process.processIdentifier, SIGKILL)
                killedAt = latest.step
                break
            }
            usleep(1000)
        }
        process.waitUntilExit()
        let stepAtKill = try XCTUnwrap(killedAt, "the run finished before its first checkpoint was seen")
        XCTAssertEqual(process.terminationReason, .uncaughtSignal, "the child was not killed (it had finished)")
        XCTAssertLessThan(stepAtKill, steps)
        var st = stat()
        XCTAssertNotEqual(stat("\(folder)/killed/final", &st), 0, "killed before the end, so no final checkpoint")

        let resumed = runTool(["--recipe", "\(folder)/r.json", "--resume", "\(folder)/killed", "--threads", "1"])
        XCTAssertEqual(resumed.status, 0, resumed.output)
        XCTAssertTrue(resumed.output.contains("resuming from"), resumed.output)
        for file in ["model.safetensors", "state/train-state.safetensors"] {
            let a = try FineTuneSupport.bytes("\(folder)/whole/final/\(file)"), b = try FineTuneSupport.bytes("\(folder)/killed/final/\(file)")
            XCTAssertTrue(a == b, "\(file) differs between the uninterrupted and the resumed run")
        }
        // The run moves to the official trainer: raw weights as model, EMA as ema, AdamW state as opt.
        let exported = "\(folder)/run.pt"
        let convert = Process()
        convert.executableURL = URL(fileURLWithPath: "\(FineTuneSupport.binaries)/ppconvert")
        convert.arguments = ["convert", "\(folder)/killed", exported, "--format", "torch-train"]
        try convert.run(); convert.waitUntilExit()
        XCTAssertEqual(convert.terminationStatus, 0)
        let state = try TensorFiles.read(path: "\(folder)/killed/final/state/train-state.safetensors")
        let finalModel = try ModelLoader.load("\(folder)/killed/final")
        let model = try CheckpointLoader.load(exported, weights: .model).tensors, ema = try CheckpointLoader.load(exported, weights: .ema).tensors
        for name in finalModel.weights.layout.names {
            XCTAssertEqual(try XCTUnwrap(model[name]).floats(), try XCTUnwrap(state["param." + name]).floats(), name)
            XCTAssertEqual(try XCTUnwrap(ema[name]).floats(), try XCTUnwrap(finalModel.parameters().tensors()[name]).floats(), name)
        }
        // Resuming under another recipe is refused.
        var other = r
        other["seed"] = 8
        try FineTuneSupport.save(other, "\(folder)/other.json")
        let refused = runTool(["--recipe", "\(folder)/other.json", "--resume", "\(folder)/killed"])
        XCTAssertEqual(refused.status, 64, refused.output)
    }
}
