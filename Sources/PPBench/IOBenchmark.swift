import PPCheckpoint
import PPFileIO
import PPJSON
import PPModel
import PPTensor
import PPTorchFormat

#if canImport(Glibc)
// Glibc declares environ as a mutable C global, which Swift 6 rejects as shared mutable state
// (swiftlang/swift#75601). It changes only in setenv, which the toolkit calls once, first thing in main
// (BLASCore.useCPUKernels) before any other thread runs, so reading it here races with nothing.
@preconcurrency import Glibc
#endif

/// `ppconvert bench-io`: convert an XL-size torch checkpoint to a native folder and compare the wall
/// time with `cp` of the same file, in the same run; report the converter's peak resident memory.
/// Both run as child processes so their time and memory are measured alike.
public enum IOBenchmark {
    public struct Measurement {
        public var label: String
        public var seconds: [Double]
        public var peakResidentBytes: Int
        public var best: Double { seconds.min() ?? 0 }
    }

    public struct Report {
        public var checkpoint: String
        public var bytes: Int
        public var parameters: Int
        public var copy: Measurement
        public var convert: Measurement
        /// `--no-source-hash`: the same conversion without hashing the source for the provenance.
        public var convertWithoutSourceHash: Measurement
        public var ratio: Double { convert.best / max(copy.best, 1e-9) }
        public var ratioWithoutSourceHash: Double { convertWithoutSourceHash.best / max(copy.best, 1e-9) }

        public var json: JSONValue {
            func m(_ x: Measurement) -> JSONValue {
                .object(JSONObject([("seconds", .array(x.seconds.map { .double($0) })), ("best", .double(x.best)),
                                    ("peak_rss_bytes", .int(Int64(x.peakResidentBytes)))]))
            }
            return .object(JSONObject([
                ("checkpoint", .string(checkpoint)), ("bytes", .int(Int64(bytes))), ("parameters", .int(Int64(parameters))),
                ("cp", m(copy)), ("convert_to_native", m(convert)), ("ratio", .double(ratio)),
                ("convert_to_native_no_source_hash", m(convertWithoutSourceHash)), ("ratio_no_source_hash", .double(ratioWithoutSourceHash)),
            ]))
        }
    }

    /// A SiT-XL/2-shaped state dict (675 M float32 parameters) of N(0, 0.02) weights, written with the
    /// project's own torch writer. Deterministic for a seed.
    public static func makeRandomCheckpoint(config: ModelConfig, path: String, seed: UInt64 = 0,
                                            progress: ((Int, Int) -> Void)? = nil) throws {
        var rng = SeededRandom(seed: seed)
        var tensors = TensorDict()
        let shapes = config.parameterShapes
        for (i, (name, shape)) in shapes.enumerated() {
            let count = TensorView.elementCount(shape) ?? 0
            if name.hasPrefix("pos_embed") {
                tensors[name] = TensorView(floats: ModelParameters.positionTable(config: config, level: config.levels - 1, latentSize: config.inputSize),
                                           shape: shape)
            } else {
                tensors[name] = TensorView(count: count, shape: shape) { values in
                    for k in 0..<count { values[k] = Float(rng.normal() * 0.02) }
                }
            }
            progress?(i + 1, shapes.count)
        }
        try TorchWriter.write(.stateDict(tensors), to: path, archiveName: CheckpointWriter.archiveName(for: path))
    }

