import PPCheckpoint
import PPFileIO
import PPJSON
import PPModel
import PPModelIO
import PPTensor

#if canImport(Glibc)
// Glibc declares stderr as a mutable C global, which Swift 6 rejects as shared mutable state
// (swiftlang/swift#75601). The C runtime sets it before main and nothing assigns it afterwards, so
// this file reads it as the constant it is in practice.
@preconcurrency import Glibc
#endif

/// `ppconvert migrate`: converts every DiT/SiT checkpoint in a folder (a trainer's `checkpoints/`, a
/// folder of downloads) into native PPFlow folders `<stem>-ppf<L>` in a destination folder, one per
/// source and level, with `FromDiTJob` doing each conversion. Re-running skips what is already
/// converted from the same source bytes with the same options; a broken file is a failed entry, not
/// the end of the run. The record is `DST/migration.json`: sorted entries, names relative to the two
/// folders, no timestamps, so the same inputs give the same bytes.
public struct Migration {
    public enum Status: String, Sendable { case converted, skipped, failed }

    /// One line of the manifest: a source at one level (a source that never got as far as a level,
    /// because it is not a checkpoint or does not load, has one entry with `level` nil).
    public struct Entry: Sendable {
        public var source: String
        public var sourceSHA256: String?
        public var level: Int?
        public var output: String?
        public var outputSHA256: String?
        public var status: Status
        /// Why it was skipped.
        public var reason: String?
        /// The one-line error of a failure: the line printed on stderr, paths relative to the two folders.
        public var error: String?
        public var verification: JSONValue?
        public var warnings: [String] = []

        public var json: JSONValue {
            .object(JSONObject([
                ("source", .string(source)),
                ("source_sha256", sourceSHA256.map { .string($0) } ?? .null),
                ("level", level.map { .int(Int64($0)) } ?? .null),
                ("output", output.map { .string($0) } ?? .null),
                ("output_sha256", outputSHA256.map { .string($0) } ?? .null),
                ("status", .string(status.rawValue)),
                ("reason", reason.map { .string($0) } ?? .null),
                ("error", error.map { .string($0) } ?? .null),
                ("verification", verification ?? .null),
                ("warnings", .array(warnings.map { .string($0) })),
            ]))
        }
    }

    public struct Report: Sendable {
        public var entries: [Entry]
        public var json: JSONValue
        public func count(_ status: Status) -> Int { entries.filter { $0.status == status }.count }
        /// 65 (bad input) when any entry failed, as a single failed conversion would exit.
        public var exitCode: Int32 { count(.failed) > 0 ? 65 : 0 }
    }

    public static let manifestName = "migration.json"
    public static let manifestFormat = "ppflow-migration"
    public static let manifestVersion: Int64 = 1

    public var sourceFolder: String
    public var destinationFolder: String
    /// Pyramid levels to produce for every source (2, 3 or both).
    public var levels: [Int] = [2]
    /// The from-dit options; `levels` is set per output.
    public var options = FromDiTOptions()
    public var verify = true
    /// Latents for the verification (and for --init calibrated, which needs them).
    public var dataPath: String?
    /// Progress: one line per source and output.
    public var progress: (String) -> Void = { print($0) }
    /// A failed entry's one-line error (the command prefixes its name and prints it on stderr).
    public var reportError: (String) -> Void = { fputs($0 + "\n", stderr) }

    public init(sourceFolder: String, destinationFolder: String) {
        self.sourceFolder = Self.trimmed(sourceFolder)
        self.destinationFolder = Self.trimmed(destinationFolder)
    }

