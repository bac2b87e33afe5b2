import PPCheckpoint
import PPConvert
import PPFileIO
import PPJSON
import PPSafetensors
import PPTensor
import PPTestSupport
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// A new user's first day (issue 15): nothing of theirs is lost, outputs are only what was asked for and
/// are checked before work starts, the toolkit reads back what it wrote, and it says what it used.
extension CommandLineTests {
    func testFromDiTNeverDeletesAFolderTheToolkitDidNotWrite() throws {
        let folder = Paths.scratch(self)
        let out = "\(folder)/myfolder"
        XCTAssertEqual(mkdir(out, 0o755), 0)
        try write(Array("my notes".utf8), to: "\(out)/mynotes.txt")
        for force in [false, true] {
            let r = try run("ppconvert", ["from-dit", Paths.digitsZip, "--no-verify", "--out", out] + (force ? ["--force"] : []))
            XCTAssertEqual(r.status, 73, r.stderr)
            XCTAssertTrue(r.stderr.contains(out) && r.stderr.contains("mynotes.txt"), r.stderr)
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
            XCTAssertEqual(try fileBytes("\(out)/mynotes.txt"), Array("my notes".utf8))
            XCTAssertEqual(OutputTarget.listFolder(out), ["mynotes.txt"])
        }
        // An empty folder is used; the toolkit's own earlier output is replaced only with --force.
        let empty = "\(folder)/empty"
        XCTAssertEqual(mkdir(empty, 0o755), 0)
        XCTAssertEqual(try run("ppconvert", ["from-dit", Paths.digitsZip, "--no-verify", "--out", empty]).status, 0)
        let again = try run("ppconvert", ["from-dit", Paths.digitsZip, "--no-verify", "--levels", "3", "--out", empty])
        XCTAssertEqual(again.status, 73)
        XCTAssertTrue(again.stderr.contains("--force"), again.stderr)
        XCTAssertEqual(try run("ppconvert", ["from-dit", Paths.digitsZip, "--no-verify", "--levels", "3", "--out", empty, "--force"]).status, 0)
        XCTAssertEqual(try CheckpointLoader.load(empty).layout, .ppflow(levels: 3))
        // A user's file added to the toolkit's folder is never deleted, not even with --force.
        try write(Array("mine".utf8), to: "\(empty)/extra.txt")
        let mixed = try run("ppconvert", ["from-dit", Paths.digitsZip, "--no-verify", "--out", empty, "--force"])
        XCTAssertEqual(mixed.status, 73)
        XCTAssertTrue(mixed.stderr.contains("extra.txt"), mixed.stderr)
        XCTAssertEqual(try fileBytes("\(empty)/extra.txt"), Array("mine".utf8))
    }