    /// Runs `arguments` as a child process; returns wall seconds and, for the toolkit's own commands, their
    /// peak resident memory as they report it through `PeakMemory.reportFileVariable` (0 for others).
    public static func timeChild(_ arguments: [String]) throws -> (seconds: Double, peakResidentBytes: Int) {
        var pid: pid_t = 0
        let reportFile = "/tmp/ppflow-peak-rss-\(getpid())"
        unlink(reportFile)
        defer { unlink(reportFile) }
        let environment = (0...).lazy.map { environ[$0] }.prefix { $0 != nil }.map { String(cString: $0!) }
            .filter { !$0.hasPrefix(PeakMemory.reportFileVariable + "=") } + ["\(PeakMemory.reportFileVariable)=\(reportFile)"]
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
        defer { for p in argv + envp { free(p) } }
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let start = Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
        let spawned = posix_spawn(&pid, arguments[0], nil, nil, argv, envp)
        guard spawned == 0 else { throw PPError(.io, file: arguments[0], "cannot start: \(String(cString: strerror(spawned)))") }
        var status: Int32 = 0
        guard waitpid(pid, &status, 0) == pid else { throw PPError(.io, file: arguments[0], "wait failed") }
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let seconds = Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9 - start
        guard status == 0 else { throw PPError(.io, file: arguments[0], "exited with status \(status): \(arguments.joined(separator: " "))") }
        let peak = Int(readProcFile(reportFile).filter(\.isNumber)) ?? 0
        return (seconds, peak)
    }

    /// /proc files report size 0, so they are read, not mapped (also used for the small report file).
    static func readProcFile(_ path: String) -> String {
        guard let file = fopen(path, "r") else { return "" }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&buffer, 1, buffer.count, file)
            if n <= 0 { break }
            bytes += buffer[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    public static func run(folder: String, converter: String, repeats: Int = 3, log: (String) -> Void) throws -> Report {
        let config = ModelConfig(inChannels: 4, inputSize: 32, patchSize: 2, hiddenSize: 1152, depth: 28, numHeads: 16)
        let source = "\(folder)/sit-xl-2-random.pt"
        if (try? ByteStorage(mappingFile: source)) == nil {
            log("writing \(source) (SiT-XL/2 shape, random weights) ...")
            try makeRandomCheckpoint(config: config, path: source)
        }
        let bytes = try ByteStorage(mappingFile: source).count
        let parameters = config.parameterShapes.reduce(0) { $0 + (TensorView.elementCount($1.shape) ?? 0) }
        var copy = Measurement(label: "cp", seconds: [], peakResidentBytes: 0)
        var convert = Measurement(label: "ppconvert convert --format native", seconds: [], peakResidentBytes: 0)
        var bare = Measurement(label: "ppconvert convert --format native --no-source-hash", seconds: [], peakResidentBytes: 0)
        // Warm the page cache once so both start from the same state.
        _ = try timeChild(["/bin/cp", source, "\(folder)/warm.pt"])
        unlink("\(folder)/warm.pt")
        for round in 1...repeats {
            let c = try timeChild(["/bin/cp", source, "\(folder)/copy.pt"])
            unlink("\(folder)/copy.pt")
            copy.seconds.append(c.seconds)
            copy.peakResidentBytes = max(copy.peakResidentBytes, c.peakResidentBytes)
            let arguments = [converter, "convert", source, "\(folder)/native", "--format", "native", "--heads", "16", "--objective", "velocity"]
            let v = try timeChild(arguments)
            FileOutput.removeTree("\(folder)/native")
            convert.seconds.append(v.seconds)
            convert.peakResidentBytes = max(convert.peakResidentBytes, v.peakResidentBytes)
            let b = try timeChild(arguments + ["--no-source-hash"])
            FileOutput.removeTree("\(folder)/native")
            bare.seconds.append(b.seconds)
            bare.peakResidentBytes = max(bare.peakResidentBytes, b.peakResidentBytes)
            log("round \(round): cp \(c.seconds) s, convert \(v.seconds) s (peak RSS \(v.peakResidentBytes >> 20) MiB), without the source hash \(b.seconds) s")
        }
        return Report(checkpoint: source, bytes: bytes, parameters: parameters, copy: copy, convert: convert, convertWithoutSourceHash: bare)
    }
}

extension TensorView {
    /// A float32 tensor filled in place by `fill` (no intermediate array).
    init(count: Int, shape: [Int], fill: (UnsafeMutableBufferPointer<Float>) -> Void) {
        let storage = ByteStorage(count: count * 4, origin: "memory") { raw in
            fill(raw.bindMemory(to: Float.self))
        }
        self.init(dtype: .f32, shape: shape, storage: storage, byteOffset: 0)
    }
}