    public func run() throws -> Report {
        let levels = Array(Set(self.levels)).sorted()
        guard !levels.isEmpty, levels.allSatisfy({ $0 == 2 || $0 == 3 }) else {
            throw PPError(.usage, entry: "--levels", "must be 2, 3 or 2,3; got \(self.levels.map(String.init).joined(separator: ","))")
        }
        let sourceInfo = try Self.folderInfo(sourceFolder, role: "source folder")
        try Self.prepareDestination(destinationFolder)
        var destinationInfo = stat()
        _ = stat(destinationFolder, &destinationInfo)
        guard destinationInfo.st_dev != sourceInfo.st_dev || destinationInfo.st_ino != sourceInfo.st_ino else {
            throw PPError(.usage, file: destinationFolder, "the destination must differ from the source folder")
        }
        let manifestPath = "\(destinationFolder)/\(Self.manifestName)"
        let previous = try Self.previousManifest(at: manifestPath)
        let dataSHA256 = try dataPath.map { try SHA256.hashFile($0) }

        // The destination may sit inside the source folder; it is not a source.
        let names = Self.listing(sourceFolder).filter { name in
            var st = stat()
            return !(stat("\(sourceFolder)/\(name)", &st) == 0 && st.st_dev == destinationInfo.st_dev && st.st_ino == destinationInfo.st_ino)
        }
        progress("migrate: \(names.count) entr\(names.count == 1 ? "y" : "ies") in \(sourceFolder) -> \(destinationFolder), levels \(levels.map(String.init).joined(separator: ","))")

        let candidates = names.map { ($0, CheckpointCandidate.classify("\(sourceFolder)/\($0)")) }
        let outputStems = Self.outputStems(for: candidates.compactMap { name, kind in
            if case .checkpoint = kind { return name } else { return nil }
        })
        var entries: [Entry] = []
        for (index, (name, kind)) in candidates.enumerated() {
            let counter = "[\(index + 1)/\(candidates.count)] \(name)"
            guard case .checkpoint = kind else {
                if case .notCheckpoint(let why) = kind {
                    entries.append(Entry(source: name, status: .skipped, reason: "not a checkpoint (\(why))"))
                    progress("\(counter): skipped, not a checkpoint (\(why))")
                }
                continue
            }
            entries += migrateSource(name, stem: outputStems[name]!, levels: levels, previous: previous,
                                     dataSHA256: dataSHA256, counter: counter)
        }

        let report = Self.report(entries, settings: settingsJSON(levels: levels, dataSHA256: dataSHA256))
        try FileOutput.writeFile(manifestPath, bytes: Array((JSON.serialize(report.json, pretty: true) + "\n").utf8))
        progress("migrate: \(report.count(.converted)) converted, \(report.count(.skipped)) skipped, \(report.count(.failed)) failed; manifest \(manifestPath)")
        return report
    }

    // MARK: - One source

