import PPCheckpoint
import PPConvert
import PPJSON
import PPSafetensors
import PPTensor
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Runs the built executables the way users and CI scripts do: exit codes, one-line errors, files.
final class CommandLineTests: XCTestCase {
    static var binaries: String { Binaries.folder }

    func run(_ tool: String, _ arguments: [String]) throws -> Binaries.Run {
        try Binaries.run(tool, arguments, scratch: Paths.scratch(self))
    }

    func testInspectJSONDescribesTheDigitsExample() throws {
        let r = try run("ppconvert", ["inspect", Paths.digitsZip, "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let report = try JSON.parse(r.stdout, origin: "inspect output")
        XCTAssertEqual(report["family"]?.stringValue, "SiT")
        XCTAssertEqual(report["objective"]?.stringValue, "velocity")
        XCTAssertEqual(report["config"]?["num_heads"]?.intValue, 4)
        XCTAssertEqual(report["tensors"]?.arrayValue?.count, 52)
        XCTAssertEqual(report["sha256"]?.stringValue?.count, 64)
    }

    func testFromDiTWritesTheOfficialConversionAndCheckPasses() throws {
        let folder = Paths.scratch(self)
        let out = "\(folder)/ppf2"
        let convert = try run("ppconvert", ["from-dit", Paths.fixture("sit.pt"), "--heads", "4", "--objective", "velocity",
                                            "--out", out, "--json", "\(folder)/report.json"])
        XCTAssertEqual(convert.status, 0, convert.stderr)
        let report = try JSON.parse(String(decoding: try fileBytes("\(folder)/report.json"), as: UTF8.self), origin: "report")
        XCTAssertEqual(report["verification"]?["passed"]?.boolValue, true)
        XCTAssertEqual(report["output_sha256"]?.stringValue, try NativeCheckpoint.sha256(ofFile: "\(out)/model.safetensors"))
        let diff = try run("ppconvert", ["diff", out, Paths.fixture("ppf2_from_sit.safetensors")])
        XCTAssertEqual(diff.status, 0, diff.stdout)
        let check = try run("ppconvert", ["from-dit", Paths.fixture("sit.pt"), "--heads", "4", "--objective", "velocity", "--out", out, "--check"])
        XCTAssertEqual(check.status, 0, check.stdout + check.stderr)
        let differs = try run("ppconvert", ["diff", out, Paths.fixture("ppf3_from_sit.safetensors")])
        XCTAssertEqual(differs.status, 1)
    }

    func testDryRunWritesNothing() throws {
        let folder = Paths.scratch(self)
        let r = try run("ppconvert", ["from-dit", Paths.digitsZip, "--levels", "3", "--out", "\(folder)/x", "--dry-run"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("derive final_layer.linear2.weight"), r.stdout)
        XCTAssertEqual(try DirectoryTree(path: folder).files, [])
    }

    func testBadInputIsOneLineWithExitCode65AndNoOutput() throws {
        let folder = Paths.scratch(self)
        try write(Array("PK\u{3}\u{4} this is not really a zip".utf8), to: "\(folder)/weights.zip")
        let r = try run("ppconvert", ["from-dit", "\(folder)/weights.zip", "--out", "\(folder)/out"])
        XCTAssertEqual(r.status, 65, r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("weights.zip"), r.stderr)
        XCTAssertEqual(try DirectoryTree(path: folder).files, ["weights.zip"], "no partial output")
        let usage = try run("ppconvert", ["from-dit", Paths.digitsZip, "--levels", "3", "--dry-run", "--check"])
        XCTAssertEqual(usage.status, 64)
        let missing = try run("ppconvert", ["inspect", "\(folder)/nope.pt"])
        XCTAssertEqual(missing.status, 66)
    }

    func testForwardToolReproducesTheOfficialPPFlowOutputs() throws {
        let folder = Paths.scratch(self)
        let ref = try SafetensorsFile.open(Paths.fixture("ref_ppf2_forward.safetensors")).tensors
        var inputs = TensorDict()
        inputs["x"] = ref["x"]
        inputs["t"] = TensorView(floats: [0.3, 0.3], shape: [2])
        inputs["y"] = ref["y"]
        try SafetensorsWriter.write(inputs, metadata: [], to: "\(folder)/in.safetensors")
        let r = try run("ppsample", ["forward", Paths.fixture("ppf2.pt"), "--heads", "4", "--inputs", "\(folder)/in.safetensors",
                                     "--out", "\(folder)/out.safetensors"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let got = try SafetensorsFile.open("\(folder)/out.safetensors").tensors["prediction"]!.floats()
        let expected = ref["out_t0.3"]!.floats()
        var d = 0.0, n = 0.0
        for i in 0..<expected.count { d += Double(got[i] - expected[i]) * Double(got[i] - expected[i]); n += Double(expected[i] * expected[i]) }
        XCTAssertLessThanOrEqual((d / n).squareRoot(), 1e-5)
    }
}

extension CommandLineTests {
    /// `ppsample --noise` reproduces the official guided ODE samples (Euler on linspace(0,1,9), Heun on 7 points).
    func testSampleCommandReproducesTheOfficialODESamples() throws {
        let folder = Paths.scratch(self)
        for levels in [2, 3] {
            let ref = try SafetensorsFile.open(Paths.fixture("ref_ppf\(levels)_forward.safetensors")).tensors
            let scales = ref["cfg_scales"]!.floats().map { "\($0)" }.joined(separator: ",")
            for (name, sampler, points) in [("ode_euler_9", "euler", "9"), ("ode_heun2_7", "heun", "7")] {
                // The official guided sampler integrates cat([z, z]) with labels cat([y, null]); its first half
                // is the conditional batch we sample.
                let zAll = ref["\(name)_z"]!, half = zAll.shape[0] / 2, size = zAll.elementCount / zAll.shape[0]
                var noise = TensorDict()
                noise["z"] = TensorView(floats: Array(zAll.floats()[0 ..< half * size]), shape: [half] + zAll.shape.dropFirst())
                noise["y"] = TensorView(int64s: Array(ref["\(name)_y"]!.int64s()[0 ..< half]), shape: [half])
                try SafetensorsWriter.write(noise, metadata: [], to: "\(folder)/z.safetensors")
                let r = try run("ppsample", [Paths.fixture("ppf\(levels).pt"), "--heads", "4", "--noise", "\(folder)/z.safetensors",
                                             "--sampler", sampler, "--steps", points, "--cfg-scales", scales, "--cfg-channels", "3",
                                             "--out", "\(folder)/s.safetensors", "--force", "--json"])
                XCTAssertEqual(r.status, 0, r.stderr)
                let report = try JSON.parse(r.stdout, origin: "report")
                XCTAssertEqual(report["samples"]?.intValue, Int64(half))
                let got = try SafetensorsFile.open("\(folder)/s.safetensors").tensors["samples"]!.floats()
                let expected = Array(ref["\(name)_out"]!.floats()[0 ..< half * size])
                var d = 0.0, n = 0.0
                for i in 0..<expected.count { d += Double(got[i] - expected[i]) * Double(got[i] - expected[i]); n += Double(expected[i] * expected[i]) }
                XCTAssertLessThanOrEqual((d / n).squareRoot(), 1e-5, "ppf\(levels) \(name)")
            }
        }
    }

    func testSamplingAModelWithUnknownObjectiveIsRefusedWithTheFix() throws {
        let r = try run("ppsample", [Paths.fixture("sit.pt"), "--heads", "4", "--steps", "3"])
        XCTAssertEqual(r.status, 64, r.stderr)
        XCTAssertTrue(r.stderr.contains("--objective"), r.stderr)
    }
}
