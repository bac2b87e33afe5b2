import PPCheckpoint
@testable import PPConvert
import PPFileIO
import PPJSON
import PPTensor
import PPTorchFormat
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// `ppconvert migrate` in-process: a folder with good, broken and unrelated files, reruns, changed
/// sources, and outputs in the destination the toolkit did not write.
final class MigrationTests: XCTestCase {
    /// sit.pt and the digits SiT (two good checkpoints), a truncated copy of sit.pt, a README and a
    /// folder of logs.
    func makeSourceFolder() throws -> String {
        let folder = Paths.scratch(self) + "/checkpoints"
        XCTAssertEqual(mkdir(folder, 0o755), 0)
        let sit = try fileBytes(Paths.fixture("sit.pt"))
        try write(sit, to: "\(folder)/sit.pt")
        try write(try fileBytes(Paths.digitsZip), to: "\(folder)/digits-sit.zip")
        try write(Array(sit.prefix(sit.count / 2)), to: "\(folder)/broken.pt")
        try write(Array("trained on digits\n".utf8), to: "\(folder)/README.txt")
        XCTAssertEqual(mkdir("\(folder)/logs", 0o755), 0)
        try write(Array("step 1 loss 0.5\n".utf8), to: "\(folder)/logs/train.log")
        return folder
    }

    struct Run { var report: Migration.Report; var errors: [String]; var manifest: [UInt8] }

    func migrate(_ source: String, _ destination: String, levels: [Int] = [2]) throws -> Run {
        var migration = Migration(sourceFolder: source, destinationFolder: destination)
        migration.levels = levels
        migration.options.heads = 4                 // sit.pt has no metadata
        migration.options.objective = .velocity     // nor an objective; the digits zip says velocity too
        migration.progress = { _ in }
        var errors: [String] = []
        migration.reportError = { errors.append($0) }
        let report = try migration.run()
        return Run(report: report, errors: errors, manifest: try fileBytes("\(destination)/\(Migration.manifestName)"))
    }

    func entry(_ run: Run, _ source: String, level: Int? = 2) -> JSONValue? {
        run.report.json["entries"]?.arrayValue?.first { $0["source"]?.stringValue == source && $0["level"]?.intValue == level.map(Int64.init) }
    }

    func testTwoGoodOneBrokenConvertsTwoFailsOneAndRecordsAll() throws {
        let source = try makeSourceFolder()
        let destination = Paths.scratch(self) + "/ppflow"
        let run = try migrate(source, destination)

        XCTAssertEqual(run.report.exitCode, 65)
        XCTAssertEqual(run.report.count(.converted), 2)
        XCTAssertEqual(run.report.count(.failed), 1)
        XCTAssertEqual(run.report.count(.skipped), 2)   // README.txt and logs/
        // One error line, naming the broken file.
        XCTAssertEqual(run.errors.count, 1)
        XCTAssertTrue(run.errors[0].contains("\(source)/broken.pt"), run.errors[0])
        XCTAssertFalse(run.errors[0].contains("\n"))

        let manifest = try JSON.parse(String(decoding: run.manifest, as: UTF8.self), origin: "migration.json")
        XCTAssertEqual(manifest, run.report.json)
        XCTAssertEqual(manifest["format"]?.stringValue, Migration.manifestFormat)
        XCTAssertEqual(manifest["entries"]?.arrayValue?.compactMap { $0["source"]?.stringValue },
                       ["README.txt", "broken.pt", "digits-sit.zip", "logs", "sit.pt"])
        XCTAssertEqual(entry(run, "README.txt", level: nil)?["status"]?.stringValue, "skipped")
        XCTAssertEqual(entry(run, "logs", level: nil)?["status"]?.stringValue, "skipped")
        let broken = entry(run, "broken.pt", level: nil)
        XCTAssertEqual(broken?["status"]?.stringValue, "failed")
        XCTAssertEqual(broken?["error"]?.stringValue.map { "\(source)/" + $0 }, run.errors[0])
        XCTAssertTrue(broken?["output"]?.isNull ?? false)

        for (name, output) in [("sit.pt", "sit-ppf2"), ("digits-sit.zip", "digits-sit-ppf2")] {
            let e = try XCTUnwrap(entry(run, name))
            XCTAssertEqual(e["status"]?.stringValue, "converted")
            XCTAssertEqual(e["output"]?.stringValue, output)
            XCTAssertEqual(e["source_sha256"]?.stringValue, try SHA256.hashFile("\(source)/\(name)"))
            XCTAssertEqual(e["output_sha256"]?.stringValue, try SHA256.hashFile("\(destination)/\(output)/model.safetensors"))
            XCTAssertEqual(e["verification"]?["passed"]?.boolValue, true)
            XCTAssertEqual(e["verification"]?["levels"]?.arrayValue?.count, 2)
            // The output is what from-dit writes: its provenance names the source bytes.
            let config = try JSON.parse(file: "\(destination)/\(output)/config.json")
            XCTAssertEqual(config["provenance"]?["source"]?["sha256"], e["source_sha256"])
        }
        // sit.pt's conversion is the official one.
        let converted = try CheckpointLoader.load("\(destination)/sit-ppf2")
        let official = try CheckpointLoader.load(Paths.fixture("ppf2_from_sit.safetensors"))
        XCTAssertTrue(CheckpointDiff(converted.tensors, official.tensors).isEqual)

        // Same inputs, another destination: the same manifest bytes.
        let again = try migrate(source, Paths.scratch(self) + "/ppflow")
        XCTAssertEqual(again.manifest, run.manifest)
    }