    private func migrateSource(_ name: String, stem: String, levels: [Int], previous: [String: JSONValue],
                               dataSHA256: String?, counter: String) -> [Entry] {
        let path = "\(sourceFolder)/\(name)"
        func failure(_ error: Error, sha256: String? = nil, level: Int? = nil, output: String? = nil) -> Entry {
            let line = Self.errorLine(error, file: path)
            progress("\(counter)\(output.map { " -> \($0)" } ?? ""): failed")
            reportError(line)
            // The manifest names files relative to the two folders, so where they are does not change it.
            let relative = line.replacing("\(sourceFolder)/", with: "").replacing("\(destinationFolder)/", with: "")
            return Entry(source: name, sourceSHA256: sha256, level: level, output: output, status: .failed, error: relative)
        }

        let source: LoadedCheckpoint, sha256: String
        do {
            source = try CheckpointLoader.load(path)
            sha256 = try CheckpointLoader.fileSHA256(path) ?? Self.folderSHA256(path)
        } catch {
            return [failure(error)]
        }
        switch source.layout {
        case .ditSit: break
        case .ppflow(let sourceLevels):
            progress("\(counter): skipped, already a PPFlow-\(sourceLevels) model")
            return [Entry(source: name, sourceSHA256: sha256, status: .skipped, reason: "already a PPFlow-\(sourceLevels) model")]
        case .unknown(let why):
            progress("\(counter): skipped, not a DiT/SiT model (\(why))")
            return [Entry(source: name, sourceSHA256: sha256, status: .skipped, reason: "not a DiT/SiT model (\(why))")]
        }
        let isFolder = Self.isFolder(path)
        // --objective and --heads fill gaps: a folder may mix DiT and SiT, and what a source's own
        // metadata says wins (from-dit would refuse a flag that contradicts it).
        var sourceOptions = options
        if source.objective != .unknown { sourceOptions.objective = nil }
        if source.numHeads != nil { sourceOptions.heads = nil }

        var entries: [Entry] = []
        for level in levels {
            let output = "\(stem)-ppf\(level)"
            let outputPath = "\(destinationFolder)/\(output)"
            var levelOptions = sourceOptions
            levelOptions.levels = level
            do {
                func job(_ mode: FromDiTJob.Mode) throws -> FromDiTJob {
                    var job = FromDiTJob(sourcePath: path, options: levelOptions)
                    job.preloaded = (source, isFolder ? nil : sha256)
                    job.output = outputPath
                    job.format = .native
                    job.verify = verify
                    job.mode = mode
                    // existingOutput() below refused anything but the toolkit's own native folder.
                    job.force = true
                    job.log = { _ in }
                    if let dataPath {
                        let config = try ModelLoader.configuration(of: source, heads: levelOptions.heads)
                        job.verificationData = try VerificationData.load(dataPath, channels: config.inChannels, size: config.inputSize)
                    }
                    return job
                }
                switch try Self.existingOutput(at: outputPath) {
                case .foreign(let what):
                    throw PPError(.badInput, file: outputPath, "\(what), not written by ppconvert; not replacing it (move it away or choose another destination)")
                case .toolkit(let config, let modelSHA256):
                    // A folder source has no file hash in its provenance; the previous manifest recorded the tree's.
                    let earlier = previous["\(name)\u{0}\(level)"]
                    let recordedSource = isFolder ? earlier?["source_sha256"]?.stringValue : config["provenance"]?["source"]?["sha256"]?.stringValue
                    if let stale = Self.staleness(of: config, modelSHA256: modelSHA256, recordedSourceSHA256: recordedSource,
                                                  sourceSHA256: sha256, options: levelOptions, dataSHA256: dataSHA256) {
                        progress("\(counter) -> \(output): converting again (\(stale))")
                    } else {
                        // The previous run's numbers stay valid for the same source and output bytes.
                        var verification = earlier.flatMap { e -> JSONValue? in
                            e["output_sha256"]?.stringValue == modelSHA256 && e["source_sha256"]?.stringValue == sha256 ? e["verification"] : nil
                        }.flatMap { $0.isNull ? nil : $0 }
                        var upToDate = true
                        if verify && verification == nil {
                            // No numbers recorded (no manifest, or a run with --no-verify): verify a fresh
                            // conversion in memory and compare it with the output byte for byte; write nothing.
                            let check = try job(.check).run()
                            upToDate = check.exitCode == 0
                            verification = check.report["verification"]
                            if !upToDate { progress("\(counter) -> \(output): converting again (differs from a fresh conversion)") }
                        }
                        if upToDate {
                            entries.append(Entry(source: name, sourceSHA256: sha256, level: level, output: output, outputSHA256: modelSHA256,
                                                 status: .skipped, reason: "already converted from this source with these options",
                                                 verification: verification))
                            progress("\(counter) -> \(output): skipped, already converted from this source (sha256 \(sha256.prefix(12)))")
                            continue
                        }
                    }
                case .absent:
                    break
                }
                let outcome = try job(.write).run()
                let warnings = outcome.report["warnings"]?.arrayValue?.compactMap(\.stringValue) ?? []
                for warning in warnings { progress("  warning: \(name): \(warning)") }
                guard outcome.exitCode == 0 else {
                    throw PPError(.mismatch, file: path, "level \(level): the finest level does not reproduce the source (\(Self.finestError(outcome.report["verification"]))); nothing written")
                }
                entries.append(Entry(source: name, sourceSHA256: sha256, level: level, output: output,
                                     outputSHA256: outcome.report["output_sha256"]?.stringValue, status: .converted,
                                     verification: outcome.report["verification"], warnings: warnings))
                progress("\(counter) -> \(output): converted\(verify ? ", finest level \(Self.finestError(outcome.report["verification"]))" : " (not verified)")")
            } catch {
                entries.append(failure(error, sha256: sha256, level: level, output: output))
            }
        }
        return entries
    }

    // MARK: - What is already in the destination

    enum ExistingOutput {
        case absent
        /// A native folder holding exactly what the toolkit writes: config.json and model.safetensors.
        case toolkit(config: JSONValue, modelSHA256: String)
        case foreign(String)
    }

