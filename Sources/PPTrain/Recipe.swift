import PPCheckpoint
import PPFileIO
import PPJSON
import PPModel
import PPLatents
import PPTensor

#if canImport(Glibc)
import Glibc
#endif

/// A fine-tuning recipe (recipes/*.json, documented field by field in docs/RECIPES.md). Input paths are
/// relative to the recipe's folder; `output` is relative to the current folder.
public struct Recipe: Sendable {
    public enum Start: Sendable, Equatable {
        /// Any checkpoint ModelLoader reads (a native PPFlow folder usually); `heads` when no metadata says.
        case checkpoint(path: String, heads: Int?)
        /// A DiT/SiT converted on the fly (ppconvert from-dit's options).
        case fromDiT(FromDiTStart)
    }

    public struct FromDiTStart: Sendable, Equatable {
        public var source: String
        public var levels: Int
        /// "repeat" (the paper's rule) or "calibrated" (needs `calibrationData`).
        public var initializer: String
        public var calibrationData: String?
        public var calibrationSamples: Int?
        /// Calibrated only: gain of the fine detail added to the coarse patch embeddings (0: none).
        public var detailScale: Double?
        public var objective: String?
        public var heads: Int?
    }

    public enum Schedule: String, Sendable { case constant, warmup, cosine }

    public struct Phase: Sendable, Equatable {
        public var name: String
        /// Steps of this phase; nil = until the end (last phase only).
        public var steps: Int?
        /// Tensor name patterns ("*" = any run of characters).
        public var train: [String]
    }

    public var name: String
    public var recipePath: String
    public var start: Start
    public var dataFiles: [DataSource]
    public var validationFiles: [DataSource]
    /// `data.vae`: the VAE that encodes image folders given as data (a path or a hub id).
    public var vae: String?
    public var validationFraction: Double
    public var levelShares: [Double]
    public var thresholds: [Double]?
    public var batchSize: Int
    public var steps: Int
    public var schedule: Schedule
    public var learningRate: Double
    public var warmupSteps: Int
    public var finalLearningRate: Double
    public var beta1: Double, beta2: Double, eps: Double, weightDecay: Double
    public var maxGradNorm: Double?
    public var labelDropout: Double
    public var emaDecay: Double
    public var phases: [Phase]
    public var seed: UInt64
    public var checkpointEvery: Int
    public var keepCheckpoints: Int
    public var validateEvery: Int
    public var validationSamples: Int
    public var logEvery: Int
    public var attention: AttentionScope
    public var output: String
    public var threads: Int?
    /// sha256 of the recipe's canonical JSON without `output` and `threads` (resume refuses another recipe).
    public var hash: String
    /// The recipe as parsed (after overrides), for the run folder.
    public var json: JSONValue

    /// Reads and checks a recipe file; `overrides` are "dotted.key=JSON value" pairs applied first.
    public static func load(_ path: String, overrides: [(String, String)] = []) throws -> Recipe {
        var st = stat()
        guard stat(path, &st) == 0 else { throw PPError(.missingInput, file: path, "recipe not found") }
        var value = try JSON.parse(file: path)
        for (key, text) in overrides {
            let parsed: JSONValue
            if let json = try? JSON.parse(text, origin: "--set \(key)") { parsed = json } else { parsed = .string(text) }
            value = try setting(value, path: key.split(separator: ".").map(String.init), to: parsed, origin: path)
        }
        return try Recipe(json: value, path: path)
    }

    static func setting(_ value: JSONValue, path: [String], to newValue: JSONValue, origin: String) throws -> JSONValue {
        guard let first = path.first else { return newValue }
        guard var object = value.objectValue else {
            throw PPError(.usage, file: origin, entry: first, "cannot set a field inside a \(value.kindDescription)")
        }
        object[first] = try setting(object[first] ?? .object(JSONObject()), path: Array(path.dropFirst()), to: newValue, origin: origin)
        return .object(object)
    }

