import PPCheckpoint
import PPFileIO
import PPJSON
import PPModel
import PPModelIO
import PPTensor

#if canImport(Glibc)
import Glibc
#endif

/// The whole `ppconvert from-dit` job: load, convert, verify, then write, check against an existing
/// output, or only plan. Kept out of the executable so tests run it in-process.
public struct FromDiTJob {
    public enum Mode: Sendable { case write, dryRun, check }

    public var sourcePath: String
    public var options: FromDiTOptions
    public var weights: WeightsChoice?
    /// Check a native source's weights against the sha256 in its config.json.
    public var verifyHashes = true
    public var output: String?
    public var format: OutputFormat = .native
    public var verify = true
    public var mode: Mode = .write
    /// Replace an existing output (only one the toolkit wrote; see `OutputTarget`).
    public var force = false
    public var log: (String) -> Void = { print($0) }
    /// Latents for the verification inputs (x1 of x_t); Gaussian when nil.
    public var verificationData: (latents: [Float], labels: [Int32], count: Int)?
    /// The source already loaded and hashed by the caller (`migrate` does both to decide whether to
    /// convert), so the job does not read it twice. `sha256` is nil for a folder, as fileSHA256 gives.
    public var preloaded: (checkpoint: LoadedCheckpoint, sha256: String?)?

    public init(sourcePath: String, options: FromDiTOptions) {
        self.sourcePath = sourcePath
        self.options = options
    }

    public struct Outcome {
        public var exitCode: Int32
        public var report: JSONValue
        public var outputPath: String
    }

    /// Default output: `<source stem>-ppf<levels>` in the current folder (a `.pt` with --format torch).
    public static func defaultOutput(for source: String, levels: Int, format: OutputFormat) -> String {
        var stem = FileOutput.baseName(of: source)
        for ext in [".zip", ".pt", ".pth", ".bin", ".safetensors", ".ckpt"] where stem.hasSuffix(ext) {
            stem = String(stem.dropLast(ext.count))
        }
        return "\(stem)-ppf\(levels)" + (format == .native ? "" : ".pt")
    }

    /// The output path this job writes (or checks).
    public var outputPath: String { output ?? Self.defaultOutput(for: sourcePath, levels: options.levels, format: format) }

    /// Refuses, before any work, an output that exists (unless `force`) or that the toolkit did not write.
    public func checkOutput() throws {
        if mode == .write { try format.checkOutput(outputPath, force: force) }
    }

    public func run() throws -> Outcome {
        try checkOutput()
        let source = try preloaded?.checkpoint ?? CheckpointLoader.load(sourcePath, weights: weights, verifyHashes: verifyHashes)
        // The source's sha256 goes only into config.json, written last: when writing, hash the source on
        // its own thread while the conversion, the verification and the weights (hashed as they are written)
        // go on, so the two hashes and the write share the two cores instead of following each other.
        let path = sourcePath, known = preloaded.map { $0.sha256 }
        let pendingHash = BackgroundValue<String?> { try known ?? CheckpointLoader.fileSHA256(path) }
        defer { pendingHash.finish() }
        let overlapHash = mode == .write && format == .native
        var sourceHash = overlapHash ? nil : try pendingHash.value()
        var result = try FromDiT.convert(source, options: options, sourceSHA256: sourceHash)
        for warning in result.warnings { log("warning: \(warning)") }
        if let objective = result.nativeConfig["objective"]?.stringValue {
            log("objective: \(objective) (from \(result.nativeConfig["provenance"]?["objective_source"]?.stringValue ?? "?"))")
        }
        let out = outputPath

        var report = JSONObject([
            ("source", .string(sourcePath)),
            ("source_sha256", sourceHash.map { .string($0) } ?? .null),
            ("source_format", .string(source.containerDescription)),
            ("source_family", .string(source.family)),
            ("objective", result.nativeConfig["objective"] ?? .null),
            ("objective_source", result.nativeConfig["provenance"]?["objective_source"] ?? .null),
            ("levels", .int(Int64(options.levels))),
            ("thresholds", .array(options.resolvedThresholds.map { .double($0) })),
            ("initializer", .string(options.initializer.rawValue)),
            ("output", .string(out)),
            ("format", .string(format.rawValue)),
            ("warnings", .array(result.warnings.map { .string($0) })),
        ])
        report["plan"] = Self.planJSON(result.plan)
        if let calibration = result.calibration {
            report["calibration"] = calibration.json
            for fit in calibration.fits {
                log("calibrated level \(fit.level) (\(fit.layout)) on \(fit.rows) token rows: relative residual \(Verification.fourDigits(fit.relativeResidualRepeat)) (repeat rule) -> \(Verification.fourDigits(fit.relativeResidualFitted))")
            }
        }

        var exitCode: Int32 = 0
        if verify {
            let sourceConfig = try ContainerConversion.modelConfig(of: source, heads: options.heads)
            // The converted tensors share the source's unchanged ones, so the three models cost little more
            // than the mapped source.
            let sourceWeights = try ModelWeights(config: sourceConfig, tensors: try ModelLoader.completeTensors(source, config: sourceConfig))
            let verification = Verification(source: sourceWeights, ppflow: try ModelWeights(config: result.config, tensors: result.tensors),
                                            data: verificationData, pool: heldOutPool(),
                                            repeatRule: options.initializer == .calibrated ? try FromDiT.repeatRuleWeights(of: source, like: result.config) : nil)
            verification.lines().forEach(log)
            report["verification"] = verification.json
            if !verification.passed {
                exitCode = 1
                log("error: the finest level does not reproduce the source; nothing written")
                report["written"] = .bool(false)
                return Outcome(exitCode: exitCode, report: .object(report), outputPath: out)
            }
        }

        switch mode {
        case .dryRun:
            log("plan: \(result.plan.copied.count) tensors copied, \(result.plan.derived.count) derived, \(result.plan.created.count) created, \(result.plan.dropped.count) dropped; output \(result.plan.outputBytes) bytes")
            for d in result.plan.derived { log("  derive \(d.target) <- \(d.source): \(d.rule)") }
            for c in result.plan.created { log("  create \(c.target): \(c.rule)") }
            for d in result.plan.dropped { log("  drop   \(d.source): \(d.why)") }
            report["written"] = .bool(false)
        case .write:
            let hash = try write(result, to: out, sourceHash: overlapHash ? pendingHash : nil)
            if overlapHash {
                sourceHash = try pendingHash.value()
                result.nativeConfig = FromDiT.recordingSourceHash(sourceHash, in: result.nativeConfig)
                report["source_sha256"] = sourceHash.map { .string($0) } ?? .null
            }
            report["output_sha256"] = hash.map { .string($0) } ?? .null
            report["written"] = .bool(true)
            log("wrote \(out)")
        case .check:
            let same = try matchesExisting(result, at: out)
            report["check"] = .string(same ? "identical" : "differs")
            report["written"] = .bool(false)
            log(same ? "check: \(out) is identical to a fresh conversion" : "check: \(out) differs from a fresh conversion")
            if !same { exitCode = 1 }
        }
        return Outcome(exitCode: exitCode, report: .object(report), outputPath: out)
    }