    func testRerunSkipsWhatIsConvertedAndAChangedSourceIsConvertedAgain() throws {
        let source = try makeSourceFolder()
        let destination = Paths.scratch(self) + "/ppflow"
        let first = try migrate(source, destination)
        let sitHash = try SHA256.hashFile("\(destination)/sit-ppf2/model.safetensors")

        let second = try migrate(source, destination)
        XCTAssertEqual(second.report.count(.converted), 0)
        XCTAssertEqual(second.report.count(.failed), 1)      // the broken file stays broken
        XCTAssertEqual(second.report.exitCode, 65)
        for name in ["sit.pt", "digits-sit.zip"] {
            XCTAssertEqual(entry(second, name)?["status"]?.stringValue, "skipped")
            XCTAssertEqual(entry(second, name)?["reason"]?.stringValue, "already converted from this source with these options")
            // The numbers of the run that converted it are kept.
            XCTAssertEqual(entry(second, name)?["verification"], entry(first, name)?["verification"])
        }
        XCTAssertEqual(try migrate(source, destination).manifest, second.manifest)
        // Without the manifest the numbers come from verifying a fresh conversion against the outputs:
        // the same numbers, the same manifest.
        XCTAssertEqual(unlink("\(destination)/\(Migration.manifestName)"), 0)
        XCTAssertEqual(try migrate(source, destination).manifest, second.manifest)

        // Other options are another conversion: levels 2,3 skips level 2 and converts level 3.
        let both = try migrate(source, destination, levels: [2, 3])
        XCTAssertEqual(entry(both, "sit.pt", level: 2)?["status"]?.stringValue, "skipped")
        XCTAssertEqual(entry(both, "sit.pt", level: 3)?["status"]?.stringValue, "converted")
        XCTAssertEqual(entry(both, "sit.pt", level: 3)?["output"]?.stringValue, "sit-ppf3")

        // Different bytes under the same name (dit.pt's weights): converted again, replacing the
        // toolkit's own folder.
        try write(try fileBytes(Paths.fixture("dit.pt")), to: "\(source)/sit.pt")
        let changed = try migrate(source, destination)
        XCTAssertEqual(entry(changed, "sit.pt")?["status"]?.stringValue, "converted")
        XCTAssertEqual(entry(changed, "digits-sit.zip")?["status"]?.stringValue, "skipped")
        XCTAssertNotEqual(try SHA256.hashFile("\(destination)/sit-ppf2/model.safetensors"), sitHash)
        XCTAssertEqual(entry(changed, "sit.pt")?["source_sha256"]?.stringValue, try SHA256.hashFile(Paths.fixture("dit.pt")))
    }