    /// `environment` locates the Hugging Face cache for model arguments given as hub ids (default: this
    /// process's environment).
    public init(json value: JSONValue, path: String, environment: [String: String]? = nil) throws {
        recipePath = path
        json = value
        let base = FileOutput.directory(of: path)
        func resolve(_ p: String) -> String { p.hasPrefix("/") ? p : (base == "." ? p : "\(base)/\(p)") }
        let root = try Fields(value, entry: "", origin: path)

        name = try root.string("name") ?? FileOutput.baseName(of: path)
        // start
        let startFields = try root.object("start", required: true)!
        let checkpoint = try startFields.string("checkpoint")
        let fromDiT = try startFields.object("from_dit")
        let startHeads = try startFields.int("heads", min: 1)
        switch (checkpoint, fromDiT) {
        case (let path?, nil):
            start = .checkpoint(path: try Self.modelArgument(path, resolved: resolve(path), file: path, entry: "start.checkpoint", environment: environment), heads: startHeads)
        case (nil, let f?):
            let sourceArgument = try f.string("source", required: true)!
            let source = try Self.modelArgument(sourceArgument, resolved: resolve(sourceArgument), file: path, entry: "start.from_dit.source",
                                                 environment: environment)
            let initializer = try f.string("initializer") ?? "repeat"
            guard ["repeat", "calibrated"].contains(initializer) else {
                throw f.error("initializer", "'\(initializer)': expected \"repeat\" or \"calibrated\"")
            }
            let data = try f.string("calibration_data").map(resolve)
            if let data { try Self.requireExists(data, file: path, entry: "start.from_dit.calibration_data") }
            if initializer == "calibrated" && data == nil { throw f.error("calibration_data", "required by the calibrated initializer") }
            let levels = try f.int("levels", min: 2, max: 3) ?? 2
            let detailScale = try f.double("detail_scale", min: 0, max: 100)
            if let detailScale, detailScale > 0, initializer != "calibrated" {
                throw f.error("detail_scale", "only the calibrated initializer uses it (0 turns it off)")
            }
            let objective = try f.string("objective")
            if let objective, !["velocity", "epsilon"].contains(objective) { throw f.error("objective", "'\(objective)': expected \"velocity\" or \"epsilon\"") }
            start = .fromDiT(FromDiTStart(source: source, levels: levels, initializer: initializer, calibrationData: data,
                                          calibrationSamples: try f.int("calibration_samples", min: 1),
                                          detailScale: detailScale, objective: objective,
                                          heads: try f.int("heads", min: 1) ?? startHeads))
            try f.finish()
        default:
            throw startFields.error(nil, "needs exactly one of \"checkpoint\" and \"from_dit\"")
        }
        try startFields.finish()

        // data
        let data = try root.object("data", required: true)!
        // A path (relative to the recipe) when it exists there, else a hub id as given.
        let vaePath = try data.string("vae").map { v -> String in
            var st = stat()
            return stat(resolve(v), &st) == 0 ? resolve(v) : v
        }
        vae = vaePath
        func sources(_ key: String) throws -> [DataSource] {
            guard let list = try data.array(key) else { return [] }
            return try list.enumerated().map { i, item in
                let entry = "data.\(key)[\(i)]"
                if let p = item.stringValue {
                    try Self.requireExists(resolve(p), file: path, entry: entry)
                    var st = stat()
                    if stat(resolve(p), &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR {
                        if LatentCache.isCache(resolve(p)) { return .latentCache(resolve(p)) }
                        guard vaePath != nil else {
                            throw PPError.badInput(path, entry: entry, "'\(p)' is an image folder (no cache.json): give data.vae to encode it, or encode it first with ppfinetune encode")
                        }
                        return .imageFolder(resolve(p))
                    }
                    guard p.hasSuffix(".safetensors") else { throw PPError.badInput(path, entry: entry, "'\(p)': a shard is a .safetensors file, a {\"latents\": .npy, \"labels\": .npy} pair, a latent cache folder or an image folder") }
                    return .safetensors(resolve(p))
                }
                let pair = try Fields(item, entry: entry, origin: path)
                let l = try pair.string("latents", required: true)!, y = try pair.string("labels", required: true)!
                try pair.finish()
                for p in [l, y] {
                    try Self.requireExists(resolve(p), file: path, entry: entry)
                    guard p.hasSuffix(".npy") else { throw PPError.badInput(path, entry: entry, "'\(p)': expected a .npy file") }
                }
                return .npy(latents: resolve(l), labels: resolve(y))
            }
        }
        dataFiles = try sources("train")
        guard !dataFiles.isEmpty else { throw data.error("train", "needs at least one shard") }
        validationFiles = try sources("validation")
        validationFraction = try data.double("validation_fraction", min: 0, max: 0.5) ?? (validationFiles.isEmpty ? 0.1 : 0)
        if validationFiles.isEmpty && validationFraction <= 0 { throw data.error("validation_fraction", "must be > 0 when no validation files are given") }
        try data.finish()

        // pyramid
        let pyramid = try root.object("pyramid", required: true)!
        levelShares = try pyramid.doubles("shares", required: true)!
        guard levelShares.count >= 1, levelShares.allSatisfy({ $0 >= 0 }), abs(levelShares.reduce(0, +) - 1) < 1e-6 else {
            throw pyramid.error("shares", "\(levelShares): one non-negative share per level, summing to 1")
        }
        thresholds = try pyramid.doubles("thresholds")
        if let thresholds {
            guard thresholds.count == levelShares.count - 1, thresholds == thresholds.sorted(), thresholds.allSatisfy({ $0 > 0 && $0 < 1 }) else {
                throw pyramid.error("thresholds", "\(thresholds): need \(levelShares.count - 1) increasing value(s) inside (0, 1), one fewer than shares")
            }
        }
        try pyramid.finish()
        if case .fromDiT(let f) = start, f.levels != levelShares.count {
            throw pyramid.error("shares", "\(levelShares.count) shares for a \(f.levels)-level conversion (start.from_dit.levels)")
        }

        batchSize = try root.int("batch_size", required: true, min: 1)!
        steps = try root.int("steps", required: true, min: 1)!

        let lr = try root.object("learning_rate", required: true)!
        let scheduleName = try lr.string("schedule") ?? "constant"
        guard let schedule = Schedule(rawValue: scheduleName) else { throw lr.error("schedule", "'\(scheduleName)': expected constant, warmup or cosine") }
        self.schedule = schedule
        learningRate = try lr.double("peak", required: true, min: 0)!
        warmupSteps = try lr.int("warmup_steps", min: 0) ?? 0
        finalLearningRate = try lr.double("final", min: 0) ?? 0
        if schedule == .warmup && warmupSteps == 0 { throw lr.error("warmup_steps", "the warmup schedule needs warmup_steps > 0") }
        try lr.finish()

        let adam = try root.object("adamw")
        beta1 = try adam?.double("beta1", min: 0, max: 0.999999) ?? 0.9
        beta2 = try adam?.double("beta2", min: 0, max: 0.999999) ?? 0.999
        eps = try adam?.double("eps", min: 0) ?? 1e-8
        weightDecay = try adam?.double("weight_decay", min: 0) ?? 0
        try adam?.finish()
        maxGradNorm = try root.double("max_grad_norm", min: 0)
        labelDropout = try root.double("label_dropout", min: 0, max: 1) ?? 0
        emaDecay = try root.double("ema_decay", required: true, min: 0, max: 1)!

        if let list = try root.array("phases") {
            phases = try list.enumerated().map { i, item in
                let f = try Fields(item, entry: "phases[\(i)]", origin: path)
                let phase = Phase(name: try f.string("name") ?? "phase \(i + 1)", steps: try f.int("steps", min: 1),
                                  train: try f.strings("train", required: true)!)
                guard !phase.train.isEmpty else { throw f.error("train", "names no tensor pattern") }
                try f.finish()
                return phase
            }
            guard !phases.isEmpty else { throw root.error("phases", "is empty") }
            for (i, phase) in phases.enumerated() where phase.steps == nil && i != phases.count - 1 {
                throw root.error("phases[\(i)].steps", "only the last phase may run to the end")
            }
        } else {
            phases = [Phase(name: "all", steps: nil, train: ["*"])]
        }

        let seedValue = try root.int("seed", min: 0) ?? 0
        seed = UInt64(seedValue)
        checkpointEvery = try root.int("checkpoint_every", min: 1) ?? steps
        keepCheckpoints = try root.int("keep_checkpoints", min: 1) ?? 2
        validateEvery = try root.int("validate_every", min: 1) ?? steps
        validationSamples = try root.int("validation_samples", min: 1) ?? 256
        logEvery = try root.int("log_every", min: 1) ?? 1
        let attentionName = try root.string("attention") ?? "per-sample"
        switch attentionName {
        case "per-sample": attention = .perSample
        case "official": attention = .officialPacking
        default: throw root.error("attention", "'\(attentionName)': expected \"per-sample\" or \"official\"")
        }
        output = try root.string("output", required: true)!
        threads = try root.int("threads", min: 1)
        try root.finish()

        var hashed = value.objectValue ?? JSONObject()
        hashed["output"] = nil
        hashed["threads"] = nil
        hash = SHA256.hash(Array(JSON.serialize(.object(hashed), pretty: false, sortKeys: true).utf8))
    }

    /// What a missing start model means: usually an official checkpoint not downloaded yet.
    static let startModelHint = "download the official checkpoint (docs/CHECKPOINTS.md lists where each comes from) to that path, or edit the recipe"

    /// A model argument: a path relative to the recipe or, when nothing is there and it looks like one,
    /// a Hugging Face hub id found in the local cache (kept as the id; CheckpointLoader resolves it).
    static func modelArgument(_ value: String, resolved: String, file: String, entry: String, environment: [String: String]?) throws -> String {
        var st = stat()
        if stat(resolved, &st) == 0 { return resolved }
        guard HubCache.parse(value) != nil else {
            throw PPError(.missingInput, file: file, entry: entry, "\(resolved) does not exist; \(startModelHint)")
        }
        do {
            _ = try HubCache.resolve(value, environment: environment ?? HubCache.processEnvironment())
        } catch let error as PPError {
            throw PPError(.missingInput, file: file, entry: entry, "\(resolved) does not exist; as a hub id: \(error.message); \(startModelHint)")
        }
        return value
    }

    static func requireExists(_ path: String, file: String, entry: String, hint: String? = nil) throws {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw PPError(.missingInput, file: file, entry: entry, "\(path) does not exist" + (hint.map { "; \($0)" } ?? ""))
        }
    }