    /// Only a folder the toolkit wrote (config.json says ppflow-native, nothing else inside) may be replaced.
    static func existingOutput(at path: String) throws -> ExistingOutput {
        var st = stat()
        guard lstat(path, &st) == 0 else { return .absent }
        guard (st.st_mode & S_IFMT) == S_IFDIR else { return .foreign("exists and is not a folder") }
        let inside = listing(path, hidden: true)
        guard inside == [NativeCheckpoint.configFileName, NativeCheckpoint.weightsFileName] else {
            return .foreign("holds \(inside.isEmpty ? "nothing" : inside.joined(separator: ", "))")
        }
        guard let config = try? JSON.parse(file: "\(path)/\(NativeCheckpoint.configFileName)"),
              config["format"]?.stringValue == NativeCheckpoint.formatName else {
            return .foreign("its config.json is not a \(NativeCheckpoint.formatName) config")
        }
        return .toolkit(config: config, modelSHA256: try SHA256.hashFile("\(path)/\(NativeCheckpoint.weightsFileName)"))
    }

    /// Why an existing output does not stand for `sourceSHA256` converted with `options` (nil: it does).
    /// Compares what FromDiT records in config.json: the source hash, the tool, levels, thresholds,
    /// guidance, initializer (and its calibration data), objective and heads; and the weights' hash.
    static func staleness(of config: JSONValue, modelSHA256: String, recordedSourceSHA256: String?, sourceSHA256: String,
                          options: FromDiTOptions, dataSHA256: String?) -> String? {
        let provenance = config["provenance"], initializer = provenance?["initializer"]
        func numbers(_ value: JSONValue?) -> [Double]? { value?.arrayValue?.map { $0.doubleValue ?? .nan } }
        if config["model_sha256"]?.stringValue != modelSHA256 { return "model.safetensors does not match the sha256 in its config.json" }
        if recordedSourceSHA256 != sourceSHA256 { return "converted from other source bytes" }
        if provenance?["tool"]?.stringValue != FromDiT.toolVersion { return "written by another toolkit version" }
        if config["pyramid"]?["levels"]?.intValue != Int64(options.levels) { return "other levels" }
        if numbers(config["pyramid"]?["thresholds"]) != options.resolvedThresholds { return "other thresholds" }
        if numbers(config["guidance"]?["scales"]) != options.resolvedCFGScales { return "other guidance scales" }
        if initializer?["name"]?.stringValue != options.initializer.rawValue { return "another initializer" }
        if options.initializer == .calibrated, let calibration = options.calibration {
            if initializer?["data_sha256"]?.stringValue != dataSHA256 { return "other calibration data" }
            if initializer?["seed"]?.intValue != Int64(bitPattern: calibration.seed)
                || initializer?["ridge_factor"]?.doubleValue != calibration.ridgeFactor
                || (initializer?["detail_scale"]?.doubleValue ?? 0) != calibration.detailScale
                || (calibration.samples != nil && initializer?["calibration_samples"]?.intValue != Int64(calibration.samples!)) {
                return "other calibration settings"
            }
        }
        if let objective = options.objective, objective != .unknown {
            if config["objective"]?.stringValue != objective.rawValue { return "another objective" }
        } else if provenance?["objective_source"]?.stringValue == "--objective" {
            return "the objective came from --objective, which is not given now"
        }
        if let heads = options.heads, config["architecture"]?["num_heads"]?.intValue != Int64(heads) { return "other heads" }
        return nil
    }

    // MARK: - Folders, names, hashes

    /// Output stems: `<stem>` as from-dit names its default output; sources whose stems collide
    /// (`a.pt` and `a.safetensors`) keep their whole names, so no order decides who gets which.
    static func outputStems(for names: [String]) -> [String: String] {
        func stem(_ name: String) -> String { String(FromDiTJob.defaultOutput(for: name, levels: 0, format: .native).dropLast("-ppf0".count)) }
        var users: [String: Int] = [:]
        for name in names { users[stem(name), default: 0] += 1 }
        return Dictionary(uniqueKeysWithValues: names.map { ($0, users[stem($0)]! > 1 ? $0 : stem($0)) })
    }

    /// A folder's entries, sorted by bytes; dot-files (temporaries, hidden) only with `hidden`.
    static func listing(_ folder: String, hidden: Bool = false) -> [String] { FileOutput.entries(of: folder, hidden: hidden) }