    func testAForeignFolderAtTheOutputNameIsNotTouched() throws {
        let source = try makeSourceFolder()
        let destination = Paths.scratch(self) + "/ppflow"
        XCTAssertEqual(mkdir(destination, 0o755), 0)
        XCTAssertEqual(mkdir("\(destination)/sit-ppf2", 0o755), 0)
        try write(Array("mine\n".utf8), to: "\(destination)/sit-ppf2/notes.txt")
        let run = try migrate(source, destination)

        XCTAssertEqual(entry(run, "sit.pt")?["status"]?.stringValue, "failed")
        XCTAssertTrue(entry(run, "sit.pt")?["error"]?.stringValue?.contains("not written by ppconvert; not replacing it") ?? false)
        XCTAssertEqual(entry(run, "digits-sit.zip")?["status"]?.stringValue, "converted")
        XCTAssertEqual(Migration.listing("\(destination)/sit-ppf2", hidden: true), ["notes.txt"])
        XCTAssertEqual(try fileBytes("\(destination)/sit-ppf2/notes.txt"), Array("mine\n".utf8))
        XCTAssertEqual(run.errors.count, 2)   // broken.pt and the occupied output

        // The toolkit's folder with a file added by someone is not replaced either.
        let digitsOut = "\(destination)/digits-sit-ppf2"
        try write(Array("added\n".utf8), to: "\(digitsOut)/extra.txt")
        try write(try fileBytes(Paths.fixture("sit.pt")), to: "\(source)/digits-sit.zip")   // changed source
        let after = try migrate(source, destination)
        XCTAssertEqual(entry(after, "digits-sit.zip")?["status"]?.stringValue, "failed")
        XCTAssertEqual(Migration.listing(digitsOut, hidden: true), ["config.json", "extra.txt", "model.safetensors"])
    }

    func testAManifestTheToolkitDidNotWriteIsNotReplaced() throws {
        let source = try makeSourceFolder()
        let destination = Paths.scratch(self) + "/ppflow"
        XCTAssertEqual(mkdir(destination, 0o755), 0)
        try write(Array("{\"mine\": true}\n".utf8), to: "\(destination)/migration.json")
        assertPPError(.usage, mentions: ["migration.json", "not replacing it"]) { try migrate(source, destination) }
        XCTAssertEqual(try fileBytes("\(destination)/migration.json"), Array("{\"mine\": true}\n".utf8))
        XCTAssertEqual(Migration.listing(destination, hidden: true), ["migration.json"])
    }

    func testCandidatesAreRecognisedByContent() throws {
        let folder = Paths.scratch(self)
        let sit = try fileBytes(Paths.fixture("sit.pt"))
        try write(sit, to: "\(folder)/weights.data")                           // a .pt under another name
        try write(Array("hello".utf8), to: "\(folder)/notes.txt")
        try write(Array("garbage, not weights".utf8), to: "\(folder)/0050000.pt")   // a weights name: a broken checkpoint
        try write(try fileBytes(Paths.fixture("sit.safetensors")), to: "\(folder)/model")
        try write(try fileBytes(Paths.fixture("dit_diffusers.zip")), to: "\(folder)/dit.zip")
        XCTAssertEqual(mkdir("\(folder)/logs", 0o755), 0)
        try write(Array("loss".utf8), to: "\(folder)/logs/train.log")
        func kind(_ name: String) -> String {
            switch CheckpointCandidate.classify("\(folder)/\(name)") {
            case .checkpoint: return "checkpoint"
            case .notCheckpoint: return "other"
            }
        }
        XCTAssertEqual(kind("weights.data"), "checkpoint")
        XCTAssertEqual(kind("model"), "checkpoint")
        XCTAssertEqual(kind("0050000.pt"), "checkpoint")
        XCTAssertEqual(kind("notes.txt"), "other")
        XCTAssertEqual(kind("dit.zip"), "checkpoint")
        XCTAssertEqual(kind("logs"), "other")
    }

    /// A diffusers DiT folder beside the SiTs: the flags fill only what metadata leaves open (the DiT
    /// stays epsilon under --objective velocity), and the folder's identity is the hash of its listing.
    func testAFolderSourceIsConvertedAndSkippedOnRerun() throws {
        let source = try makeSourceFolder()
        let archive = try ZipArchive(path: Paths.fixture("dit_diffusers.zip"))
        for entry in archive.entries where !entry.isDirectory {
            var folder = "\(source)/dit_diffusers"
            for part in entry.name.split(separator: "/").dropLast() { _ = mkdir(folder, 0o755); folder += "/\(part)" }
            _ = mkdir(folder, 0o755)
            try write(try archive.bytes(of: entry), to: "\(source)/dit_diffusers/\(entry.name)")
        }
        let destination = Paths.scratch(self) + "/ppflow"
        let first = try migrate(source, destination)
        let dit = try XCTUnwrap(entry(first, "dit_diffusers"))
        XCTAssertEqual(dit["status"]?.stringValue, "converted", "\(dit)")
        XCTAssertEqual(dit["source_sha256"]?.stringValue, try Migration.folderSHA256("\(source)/dit_diffusers"))
        XCTAssertEqual(try JSON.parse(file: "\(destination)/dit_diffusers-ppf2/config.json")["objective"]?.stringValue, "epsilon")
        XCTAssertEqual(entry(try migrate(source, destination), "dit_diffusers")?["status"]?.stringValue, "skipped")
        // A changed file inside the folder changes its identity.
        try write(Array("{}".utf8), to: "\(source)/dit_diffusers/notes.json")
        XCTAssertEqual(entry(try migrate(source, destination), "dit_diffusers")?["status"]?.stringValue, "converted")
    }