    /// Learning rate of optimizer step `step` (1-based).
    public func learningRate(atStep step: Int) -> Double {
        let warm = warmupSteps > 0 ? min(1, Double(step) / Double(warmupSteps)) : 1
        switch schedule {
        case .constant: return learningRate
        case .warmup: return learningRate * warm
        case .cosine:
            if step <= warmupSteps { return learningRate * warm }
            let progress = Double(step - warmupSteps) / Double(max(1, steps - warmupSteps))
            return finalLearningRate + 0.5 * (learningRate - finalLearningRate) * (1 + cos(Double.pi * min(1, progress)))
        }
    }

    /// The phase that optimizer step `step` (1-based) belongs to.
    public func phaseIndex(atStep step: Int) -> Int {
        var end = 0
        for (i, phase) in phases.enumerated() {
            guard let n = phase.steps else { return i }
            end += n
            if step <= end { return i }
        }
        return phases.count - 1
    }

    /// Samples of each level in one batch: round(share·B), the remainder to the largest shares.
    public func levelCounts() -> [Int] {
        var counts = levelShares.map { Int(($0 * Double(batchSize)).rounded(.down)) }
        let order = levelShares.indices.sorted { (levelShares[$0] * Double(batchSize) - Double(counts[$0]), -$0) > (levelShares[$1] * Double(batchSize) - Double(counts[$1]), -$1) }
        var k = 0
        while counts.reduce(0, +) < batchSize { counts[order[k % order.count]] += 1; k += 1 }
        return counts
    }
}