    /// A folder source's identity: sha256 of its `sha256sum`-style listing (`<hash>  <relative path>` per
    /// file, sorted), so any changed, added or removed file changes it.
    static func folderSHA256(_ path: String) throws -> String {
        let tree = try DirectoryTree(path: path)
        var hasher = SHA256()
        for file in tree.files { hasher.update("\(try SHA256.hashFile("\(path)/\(file)"))  \(file)\n") }
        return hasher.finishHex()
    }

    static func folderInfo(_ path: String, role: String) throws -> stat {
        var st = stat()
        guard stat(path, &st) == 0 else { throw PPError(.missingInput, file: path, "no such \(role)") }
        guard (st.st_mode & S_IFMT) == S_IFDIR else { throw PPError(.usage, file: path, "the \(role) must be a folder") }
        return st
    }

    static func prepareDestination(_ path: String) throws {
        var st = stat()
        if stat(path, &st) != 0 {
            guard mkdir(path, 0o755) == 0 else {
                throw PPError(.io, file: path, "cannot create the destination folder: \(String(cString: strerror(errno)))")
            }
        } else if (st.st_mode & S_IFMT) != S_IFDIR {
            throw PPError(.usage, file: path, "the destination exists and is not a folder")
        }
    }

    /// The previous run's entries by "source NUL level"; a migration.json the toolkit did not write is
    /// not replaced.
    static func previousManifest(at path: String) throws -> [String: JSONValue] {
        var st = stat()
        guard lstat(path, &st) == 0 else { return [:] }
        guard (st.st_mode & S_IFMT) == S_IFREG, let manifest = try? JSON.parse(file: path),
              manifest["format"]?.stringValue == manifestFormat else {
            throw PPError(.usage, file: path, "exists and is not a manifest written by ppconvert migrate; not replacing it")
        }
        var byKey: [String: JSONValue] = [:]
        for entry in manifest["entries"]?.arrayValue ?? [] {
            guard let source = entry["source"]?.stringValue, let level = entry["level"]?.intValue else { continue }
            byKey["\(source)\u{0}\(level)"] = entry
        }
        return byKey
    }

    // MARK: - Report

    func settingsJSON(levels: [Int], dataSHA256: String?) -> JSONValue {
        .object(JSONObject([
            ("levels", .array(levels.map { .int(Int64($0)) })),
            ("initializer", .string(options.initializer.rawValue)),
            ("objective", options.objective.map { .string($0.rawValue) } ?? .null),
            ("heads", options.heads.map { .int(Int64($0)) } ?? .null),
            ("data_sha256", dataSHA256.map { .string($0) } ?? .null),
            ("detail_scale", options.calibration.map { .double($0.detailScale) } ?? .null),
            ("verify", .bool(verify)),
        ]))
    }

    static func report(_ entries: [Entry], settings: JSONValue) -> Report {
        var report = Report(entries: entries, json: .null)
        report.json = .object(JSONObject([
            ("format", .string(manifestFormat)),
            ("format_version", .int(manifestVersion)),
            ("tool", .string(FromDiT.toolVersion)),
            ("settings", settings),
            ("summary", .object(JSONObject([
                ("converted", .int(Int64(report.count(.converted)))),
                ("skipped", .int(Int64(report.count(.skipped)))),
                ("failed", .int(Int64(report.count(.failed)))),
            ]))),
            ("entries", .array(entries.map(\.json))),
        ]))
        return report
    }

    /// `file: entry: problem`, as every command prints its errors.
    static func errorLine(_ error: Error, file: String) -> String {
        if let error = error as? PPError { return error.inFile(file).description }
        return "\(file): \(error)"
    }

    /// "relative error 1e-08" of the finest level, from a verification report.
    static func finestError(_ verification: JSONValue?) -> String {
        guard let finest = verification?["levels"]?.arrayValue?.first(where: { $0["required"]?.boolValue == true }),
              let error = finest["relative_error"]?.doubleValue else { return "no verification" }
        return "relative error \(error)"
    }

    static func isFolder(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    static func trimmed(_ path: String) -> String {
        var p = path
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        return p
    }
}
