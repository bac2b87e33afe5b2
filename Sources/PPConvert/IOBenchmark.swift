import PPCheckpoint
import PPJSON
import PPModel
import PPTensor
import PPTorchFormat

#if canImport(Glibc)
import Glibc
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
        public var ratio: Double { convert.best / max(copy.best, 1e-9) }

        public var json: JSONValue {
            func m(_ x: Measurement) -> JSONValue {
                .object(JSONObject([("seconds", .array(x.seconds.map { .double($0) })), ("best", .double(x.best)),
                                    ("peak_rss_bytes", .int(Int64(x.peakResidentBytes)))]))
            }
            return .object(JSONObject([
                ("checkpoint", .string(checkpoint)), ("bytes", .int(Int64(bytes))), ("parameters", .int(Int64(parameters))),
                ("cp", m(copy)), ("convert_to_native", m(convert)), ("ratio", .double(ratio)),
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

    /// Runs `arguments` as a child process; returns wall seconds and its peak resident memory.
    public static func timeChild(_ arguments: [String]) throws -> (seconds: Double, peakResidentBytes: Int) {
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let start = Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
        let spawned = posix_spawn(&pid, arguments[0], nil, nil, argv, environ)
        guard spawned == 0 else { throw PPError(.io, file: arguments[0], "cannot start: \(String(cString: strerror(spawned)))") }
        // Wait without reaping, read the child's own high-water mark (VmHWM restarts at exec; the
        // rusage maxrss of a vfork-spawned child would include this process's memory), then reap.
        var info = siginfo_t()
        _ = waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT)
        let peak = Self.vmHWM(Self.readProcFile("/proc/\(pid)/status"))
        var status: Int32 = 0
        var usage = rusage()
        guard wait4(pid, &status, 0, &usage) == pid else { throw PPError(.io, file: arguments[0], "wait failed") }
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let seconds = Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9 - start
        guard status == 0 else { throw PPError(.io, file: arguments[0], "exited with status \(status): \(arguments.joined(separator: " "))") }
        return (seconds, peak)
    }

    /// /proc files report size 0, so they are read, not mapped.
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

    /// "VmHWM:    123456 kB" -> bytes.
    static func vmHWM(_ status: String) -> Int {
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            let digits = line.filter { $0.isNumber }
            return (Int(String(digits)) ?? 0) * 1024
        }
        return 0
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
        // Warm the page cache once so both start from the same state.
        _ = try timeChild(["/bin/cp", source, "\(folder)/warm.pt"])
        unlink("\(folder)/warm.pt")
        for round in 1...repeats {
            let c = try timeChild(["/bin/cp", source, "\(folder)/copy.pt"])
            unlink("\(folder)/copy.pt")
            copy.seconds.append(c.seconds)
            copy.peakResidentBytes = max(copy.peakResidentBytes, c.peakResidentBytes)
            let v = try timeChild([converter, "convert", source, "\(folder)/native", "--format", "native", "--heads", "16"])
            FileOutput.removeTree("\(folder)/native")
            convert.seconds.append(v.seconds)
            convert.peakResidentBytes = max(convert.peakResidentBytes, v.peakResidentBytes)
            log("round \(round): cp \(c.seconds) s, convert \(v.seconds) s (peak RSS \(v.peakResidentBytes >> 20) MiB)")
        }
        return Report(checkpoint: source, bytes: bytes, parameters: parameters, copy: copy, convert: convert)
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
