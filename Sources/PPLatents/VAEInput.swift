import PPCheckpoint
import PPTensor
import PPVAE

/// A VAE argument as the commands take it: a folder, zip or single file, or a Hugging Face hub id
/// (`stabilityai/sd-vae-ft-ema`) found in the local cache, as model arguments are.
public enum VAEInput {
    public static func load(_ argument: String, overrides: VAEOverrides = VAEOverrides(),
                            environment: [String: String]? = nil) throws -> AutoencoderKL {
        let path = try HubCache.resolveModelPath(argument, environment: environment ?? HubCache.processEnvironment())
        return try VAELoader.load(path, overrides: overrides)
    }
}