    /// Writes the converted model; returns the sha256 of the weights file.
    /// `sourceHash`: still being computed; a native config.json records it once it is known.
    func write(_ result: ConversionResult, to path: String, sourceHash: BackgroundValue<String?>? = nil) throws -> String? {
        switch format {
        case .native:
            return try NativeCheckpoint.write(tensors: result.tensors, config: result.nativeConfig, to: path, completeConfig: sourceHash.map { pending in
                { config in config = FromDiT.recordingSourceHash(try pending.value(), in: config) }
            })
        case .torch:
            try CheckpointWriter.writeTorchStateDict(result.tensors, config: result.nativeConfig, to: path)
            return try NativeCheckpoint.sha256(ofFile: path)
        case .safetensors:
            try CheckpointWriter.writeSafetensors(result.tensors, to: path)
            return try NativeCheckpoint.sha256(ofFile: path)
        case .torchTrain:
            throw PPError(.usage, entry: "--format", "from-dit writes native or torch; use `ppconvert convert --format torch-train` on its output")
        }
    }

    /// Converts into a temporary sibling and compares every file byte for byte with `path`.
    func matchesExisting(_ result: ConversionResult, at path: String) throws -> Bool {
        var st = stat()
        guard stat(path, &st) == 0 else { throw PPError(.missingInput, file: path, "nothing to check: the output does not exist") }
        let dir = FileOutput.directory(of: path)
        var template = Array("\(dir)/.ppconvert-check-XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
            throw PPError(.io, file: dir, "cannot create a temporary folder for --check")
        }
        let scratch = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        defer { FileOutput.removeTree(scratch) }
        let fresh = "\(scratch)/out"
        _ = try write(result, to: fresh)
        return try Self.treesEqual(fresh, path)
    }

    /// Same files with the same bytes (a file compares with a file, a folder with a folder).
    static func treesEqual(_ a: String, _ b: String) throws -> Bool {
        let aIsDir = (try? DirectoryTree(path: a)) != nil, bIsDir = (try? DirectoryTree(path: b)) != nil
        guard aIsDir == bIsDir else { return false }
        if !aIsDir {
            let x = try ByteStorage(mappingFile: a), y = try ByteStorage(mappingFile: b)
            return x.withBytes { a in y.withBytes { b in a.elementsEqual(b) } }
        }
        let ta = try DirectoryTree(path: a), tb = try DirectoryTree(path: b)
        guard ta.files == tb.files else { return false }
        for file in ta.files {
            let x = try ta.open(file), y = try tb.open(file)
            if !x.withBytes({ a in y.withBytes { b in a.elementsEqual(b) } }) { return false }
        }
        return true
    }


    static func planJSON(_ plan: ConversionPlan) -> JSONValue {
        .object(JSONObject([
            ("copied", .array(plan.copied.map { .string($0) })),
            ("derived", .array(plan.derived.map { .object(JSONObject([("target", .string($0.target)), ("source", .string($0.source)), ("rule", .string($0.rule))])) })),
            ("created", .array(plan.created.map { .object(JSONObject([("target", .string($0.target)), ("rule", .string($0.rule))])) })),
            ("dropped", .array(plan.dropped.map { .object(JSONObject([("source", .string($0.source)), ("why", .string($0.why))])) })),
            ("output_bytes", .int(Int64(plan.outputBytes))),
        ]))
    }

    /// With a calibrated conversion verified on its own calibration file: the rows it did not use.
    private func heldOutPool() -> [Int]? {
        guard let calibration = options.calibration, options.initializer == .calibrated, let data = verificationData else { return nil }
        return CalibratedInitializer.heldOutSamples(count: data.count, options: calibration)
    }
}