/// Strict reading of one JSON object: every field is looked up with its expected type, and `finish`
/// refuses the fields nobody asked for.
struct Fields {
    let object: JSONObject
    let entry: String
    let origin: String
    private let used: Box

    final class Box { var keys: Set<String> = [] }

    init(_ value: JSONValue, entry: String, origin: String) throws {
        guard let object = value.objectValue else {
            throw PPError.badInput(origin, entry: entry.isEmpty ? nil : entry, "expected an object, got \(value.kindDescription)")
        }
        self.object = object; self.entry = entry; self.origin = origin; used = Box()
    }

    func key(_ name: String?) -> String? {
        guard let name else { return entry.isEmpty ? nil : entry }
        return entry.isEmpty ? name : "\(entry).\(name)"
    }

    func error(_ name: String?, _ message: String) -> PPError { PPError.badInput(origin, entry: key(name), message) }

    private func value(_ name: String, _ required: Bool) throws -> JSONValue? {
        used.keys.insert(name)
        guard let v = object[name], !v.isNull else {
            if required { throw error(name, "required field is missing") }
            return nil
        }
        return v
    }

    private func wrongType(_ name: String, _ v: JSONValue, _ expected: String) -> PPError {
        error(name, "expected \(expected), got \(v.kindDescription)")
    }

