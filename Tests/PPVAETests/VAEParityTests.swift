import PPCheckpoint
import PPKernels
import PPSafetensors
import PPTensor
import PPTestSupport
import PPTorchFormat
import PPVAE
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// The fixture written by diffusers (Tests/Fixtures/vae-small-v1/README.md).
enum VAEFixture {
    static let folder = Paths.fixture("vae-small-v1/vae")
    static let zip = Paths.fixture("vae-small-v1/vae.zip")
    static let weights = Paths.fixture("vae-small-v1/vae/diffusion_pytorch_model.safetensors")
    static let config = Paths.fixture("vae-small-v1/vae/config.json")

    static func reference() throws -> TensorDict { try SafetensorsFile.open(Paths.fixture("vae-small-v1/ref_vae.safetensors")).tensors }
    static func weightTensors() throws -> TensorDict { try SafetensorsFile.open(weights).tensors }

    static func tensor(_ dict: TensorDict, _ name: String) -> VAETensor {
        let t = dict[name]!
        return VAETensor(values: t.floats(), shape: t.shape)
    }
}

/// Every output of ref_vae.safetensors within 1e-5 relative.
func checkAgainstReference(_ vae: AutoencoderKL, _ what: String, file: StaticString = #filePath, line: UInt = #line) throws {
    let ref = try VAEFixture.reference()
    let posterior = try vae.encode(images: VAEFixture.tensor(ref, "x"))
    XCTAssertEqual(posterior.moments.shape, [2, 8, 8, 8], file: file, line: line)
    assertClose(posterior.moments.values, ref["enc_moments"]!.floats(), tolerance: 1e-5, "\(what) enc_moments", file: file, line: line)
    assertClose(posterior.mean.values, ref["enc_mean"]!.floats(), tolerance: 1e-5, "\(what) enc_mean", file: file, line: line)
    assertClose(posterior.logvar.values, ref["enc_logvar"]!.floats(), tolerance: 1e-5, "\(what) enc_logvar", file: file, line: line)
    let sample = try posterior.sample(noise: VAEFixture.tensor(ref, "enc_noise"))
    assertClose(sample.values, ref["enc_sample"]!.floats(), tolerance: 1e-5, "\(what) enc_sample", file: file, line: line)

    let decoded = try vae.decode(z: VAEFixture.tensor(ref, "z"))
    XCTAssertEqual(decoded.shape, [2, 3, 16, 16], file: file, line: line)
    assertClose(decoded.values, ref["dec"]!.floats(), tolerance: 1e-5, "\(what) dec", file: file, line: line)
    let images = try vae.decode(latents: VAEFixture.tensor(ref, "latents"))
    assertClose(images.values, ref["images"]!.floats(), tolerance: 1e-5, "\(what) images", file: file, line: line)
}

/// Encoder and decoder outputs against diffusers' own, for every way the fixture VAE can be given.
final class VAEParityTests: XCTestCase {
    // Every test runs in its own thread scope (1 unless it says otherwise); nothing to restore.
    override func invokeTest() { Parallel.withThreads(1) { super.invokeTest() } }

    func testDiffusersFolderMatchesDiffusers() throws {
        let vae = try VAELoader.load(VAEFixture.folder)
        XCTAssertEqual(vae.config, VAEConfig(blockOutChannels: [32, 64], layersPerBlock: 1, normGroups: 8))
        XCTAssertEqual(vae.source?.layout, .diffusers)
        try checkAgainstReference(vae, "folder")
    }

    func testZippedFolderMatchesDiffusers() throws {
        let vae = try VAELoader.load(VAEFixture.zip)
        XCTAssertEqual(vae.source?.containers.first, "zip archive")
        XCTAssertEqual(vae.source?.configFile, "\(VAEFixture.zip):vae/config.json")
        try checkAgainstReference(vae, "zip")
    }

    /// The weights file alone picks up the config.json beside it.
    func testWeightsFileUsesConfigBesideIt() throws {
        let vae = try VAELoader.load(VAEFixture.weights)
        XCTAssertEqual(vae.config.normGroups, 8)
        try checkAgainstReference(vae, "weights file")
    }

    /// Two threads split the row blocks and groups differently: same outputs.
    func testTwoThreadsMatchDiffusers() throws {
        try Parallel.withThreads(2) {
            try checkAgainstReference(try VAELoader.load(VAEFixture.folder), "2 threads")
        }
    }

    /// diffusers' `.bin` (torch.save of the state dict) in a diffusers folder.
    func testDiffusersBinFolder() throws {
        let dir = Paths.scratch(self)
        try write(try fileBytes(VAEFixture.config), to: "\(dir)/config.json")
        try TorchWriter.write(.stateDict(try VAEFixture.weightTensors()), to: "\(dir)/diffusion_pytorch_model.bin", archiveName: "archive")
        let vae = try VAELoader.load(dir)
        XCTAssertEqual(vae.source?.containers, ["folder", "diffusers AutoencoderKL", "torch.save"])
        try checkAgainstReference(vae, "bin folder")
    }

    /// A pipeline folder (model_index.json, unet/, vae/) is read through its vae/ subfolder.
    func testPipelineFolderUsesVAESubfolder() throws {
        let dir = Paths.scratch(self)
        mkdir("\(dir)/vae", 0o755)
        mkdir("\(dir)/unet", 0o755)
        try write(Array("{\"_class_name\": \"StableDiffusionPipeline\"}".utf8), to: "\(dir)/model_index.json")
        try write(try fileBytes(VAEFixture.config), to: "\(dir)/vae/config.json")
        try write(try fileBytes(VAEFixture.weights), to: "\(dir)/vae/diffusion_pytorch_model.safetensors")
        try write(Array("{\"_class_name\": \"UNet2DConditionModel\"}".utf8), to: "\(dir)/unet/config.json")
        try checkAgainstReference(try VAELoader.load(dir), "pipeline folder")
    }

    /// Old diffusers attention names (query/key/value/proj_attn) are renamed on load.
    func testDeprecatedAttentionNames() throws {
        var renamed = TensorDict()
        for (name, tensor) in try VAEFixture.weightTensors().items {
            var n = name
            for (new, old) in [("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")] {
                n = n.replacing(".attentions.0.\(new).", with: ".attentions.0.\(old).")
            }
            renamed[n] = tensor
        }
        XCTAssertTrue(renamed.contains("encoder.mid_block.attentions.0.proj_attn.weight"))
        let dir = Paths.scratch(self)
        try write(try fileBytes(VAEFixture.config), to: "\(dir)/config.json")
        try SafetensorsWriter.write(renamed, metadata: [], to: "\(dir)/diffusion_pytorch_model.safetensors")
        try checkAgainstReference(try VAELoader.load(dir), "old attention names")
    }
}
