import PPSafetensors
import PPTensor
import PPTestSupport
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// `ppsample vae` as a person runs it: the built binary (beside this test bundle), exit codes, one-line errors.
final class VAECommandLineTests: XCTestCase {
    func ppsample(_ arguments: [String]) throws -> Binaries.Run {
        try Binaries.run("ppsample", arguments, scratch: Paths.scratch(self))
    }

    func testParityToolMatchesTheFixture() throws {
        let reference = Paths.fixture("vae-small-v1/ref_vae.safetensors")
        let out = Paths.scratch(self) + "/out.safetensors"
        let run = try ppsample(["vae", VAEFixture.zip, "--inputs", reference, "--out", out, "--against", reference, "--threads", "1"])
        XCTAssertEqual(run.status, 0, run.stdout + run.stderr)
        XCTAssertTrue(run.stdout.contains("match: 6 tensors within 1.00e-05"), run.stdout)
        let written = try SafetensorsFile.open(out).tensors
        XCTAssertEqual(written.names.sorted(), ["dec", "enc_logvar", "enc_mean", "enc_moments", "enc_sample", "images"])
        // A tolerance the outputs cannot meet: the comparison fails with exit 1 (--force: OUT exists now).
        let strict = try ppsample(["vae", VAEFixture.zip, "--inputs", reference, "--out", out, "--against", reference, "--tolerance", "1e-12", "--force"])
        XCTAssertEqual(strict.status, 1, strict.stdout + strict.stderr)
        XCTAssertTrue(strict.stdout.contains("MISMATCH"), strict.stdout)
    }

    func testBadInputsExitWithOneLine() throws {
        let folder = Paths.scratch(self)
        let empty = "\(folder)/in.safetensors"
        try SafetensorsWriter.write(TensorDict([("y", TensorView(floats: [1], shape: [1]))]), metadata: [], to: empty)
        let none = try ppsample(["vae", VAEFixture.folder, "--inputs", empty, "--out", "\(folder)/fail.safetensors"])
        XCTAssertEqual(none.status, 65)
        XCTAssertEqual(none.stderr, "ppsample vae: \(empty): holds none of x (to encode), z or latents (to decode)\n")

        let wrong = "\(folder)/x.safetensors"
        try SafetensorsWriter.write(TensorDict([("x", TensorView(floats: [Float](repeating: 0, count: 48), shape: [1, 3, 4, 4])),
                                                ("z", TensorView(floats: [Float](repeating: 0, count: 32), shape: [2, 4, 2, 2]))]),
                                    metadata: [], to: wrong)
        let shape = try ppsample(["vae", VAEFixture.folder, "--inputs", wrong, "--out", "\(folder)/o.safetensors"])
        XCTAssertEqual(shape.status, 0, shape.stderr)                       // 4x4 images and 2x2 latents are valid for this VAE
        let badZ = "\(folder)/z.safetensors"
        try SafetensorsWriter.write(TensorDict([("z", TensorView(floats: [Float](repeating: 0, count: 12), shape: [1, 3, 2, 2]))]), metadata: [], to: badZ)
        let badShape = try ppsample(["vae", VAEFixture.folder, "--inputs", badZ, "--out", "\(folder)/fail.safetensors"])
        XCTAssertEqual(badShape.status, 65)
        XCTAssertTrue(badShape.stderr.hasPrefix("ppsample vae: \(badZ): z: shape [1, 3, 2, 2]"), badShape.stderr)
        XCTAssertEqual(badShape.stderr.filter { $0 == "\n" }.count, 1, badShape.stderr)

        let missing = try ppsample(["vae", "\(folder)/no-such-vae", "--inputs", empty, "--out", "\(folder)/fail.safetensors"])
        XCTAssertEqual(missing.status, 66)
        XCTAssertEqual(missing.stderr, "ppsample vae: \(folder)/no-such-vae: no such file or folder\n")
        // Failed runs leave no output behind.
        XCTAssertNotEqual(access("\(folder)/fail.safetensors", F_OK), 0)
    }
}