    func string(_ name: String, required: Bool = false) throws -> String? {
        guard let v = try value(name, required) else { return nil }
        guard let s = v.stringValue else { throw wrongType(name, v, "a string") }
        return s
    }

    func int(_ name: String, required: Bool = false, min: Int? = nil, max: Int? = nil) throws -> Int? {
        guard let v = try value(name, required) else { return nil }
        guard case .int(let i) = v else { throw wrongType(name, v, "an integer") }
        if let min, i < min { throw error(name, "\(i) is below the minimum \(min)") }
        if let max, i > max { throw error(name, "\(i) is above the maximum \(max)") }
        return Int(i)
    }

    func double(_ name: String, required: Bool = false, min: Double? = nil, max: Double? = nil) throws -> Double? {
        guard let v = try value(name, required) else { return nil }
        guard let d = v.doubleValue, v.stringValue == nil, v.boolValue == nil else { throw wrongType(name, v, "a number") }
        if let min, d < min { throw error(name, "\(d) is below the minimum \(min)") }
        if let max, d > max { throw error(name, "\(d) is above the maximum \(max)") }
        return d
    }

    func array(_ name: String, required: Bool = false) throws -> [JSONValue]? {
        guard let v = try value(name, required) else { return nil }
        guard let a = v.arrayValue else { throw wrongType(name, v, "an array") }
        return a
    }

    func doubles(_ name: String, required: Bool = false) throws -> [Double]? {
        try array(name, required: required)?.map { v in
            guard let d = v.doubleValue, v.stringValue == nil, v.boolValue == nil else { throw wrongType(name, v, "an array of numbers") }
            return d
        }
    }

    func strings(_ name: String, required: Bool = false) throws -> [String]? {
        try array(name, required: required)?.map { v in
            guard let s = v.stringValue else { throw wrongType(name, v, "an array of strings") }
            return s
        }
    }

    func object(_ name: String, required: Bool = false) throws -> Fields? {
        guard let v = try value(name, required) else { return nil }
        return try Fields(v, entry: key(name)!, origin: origin)
    }

    func finish() throws {
        if let unknown = object.keys.first(where: { !used.keys.contains($0) }) {
            throw error(unknown, "unknown field")
        }
    }
}

/// Tensor-name patterns of recipe phases: "*" matches any run of characters.
public enum NamePattern {
    public static func matches(_ pattern: String, _ name: String) -> Bool {
        let p = Array(pattern), n = Array(name)
        var pi = 0, ni = 0, star = -1, mark = 0
        while ni < n.count {
            if pi < p.count && p[pi] != "*" && p[pi] == n[ni] { pi += 1; ni += 1 }
            else if pi < p.count && p[pi] == "*" { star = pi; mark = ni; pi += 1 }
            else if star >= 0 { pi = star + 1; mark += 1; ni = mark }
            else { return false }
        }
        while pi < p.count && p[pi] == "*" { pi += 1 }
        return pi == p.count
    }
}
