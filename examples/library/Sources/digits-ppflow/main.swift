// Load a DiT/SiT checkpoint, convert it to a 2-level PPFlow model in memory, check that the finest level
// reproduces the source, and sample one digit per class with the converted model.
//
//   digits-ppflow [CHECKPOINT]      (default: examples/digits/digits-sit.zip, run from the repository root)
import PPFlowKit

#if canImport(Glibc)
import Glibc
#endif

BLASCore.useCPUKernels()   // the right OpenBLAS kernels for this CPU (may re-execute the process once)

let path = CommandLine.arguments.dropFirst().first ?? "examples/digits/digits-sit.zip"
do {
    // Any form the toolkit reads: .pt, safetensors, diffusers or sharded folders, zips of them.
    let source = try CheckpointLoader.load(path)
    print("source: \(source.family), \(source.containerDescription), objective \(source.objective.rawValue)")

    var options = FromDiTOptions()
    options.levels = 2
    let converted = try FromDiT.convert(source, options: options, sourceSHA256: nil)
    print("converted: PPFlow-\(converted.config.levels), thresholds \(converted.config.thresholds), \(converted.tensors.names.count) tensors")

    // The source as a runnable model (pos_embed and other computed tensors filled in).
    let sourceConfig = try ModelLoader.configuration(of: source)
    let sourceWeights = try ModelWeights(config: sourceConfig, tensors: try ModelLoader.completeTensors(source, config: sourceConfig))
    let ppflowWeights = try ModelWeights(config: converted.config, tensors: converted.tensors)
    let verification = Verification(source: sourceWeights, ppflow: ppflowWeights)
    verification.lines().forEach { print($0) }
    guard verification.passed else {
        print("the finest level does not reproduce the source")
        exit(1)
    }

    // One digit per class: the converted model's velocity field, guided per level, Heun on 16 grid points.
    let model = Model(weights: ppflowWeights)
    let guidance = Guidance(scales: options.resolvedCFGScales.map(Float.init))
    let field = try SampleFields.field(model: model, objective: source.objective, guidance: guidance)
    let classes = converted.config.numClasses
    let side = converted.config.inputSize
    let start = try SampleStart.seeded(0, batch: classes, channels: converted.config.inChannels, side: side,
                                       labels: (0..<classes).map(Int32.init), numClasses: classes)
    // As ppsample does by default: the noise the coarse level cannot see is removed where the finer level takes over.
    let unseenNoise = UnseenNoisePlan(model: model, objective: source.objective)
    let result = try Sampler.run(field, start: start, method: .heun, points: 16, unseenNoise: unseenNoise)
    print("sampled \(classes) digits (\(result.count.evaluations) model evaluations, \(result.count.savedEvaluations) saved by guidance 1 at the coarse level):")

    // Text picture: each digit at half resolution (2x2 averages of channel 0), values -1...1 as shades.
    let shades = Array(" .:-=+*#%@")
    let plane = side * side * converted.config.inChannels
    for row in stride(from: 0, to: side, by: 2) {
        var line = ""
        for digit in 0..<classes {
            for column in stride(from: 0, to: side, by: 2) {
                var sum: Float = 0
                for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] { sum += result.samples[digit * plane + (row + dy) * side + column + dx] }
                let level = Int(((sum / 4 + 1) / 2 * Float(shades.count - 1)).rounded())
                line.append(shades[min(max(level, 0), shades.count - 1)])
            }
            line += "  "
        }
        print(line)
    }
} catch {
    print("digits-ppflow: \(error)")
    exit(1)
}