    func testConvertAndReportsRefuseToOverwriteFiles() throws {
        let folder = Paths.scratch(self)
        let notes = "\(folder)/notes.txt"
        try write(Array("keep me".utf8), to: notes)
        let r = try run("ppconvert", ["convert", Paths.digitsZip, notes, "--format", "torch"])
        XCTAssertEqual(r.status, 73, r.stderr)
        XCTAssertTrue(r.stderr.contains("notes.txt") && r.stderr.contains("--force"), r.stderr)
        XCTAssertEqual(try fileBytes(notes), Array("keep me".utf8))
        // A report file is an output too; --force replaces files.
        let report = try run("ppconvert", ["from-dit", Paths.digitsZip, "--no-verify", "--out", "\(folder)/m", "--json", notes])
        XCTAssertEqual(report.status, 73, report.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(folder)/m"), "checked before any work")
        XCTAssertEqual(try run("ppconvert", ["convert", Paths.digitsZip, notes, "--format", "torch", "--force"]).status, 0)
        XCTAssertEqual(try CheckpointLoader.load(notes).family, "SiT")
    }

    func testSampleWritesOnlyWhatWasAskedAndChecksOutputsFirst() throws {
        let folder = Paths.scratch(self)
        let png = "\(folder)/grid.png"
        let r = try run("ppsample", [Paths.digitsZip, "--per-class", "1", "--steps", "3", "--png", png])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(OutputTarget.listFolder(folder).filter { $0 != "out" && $0 != "err" }, ["grid.png"], "no samples.safetensors unless asked")
        // A missing output folder is refused at once, before sampling, and nothing is written.
        let missing = try run("ppsample", [Paths.digitsZip, "--per-class", "1", "--steps", "3", "--png", "\(folder)/nodir/g.png"])
        XCTAssertEqual(missing.status, 73, missing.stderr)
        XCTAssertTrue(missing.stderr.contains("nodir"), missing.stderr)
        let again = try run("ppsample", [Paths.digitsZip, "--per-class", "1", "--steps", "3", "--png", png])
        XCTAssertEqual(again.status, 73, again.stderr)
        // ppsample forward and ppfinetune step refuse an existing OUT the same way.
        try write([1, 2, 3], to: "\(folder)/taken.safetensors")
        let step = try run("ppfinetune", ["step", Paths.fixture("ppf2.pt"), "--heads", "4", "--batch", Paths.fixture("ref_ppf2_train_step.safetensors"),
                                          "--lr", "1e-3", "--ema-decay", "0.99", "--out", "\(folder)/taken.safetensors"])
        XCTAssertEqual(step.status, 73, step.stderr)
        XCTAssertEqual(try fileBytes("\(folder)/taken.safetensors"), [1, 2, 3])
    }

    /// The VAE parity tool, the classifier trainer and migrate's report file refuse an existing file
    /// before any work (they used to replace it), and replace it with --force.
    func testEveryOtherFileOutputIsCheckedFirst() throws {
        let folder = Paths.scratch(self)
        let taken = "\(folder)/taken.safetensors"
        let vae = Paths.fixture("vae-small-v1/vae.zip"), inputs = Paths.fixture("vae-small-v1/ref_vae.safetensors")
        let commands: [(String, [String])] = [
            ("ppsample", ["vae", vae, "--inputs", inputs, "--out", taken]),
            ("ppsample", ["train-classifier", "--data", "\(folder)/missing.safetensors", "--out", taken]),
            ("ppconvert", ["migrate", "\(folder)/no-such-source", "\(folder)/dst", "--json", taken]),
        ]
        for (tool, arguments) in commands {
            try write([1, 2, 3], to: taken)
            let r = try run(tool, arguments)
            XCTAssertEqual(r.status, 73, "\(arguments[0]): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains("taken.safetensors") && r.stderr.contains("--force"), r.stderr)
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
            XCTAssertEqual(try fileBytes(taken), [1, 2, 3])
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(folder)/dst"), "checked before any work")
        let forced = try run("ppsample", ["vae", vae, "--inputs", inputs, "--out", taken, "--force"])
        XCTAssertEqual(forced.status, 0, forced.stderr)
        XCTAssertNotNil(try SafetensorsFile.open(taken).tensors["dec"])
    }

    func testSamplingAModelOfUnknownObjectiveIsRefusedBeforeLoading() throws {
        let r = try run("ppsample", [Paths.fixture("sit.pt"), "--heads", "4", "--png", "\(Paths.scratch(self))/g.png"])
        XCTAssertEqual(r.status, 64, r.stderr)
        XCTAssertTrue(r.stderr.contains("objective") && r.stderr.contains("--objective"), r.stderr)
        let conversion = try run("ppconvert", ["from-dit", Paths.fixture("sit.pt"), "--heads", "4", "--out", "\(Paths.scratch(self))/x"])
        XCTAssertEqual(conversion.status, 64, conversion.stderr)
        XCTAssertTrue(conversion.stderr.contains("--objective velocity"), conversion.stderr)
    }

    func testWrittenTorchFilesReadBackWithoutFlags() throws {
        let folder = Paths.scratch(self)
        let pt = "\(folder)/PPF-2.pt"
        let convert = try run("ppconvert", ["from-dit", Paths.fixture("sit.pt"), "--heads", "4", "--objective", "velocity", "--format", "torch", "--out", pt])
        XCTAssertEqual(convert.status, 0, convert.stderr)
        let inspect = try run("ppconvert", ["inspect", pt, "--json"])
        XCTAssertEqual(inspect.status, 0, inspect.stderr)
        let report = try JSON.parse(inspect.stdout, origin: "inspect")
        XCTAssertEqual(report["config"]?["num_heads"]?.intValue, 4)
        XCTAssertEqual(report["objective"]?.stringValue, "velocity")
        // The record is outside what torch reads: the state dict is exactly the official conversion's.
        let expected = try SafetensorsFile.open(Paths.fixture("ppf2_from_sit.safetensors")).tensors
        XCTAssertTrue(CheckpointDiff(try CheckpointLoader.load(pt).tensors, expected).isEqual)
        let sample = try run("ppsample", [pt, "--labels", "1,2", "--steps", "3", "--out", "\(folder)/s.safetensors"])
        XCTAssertEqual(sample.status, 0, sample.stderr)
    }

    func testFromDiTAndVerifyReportTheSameNumbersOnTheSameInputs() throws {
        let folder = Paths.scratch(self)
        let data = "\(Paths.repository)/examples/digits/digits.safetensors"
        let convert = try run("ppconvert", ["from-dit", Paths.digitsZip, "--init", "calibrated", "--calibration-samples", "48", "--data", data,
                                            "--out", "\(folder)/cal", "--json", "\(folder)/report.json"])
        XCTAssertEqual(convert.status, 0, convert.stderr)
        let verify = try run("ppconvert", ["verify", "\(folder)/cal", "--against", Paths.digitsZip, "--data", data, "--json"])
        XCTAssertEqual(verify.status, 0, verify.stderr)
        let fromDiT = try JSON.parse(file: "\(folder)/report.json")["verification"]
        let verified = try JSON.parse(verify.stdout, origin: "verify")
        XCTAssertEqual(fromDiT?["inputs"]?.stringValue, verified["inputs"]?.stringValue)
        XCTAssertEqual(JSON.serialize(fromDiT?["levels"] ?? .null, pretty: false), JSON.serialize(verified["levels"] ?? .null, pretty: false))
        // Without --data the inputs differ, and verify says so.
        let gaussian = try run("ppconvert", ["verify", "\(folder)/cal", "--against", Paths.digitsZip])
        XCTAssertTrue(gaussian.stdout.contains("verification inputs: 4 Gaussian samples"), gaussian.stdout)
        XCTAssertTrue(gaussian.stdout.contains("pass --data"), gaussian.stdout)
    }

    func testFinetuneOutIsAPathNotJSON() throws {
        let folder = Paths.scratch(self)
        for name in ["a\"b", "x\\u0041y"] {
            let out = "\(folder)/\(name)"
            let r = try run("ppfinetune", ["validate", "--recipe", "\(Paths.repository)/recipes/digits-ppf2.json", "--out", out, "--timed-steps", "0",
                                           "--set", "start.from_dit.calibration_samples=32"])
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertTrue(r.stdout.contains(out), "the run folder is the path as given: \(r.stdout)")
        }
    }

    func testTheREADMEListsTheSameExitCodes() throws {
        let readme = String(decoding: try fileBytes("\(Paths.repository)/README.md"), as: UTF8.self)
        var rows: [(Int32, String)] = []
        for line in readme.split(separator: "\n") where line.hasPrefix("| ") {
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            if cells.count == 2, let code = Int32(cells[0]) { rows.append((code, cells[1].replacingOccurrences(of: "`", with: ""))) }
        }
        XCTAssertEqual(rows.map(\.0), PPError.exitCodes.map(\.code))
        XCTAssertEqual(rows.map(\.1), PPError.exitCodes.map(\.meaning))
    }

    func testEveryHelpListsTheSameExitCodes() throws {
        for (tool, sub) in [("ppconvert", [String]()), ("ppsample", []), ("ppfinetune", [])] {
            let r = try run(tool, sub + ["--help"])
            let flat = r.stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ")
            XCTAssertTrue(flat.contains(PPError.exitCodeSummary), "\(tool) --help:\n\(r.stdout)")
        }
    }
}

/// The key-mapping table travels with the binary (issue 12): built in, never looked up beside it.
extension CommandLineTests {
    func testTheBuiltInRulesAreTheRepositorysTable() throws {
        XCTAssertEqual(KeyRules.builtInBytes, try fileBytes("\(Paths.repository)/converters/ppflow-from-dit.json"))
        XCTAssertEqual(try KeyRules.builtIn().name, "ppflow-from-dit")
    }

    func testAnInstalledCopyConvertsWithoutTheRepository() throws {
        let installed = Paths.scratch(self), elsewhere = Paths.scratch(self)
        for tool in ["ppconvert", "ppsample", "ppfinetune"] {
            try write(try fileBytes("\(Self.binaries)/\(tool)"), to: "\(installed)/\(tool)")
            XCTAssertEqual(chmod("\(installed)/\(tool)", 0o755), 0)
        }
        // A stray converters/ folder above the working folder must not change anything either.
        XCTAssertEqual(mkdir("\(elsewhere)/converters", 0o755), 0)
        try write(Array("{\"name\": \"broken\"}".utf8), to: "\(elsewhere)/converters/ppflow-from-dit.json")
        XCTAssertEqual(mkdir("\(elsewhere)/work", 0o755), 0)
        let status = system("cd '\(elsewhere)/work' && env -u PPFLOW_CONVERTERS '\(installed)/ppconvert' from-dit '\(Paths.digitsZip)' --out out >'\(elsewhere)/log' 2>&1")
        let log = String(decoding: try fileBytes("\(elsewhere)/log"), as: UTF8.self)
        XCTAssertEqual((status >> 8) & 0xff, 0, log)
        XCTAssertEqual(try CheckpointLoader.load("\(elsewhere)/work/out").layout, .ppflow(levels: 2))
    }

    func testRulesFromAFileReplaceTheBuiltInTable() throws {
        let folder = Paths.scratch(self)
        try write(try fileBytes("\(Paths.repository)/converters/ppflow-from-dit.json"), to: "\(folder)/mine.json")
        let same = try run("ppconvert", ["from-dit", Paths.digitsZip, "--no-verify", "--rules", "\(folder)/mine.json", "--out", "\(folder)/a"])
        XCTAssertEqual(same.status, 0, same.stderr)
        let builtIn = try run("ppconvert", ["from-dit", Paths.digitsZip, "--no-verify", "--out", "\(folder)/b"])
        XCTAssertEqual(builtIn.status, 0, builtIn.stderr)
        XCTAssertEqual(try fileBytes("\(folder)/a/model.safetensors"), try fileBytes("\(folder)/b/model.safetensors"))
        XCTAssertTrue(try JSON.parse(file: "\(folder)/a/config.json")["provenance"]?["initializer"]?["rules"]?.stringValue?.contains("--rules") ?? false)
        try write(Array("{\"name\": \"x\", \"rules\": [{\"target\": \"a\", \"op\": \"bend\"}]}".utf8), to: "\(folder)/bad.json")
        let bad = try run("ppconvert", ["from-dit", Paths.digitsZip, "--no-verify", "--rules", "\(folder)/bad.json", "--out", "\(folder)/c"])
        XCTAssertEqual(bad.status, 65, bad.stderr)
        XCTAssertTrue(bad.stderr.contains("bad.json") && bad.stderr.contains("rules[0].op"), bad.stderr)
    }
}
