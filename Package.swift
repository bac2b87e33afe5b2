// swift-tools-version:6.0
// PPFlow toolkit: read DiT/SiT weights, convert them to Pyramidal Patchification Flow models,
// fine-tune and sample, with parity against the official PyTorch code.
//
// Layering (bytes -> checkpoint IO -> conversion -> model -> training/sampling -> checkpoint IO):
//   C shims (COpenBLAS, CLibZip, CZlib for CRC-32, CJSONC, CLibPNG, CJPEG, COpenSSL for SHA-256), each
//   imported by exactly one Swift module
//   PPFileIO       the one error type (exit codes), byte storages (mmap), atomic outputs and the output rule,
//                  paths, SHA-256 (OpenSSL), peak memory
//   PPTensor       dtypes, half/bfloat conversions, tensor views, seeded random numbers
//   PPJSON         json-c wrapper: JSON values, strict parsing (duplicate keys), deterministic output
//   PPSafetensors  safetensors reader/writer, sharded sets
//   PPTorchFormat  zip archives (libzip, zlib's CRC-32), restricted unpickler, torch.save reader and writer
//   PPCheckpoint   format detection, archives, diffusers mapping, native PPFlow checkpoints,
//                  Hugging Face cache ids
//   PPImage        JPEG/PNG decoding as Pillow does, Pillow's resampling, ADM's center crop, ImageFolder
//                  listings, PNG output (libjpeg-turbo, libpng)
//   PPKernels      float32 kernels (BLAS, attention, norms, activations) with reference twins
//   PPModel        configs, parameter layout, DiT/SiT/PPFlow forward (and backward); computes, reads no files
//   PPModelIO      a checkpoint loaded into a model (ModelLoader: configuration, completed tensors)
//   PPConvert      from-dit: key rules, pyramid initializers, verification
//   PPSample       ODE samplers, guidance, PNG output
//   PPVAE          the Stable Diffusion VAE (diffusers AutoencoderKL): loading (diffusers, ldm), encode, decode
//   PPLatents      image folders to latent caches (VAE encode, resumable shards), latents to pictures,
//                  ImageNet class names
//   PPTrain        loss, AdamW, EMA, data, recipes, trainer, run folders (layout, training state, export)
//   PPEval         sample quality: digits classifier (trained by PPTrain's AdamW), exact Fréchet distance, eval
//   PPBench        the benchmarks behind the bench-* commands (forward, training step, sampling, VAE, checkpoint IO)
//   PPCLI          what the executables share: error exits, progress, JSON output, a command's threads
//   PPFlowKit      the library product's umbrella: `import PPFlowKit` brings every library module
//   ppconvert / ppsample / ppfinetune   thin command-line front ends
import PackageDescription

