// swift-tools-version:6.0
// PPFlow toolkit: read DiT/SiT weights, convert them to Pyramidal Patchification Flow models,
// fine-tune and sample, with parity against the official PyTorch code.
//
// Layering (bytes -> checkpoint IO -> conversion -> model -> training/sampling -> checkpoint IO):
//   C shims (COpenBLAS, CLibZip, CJSONC), each imported by exactly one Swift module; CSHA256 is our
//   own SHA-NI compression function (x86-64), used by PPTensor's SHA256 when the CPU has it
//   PPTensor       dtypes, half/bfloat conversions, byte storages (mmap), tensor views, errors
//   PPJSON         json-c wrapper: JSON values, strict parsing (duplicate keys), deterministic output
//   PPSafetensors  safetensors reader/writer, sharded sets
//   PPTorchFormat  zip archives (libzip), restricted unpickler, torch.save reader and writer
//   PPCheckpoint   format detection, archives, diffusers mapping, native PPFlow checkpoints
//   PPKernels      float32 kernels (BLAS, attention, norms, activations) with reference twins
//   PPModel        configs, parameter layout, DiT/SiT/PPFlow forward (and backward)
//   PPConvert      from-dit: key rules, pyramid initializers, verification
//   PPSample       ODE samplers, guidance, PNG output
//   PPTrain        loss, AdamW, EMA, data, recipes, trainer
//   PPEval         sample quality: digits classifier (trained by PPTrain's AdamW), exact Fréchet distance, eval
//   PPCLI          what the executables share: error exits, progress, JSON output
//   ppconvert / ppsample / ppfinetune   thin command-line front ends
import PackageDescription

let package = Package(
    name: "PPFlowToolkit",
    products: [
        .executable(name: "ppconvert", targets: ["ppconvert"]),
        .executable(name: "ppsample", targets: ["ppsample"]),
        .executable(name: "ppfinetune", targets: ["ppfinetune"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CLibZip", pkgConfig: "libzip", providers: [.apt(["libzip-dev"])]),
        .systemLibrary(name: "CJSONC", pkgConfig: "json-c", providers: [.apt(["libjson-c-dev"])]),
        .target(name: "CSHA256"),

        .target(name: "PPTensor", dependencies: ["CSHA256"]),
        .target(name: "PPJSON", dependencies: ["CJSONC", "PPTensor"]),
        .target(name: "PPSafetensors", dependencies: ["PPTensor", "PPJSON"]),
        .target(name: "PPTorchFormat", dependencies: ["PPTensor", "CLibZip"]),
        .target(name: "PPCheckpoint", dependencies: ["PPTensor", "PPJSON", "PPSafetensors", "PPTorchFormat"]),
        .target(name: "PPKernels", dependencies: ["COpenBLAS"]),
        .target(name: "PPModel", dependencies: ["PPTensor", "PPKernels", "PPCheckpoint", "PPJSON"]),
        .target(name: "PPConvert", dependencies: ["PPTensor", "PPJSON", "PPSafetensors", "PPCheckpoint", "PPModel"]),
        .target(name: "PPSample", dependencies: ["PPTensor", "PPJSON", "PPSafetensors", "PPCheckpoint", "PPModel", "PPKernels"]),
        .target(name: "PPTrain", dependencies: ["PPTensor", "PPJSON", "PPSafetensors", "PPCheckpoint", "PPModel", "PPKernels", "PPConvert"]),
        .target(name: "PPEval", dependencies: ["PPTensor", "PPSafetensors", "PPCheckpoint", "PPModel", "PPKernels", "PPSample", "PPTrain"]),
        // Shared by the three executables: error reporting with exit codes, progress lines, JSON output.
        .target(name: "PPCLI", dependencies: ["PPTensor", "PPJSON"]),

        .executableTarget(name: "ppconvert", dependencies: [
            "PPCLI",
            "PPConvert", "PPCheckpoint", "PPModel", "PPKernels", "PPTensor", "PPJSON",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "ppsample", dependencies: [
            "PPCLI",
            "PPSample", "PPEval", "PPCheckpoint", "PPModel", "PPKernels", "PPSafetensors", "PPTensor", "PPJSON",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "ppfinetune", dependencies: [
            "PPCLI",
            "PPTrain", "PPCheckpoint", "PPModel", "PPKernels", "PPSafetensors", "PPTensor", "PPJSON",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // Helpers shared by the test targets (fixture paths, scratch folders, assertions).
        .target(name: "PPTestSupport", dependencies: ["PPTensor"], path: "Tests/PPTestSupport"),
        .testTarget(name: "PPTensorTests", dependencies: ["PPTensor"]),
        .testTarget(name: "PPJSONTests", dependencies: ["PPJSON"]),
        .testTarget(name: "PPSafetensorsTests", dependencies: ["PPSafetensors", "PPTensor"]),
        .testTarget(name: "PPTorchFormatTests", dependencies: ["PPTestSupport", "PPTorchFormat", "PPTensor", "PPSafetensors"]),
        .testTarget(name: "PPCheckpointTests", dependencies: ["PPTestSupport", "PPCheckpoint", "PPTensor", "PPSafetensors", "PPTorchFormat", "PPJSON"]),
        .testTarget(name: "PPKernelsTests", dependencies: ["PPTestSupport", "PPKernels"]),
        .testTarget(name: "PPModelTests", dependencies: ["PPTestSupport", "PPModel", "PPKernels", "PPCheckpoint", "PPTensor", "PPSafetensors", "PPTorchFormat"]),
        .testTarget(name: "PPConvertTests", dependencies: ["PPTestSupport", "PPConvert", "PPCheckpoint", "PPModel", "PPTensor", "PPJSON", "PPSafetensors", "PPTorchFormat"]),
        .testTarget(name: "PPSampleTests", dependencies: ["PPTestSupport", "PPSample", "PPModel", "PPCheckpoint", "PPTensor", "PPSafetensors", "PPTorchFormat"]),
        .testTarget(name: "PPEvalTests", dependencies: ["PPTestSupport", "PPEval", "PPKernels", "PPSample", "PPModel", "PPTensor", "PPJSON", "PPSafetensors"]),
        .testTarget(name: "PPTrainTests", dependencies: ["PPTestSupport", "PPTrain", "PPConvert", "PPModel", "PPKernels", "PPCheckpoint", "PPTensor", "PPSafetensors", "PPTorchFormat"]),
    ],
    // Swift 5 language mode: the numeric code shares buffers across threads deliberately (disjoint
    // ranges), which strict Swift 6 checking cannot see.
    swiftLanguageModes: [.v5]
)