    /// The built command as CI runs it: exit 65, the report on stdout with `--json -`, one error line.
    func testTheCommandExits65AndPrintsTheManifest() throws {
        let source = try makeSourceFolder()
        let destination = Paths.scratch(self) + "/ppflow"
        let logs = Paths.scratch(self)
        let status = system("\(CommandLineTests.binaries)/ppconvert migrate \(source) \(destination) --heads 4 --objective velocity --json - >\(logs)/out 2>\(logs)/err </dev/null")
        XCTAssertEqual((status >> 8) & 0xff, 65)
        XCTAssertEqual(try fileBytes("\(logs)/out"), try fileBytes("\(destination)/\(Migration.manifestName)"))
        // With the report on stdout the progress goes to stderr; the error is the one line naming the tool.
        let errors = String(decoding: try fileBytes("\(logs)/err"), as: UTF8.self).split(separator: "\n").filter { $0.hasPrefix("ppconvert migrate: ") }
        XCTAssertEqual(errors, ["ppconvert migrate: \(source)/broken.pt: no end-of-central-directory record (truncated zip?)"])
        XCTAssertEqual(system("\(CommandLineTests.binaries)/ppconvert migrate \(source) \(destination) --levels 4 >/dev/null 2>&1") >> 8 & 0xff, 64)
    }

    /// Every option recorded in config.json decides whether an output still stands for the source.
    func testStalenessComparesWhatTheConfigRecords() throws {
        let source = try makeSourceFolder()
        let destination = Paths.scratch(self) + "/ppflow"
        _ = try migrate(source, destination)
        let config = try JSON.parse(file: "\(destination)/sit-ppf2/config.json")
        let model = try XCTUnwrap(config["model_sha256"]?.stringValue)
        let sourceSHA = try SHA256.hashFile("\(source)/sit.pt")
        var options = FromDiTOptions()
        options.objective = .velocity
        options.heads = 4
        func stale(_ change: (inout FromDiTOptions) -> Void, model: String = model, source: String = sourceSHA) -> String? {
            var changed = options
            change(&changed)
            return Migration.staleness(of: config, modelSHA256: model, recordedSourceSHA256: sourceSHA, sourceSHA256: source,
                                       options: changed, dataSHA256: nil)
        }
        XCTAssertNil(stale { _ in })
        XCTAssertEqual(stale({ _ in }, source: String(repeating: "0", count: 64)), "converted from other source bytes")
        XCTAssertEqual(stale({ _ in }, model: String(repeating: "0", count: 64)), "model.safetensors does not match the sha256 in its config.json")
        XCTAssertEqual(stale { $0.levels = 3 }, "other levels")
        XCTAssertEqual(stale { $0.thresholds = [0.4] }, "other thresholds")
        XCTAssertEqual(stale { $0.cfgScales = [1, 4] }, "other guidance scales")
        XCTAssertEqual(stale { $0.initializer = .calibrated }, "another initializer")
        XCTAssertEqual(stale { $0.objective = .epsilon }, "another objective")
        XCTAssertEqual(stale { $0.objective = nil }, "the objective came from --objective, which is not given now")
        XCTAssertEqual(stale { $0.heads = 2 }, "other heads")
    }

    func testCollidingStemsKeepWholeNames() {
        XCTAssertEqual(Migration.outputStems(for: ["a.pt", "a.safetensors", "b.zip", "c"]),
                       ["a.pt": "a.pt", "a.safetensors": "a.safetensors", "b.zip": "b", "c": "c"])
    }

    func testBadLevelsAndAMissingSourceAreUsageErrors() {
        let destination = Paths.scratch(self) + "/out"
        var migration = Migration(sourceFolder: Paths.scratch(self), destinationFolder: destination)
        migration.levels = [4]
        assertPPError(.usage, mentions: ["--levels"]) { try migration.run() }
        let missing = Migration(sourceFolder: "/nonexistent/checkpoints", destinationFolder: destination)
        assertPPError(.missingInput, mentions: ["/nonexistent/checkpoints"]) { try missing.run() }
    }
}