let package = Package(
    name: "PPFlowToolkit",
    products: [
        .executable(name: "ppconvert", targets: ["ppconvert"]),
        .executable(name: "ppsample", targets: ["ppsample"]),
        .executable(name: "ppfinetune", targets: ["ppfinetune"]),
        // For other packages: loaders, converter, sampler and trainer (see docs/LIBRARY.md).
        .library(name: "PPFlowKit", targets: [
            "PPFlowKit",
            "PPFileIO", "PPTensor", "PPJSON", "PPSafetensors", "PPTorchFormat", "PPCheckpoint", "PPImage",
            "PPKernels", "PPModel", "PPModelIO", "PPConvert", "PPSample", "PPVAE", "PPLatents", "PPTrain", "PPEval",
        ]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CLibZip", pkgConfig: "libzip", providers: [.apt(["libzip-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CJSONC", pkgConfig: "json-c", providers: [.apt(["libjson-c-dev"])]),
        .systemLibrary(name: "CLibPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),
        .systemLibrary(name: "CJPEG", pkgConfig: "libjpeg", providers: [.apt(["libjpeg62-turbo-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),

        .target(name: "PPFileIO", dependencies: ["COpenSSL"]),
        .target(name: "PPTensor", dependencies: ["PPFileIO"]),
        .target(name: "PPJSON", dependencies: ["CJSONC", "PPFileIO"]),
        .target(name: "PPSafetensors", dependencies: ["PPFileIO", "PPTensor", "PPJSON"]),
        .target(name: "PPTorchFormat", dependencies: ["PPFileIO", "PPTensor", "CLibZip", "CZlib"]),
        .target(name: "PPCheckpoint", dependencies: ["PPFileIO", "PPTensor", "PPJSON", "PPSafetensors", "PPTorchFormat"]),
        .target(name: "PPKernels", dependencies: ["COpenBLAS"]),
        .target(name: "PPImage", dependencies: ["PPFileIO", "PPTensor", "CLibPNG", "CJPEG"]),
        .target(name: "PPModel", dependencies: ["PPFileIO", "PPTensor", "PPKernels"]),
        // Checkpoint IO meets the model here, so that PPModel computes and PPCheckpoint knows no model.
        .target(name: "PPModelIO", dependencies: ["PPFileIO", "PPTensor", "PPJSON", "PPCheckpoint", "PPModel"]),
        // The key-mapping table travels inside the binary: Sources/PPConvert/ppflow-from-dit.json is a link to
        // converters/ppflow-from-dit.json (the source of truth), embedded at build time.
        .target(name: "PPConvert", dependencies: ["PPFileIO", "PPTensor", "PPJSON", "PPSafetensors", "PPTorchFormat", "PPCheckpoint", "PPKernels", "PPModel", "PPModelIO"],
                resources: [.embedInCode("ppflow-from-dit.json")]),
        .target(name: "PPVAE", dependencies: ["PPFileIO", "PPTensor", "PPJSON", "PPSafetensors", "PPTorchFormat", "PPCheckpoint", "PPKernels"]),
        .target(name: "PPSample", dependencies: ["PPFileIO", "PPTensor", "PPSafetensors", "PPCheckpoint", "PPModel", "PPImage"]),
        .target(name: "PPLatents", dependencies: ["PPFileIO", "PPTensor", "PPJSON", "PPSafetensors", "PPCheckpoint", "PPImage", "PPVAE", "PPSample"]),
        .target(name: "PPTrain", dependencies: ["PPFileIO", "PPTensor", "PPJSON", "PPSafetensors", "PPTorchFormat", "PPCheckpoint", "PPModel", "PPModelIO", "PPKernels", "PPConvert", "PPLatents", "PPVAE"]),
        .target(name: "PPEval", dependencies: ["PPFileIO", "PPTensor", "PPSafetensors", "PPCheckpoint", "PPModel", "PPModelIO", "PPKernels", "PPSample", "PPTrain"]),
        // The bench-* subcommands' measurements; timing code stays out of the library modules and PPFlowKit.
        .target(name: "PPBench", dependencies: ["PPFileIO", "PPTensor", "PPJSON", "PPTorchFormat", "PPCheckpoint", "PPKernels", "PPModel", "PPSample", "PPVAE", "PPTrain"]),
        // Shared by the three executables: error reporting with exit codes, progress lines, JSON output, and the
        // scope a command runs in (its thread count, the flush to disk).
        .target(name: "PPCLI", dependencies: ["PPFileIO", "PPJSON", "PPKernels"]),
        .target(name: "PPFlowKit", dependencies: [
            "PPFileIO", "PPTensor", "PPJSON", "PPSafetensors", "PPTorchFormat", "PPCheckpoint", "PPImage",
            "PPKernels", "PPModel", "PPModelIO", "PPConvert", "PPSample", "PPVAE", "PPLatents", "PPTrain", "PPEval",
        ]),

        .executableTarget(name: "ppconvert", dependencies: [
            "PPCLI", "PPBench",
            "PPConvert", "PPLatents", "PPTrain", "PPCheckpoint", "PPModel", "PPModelIO", "PPKernels", "PPFileIO", "PPTensor", "PPJSON",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "ppsample", dependencies: [
            "PPCLI", "PPBench",
            "PPSample", "PPVAE", "PPLatents", "PPEval", "PPCheckpoint", "PPModel", "PPModelIO", "PPKernels", "PPSafetensors", "PPFileIO", "PPTensor", "PPJSON",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "ppfinetune", dependencies: [
            "PPCLI", "PPBench",
            "PPTrain", "PPLatents", "PPVAE", "PPCheckpoint", "PPModel", "PPModelIO", "PPKernels", "PPFileIO", "PPTensor", "PPJSON",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // Helpers shared by the test targets (fixture paths, scratch folders, assertions).
        .target(name: "PPTestSupport", dependencies: ["PPFileIO"], path: "Tests/PPTestSupport"),
        .testTarget(name: "PPFileIOTests", dependencies: ["PPFileIO"]),
        .testTarget(name: "PPTensorTests", dependencies: ["PPTensor"]),
        .testTarget(name: "PPJSONTests", dependencies: ["PPJSON", "PPFileIO"]),
        .testTarget(name: "PPSafetensorsTests", dependencies: ["PPSafetensors", "PPFileIO", "PPTensor", "PPJSON"]),
        .testTarget(name: "PPTorchFormatTests", dependencies: ["PPTestSupport", "PPTorchFormat", "PPFileIO", "PPTensor", "PPSafetensors"]),
        .testTarget(name: "PPCheckpointTests", dependencies: ["PPTestSupport", "PPCheckpoint", "PPFileIO", "PPTensor", "PPSafetensors", "PPTorchFormat", "PPJSON"]),
        .testTarget(name: "PPImageTests", dependencies: ["PPTestSupport", "PPImage", "PPFileIO", "PPTensor", "PPSafetensors"]),
        .testTarget(name: "PPKernelsTests", dependencies: ["PPTestSupport", "PPKernels", "COpenBLAS"]),
        .testTarget(name: "PPModelTests", dependencies: ["PPTestSupport", "PPModel", "PPKernels", "PPCheckpoint", "PPFileIO", "PPTensor", "PPSafetensors", "PPTorchFormat"]),
        .testTarget(name: "PPConvertTests", dependencies: ["PPTestSupport", "PPConvert", "PPCheckpoint", "PPModel", "PPModelIO", "PPKernels", "PPFileIO", "PPTensor", "PPJSON", "PPSafetensors", "PPTorchFormat"]),
        .testTarget(name: "PPSampleTests", dependencies: ["PPTestSupport", "PPSample", "PPImage", "PPModel", "PPCheckpoint", "PPFileIO", "PPTensor", "PPSafetensors", "PPTorchFormat"]),
        .testTarget(name: "PPVAETests", dependencies: ["PPTestSupport", "PPVAE", "PPKernels", "PPCheckpoint", "PPFileIO", "PPTensor", "PPSafetensors", "PPTorchFormat"]),
        .testTarget(name: "PPLatentsTests", dependencies: ["PPTestSupport", "PPLatents", "PPImage", "PPVAE", "PPSample", "PPModel", "PPCheckpoint", "PPFileIO", "PPTensor", "PPSafetensors", "PPJSON"]),
        .testTarget(name: "PPTrainTests", dependencies: ["PPTestSupport", "PPTrain", "PPConvert", "PPModel", "PPModelIO", "PPKernels", "PPCheckpoint", "PPFileIO", "PPTensor", "PPJSON", "PPSafetensors", "PPTorchFormat"]),
        .testTarget(name: "PPBenchTests", dependencies: ["PPTestSupport", "PPBench", "PPModel"]),
        .testTarget(name: "PPEvalTests", dependencies: ["PPTestSupport", "PPEval", "PPKernels", "PPSample", "PPModel", "PPFileIO", "PPTensor", "PPJSON", "PPSafetensors"]),
    ],
    // Swift 6 language mode (complete concurrency checking) for every target. Where the numeric code shares
    // buffers across threads (disjoint ranges, hand-offs ordered by a dispatch group) the types say so with
    // a commented `@unchecked Sendable`.
    swiftLanguageModes: [.v6]
)
