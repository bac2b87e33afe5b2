import PPFileIO
import PPJSON
import PPKernels

#if canImport(Glibc)
// Glibc declares stdout and stderr as mutable C globals, which Swift 6 rejects as shared mutable state
// (swiftlang/swift#75601). The C runtime sets them before main and nothing assigns them afterwards, so
// this file reads them as the constants they are in practice.
@preconcurrency import Glibc
#endif

/// What the command-line front ends share: one-line errors with sysexits-style codes, progress that
/// is live on a terminal and plain lines otherwise, and JSON output.
public enum CLI {
    /// Runs `body`; a PPError becomes one line on stderr (`tool: file: entry: problem`) and its exit code.
    /// `threads`: the command's `--threads` (nil: all cores), the thread count of everything `body` runs.
    /// With `PPFLOW_FSYNC=1` in the environment every output is flushed to the disk before it is renamed
    /// into place (`FileOutput.flushToDisk`); the variable is read here, once.
    public static func run(_ tool: String, threads: Int? = nil, _ body: () throws -> Int32) -> Never {
        func finish(_ code: Int32) -> Never {
            fflush(stdout)
            PeakMemory.reportIfAsked()      // benchmarks of whole commands (PPBench's IOBenchmark)
            exit(code)
        }
        // Result lines reach a file or a pipe as they are printed, in order with the progress on stderr.
        setvbuf(stdout, nil, _IOLBF, 0)
        // The documentation test checks examples that need files a user brings (an XL checkpoint) for
        // parsing only: the arguments were parsed and validated when we get here.
        if let mode = getenv("PPFLOW_PARSE_ONLY"), String(cString: mode) == "1" {
            print("\(tool): arguments parsed (PPFLOW_PARSE_ONLY=1)")
            finish(0)
        }
        let flush = getenv("PPFLOW_FSYNC").map { String(cString: $0) != "0" } ?? false
        do {
            finish(try FileOutput.$flushToDisk.withValue(flush) { try Parallel.withThreads(threads, body) })
        } catch let error as PPError {
            fflush(stdout)
            printError("\(tool): \(error.description)")
            finish(error.exitCode)
        } catch {
            fflush(stdout)
            printError("\(tool): \(error)")
            finish(70)
        }
    }

    public static func printError(_ line: String) {
        fputs(line + "\n", stderr)
    }

    /// True when stderr is a terminal (progress then redraws one line).
    public static var isTerminal: Bool { isatty(2) != 0 }

    /// Writes a JSON report to a file (atomically) or to stdout for "-".
    public static func writeJSON(_ value: JSONValue, to destination: String) throws {
        let text = JSON.serialize(value, pretty: true) + "\n"
        if destination == "-" {
            print(text, terminator: "")
        } else {
            try FileOutput.writeFile(destination, bytes: Array(text.utf8))
        }
    }

    /// Seconds since an arbitrary start (monotonic).
    public static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }
}

/// Progress on stderr: one redrawn line on a terminal, a plain line every `plainEvery` seconds otherwise.
public final class Progress {
    private var label: String
    private var total: Int
    private let start = CLI.now()
    /// Off a terminal the first plain line comes after `plainEvery` seconds: short runs stay quiet
    /// (and an error stays the only line on stderr).
    private lazy var lastPrint = CLI.isTerminal ? -1e9 : start
    private let plainEvery: Double
    private let enabled: Bool

    public init(_ label: String, total: Int, enabled: Bool = true, plainEvery: Double = 10) {
        self.label = label
        self.total = total
        self.enabled = enabled
        self.plainEvery = plainEvery
    }

    /// For work whose total is known only as it goes: updates label and total too.
    public func update(_ done: Int, of total: Int, label: String) {
        self.label = label
        self.total = total
        update(done)
    }

    public func update(_ done: Int, detail: String = "") {
        guard enabled else { return }
        let now = CLI.now()
        let elapsed = now - start
        let interval = CLI.isTerminal ? 0.1 : plainEvery
        guard now - lastPrint >= interval || (done == total && (CLI.isTerminal || now - start >= plainEvery)) else { return }
        lastPrint = now
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let eta = rate > 0 ? Double(total - done) / rate : 0
        let line = "\(label) \(done)/\(total) \(Format.fixed(elapsed, 1))s elapsed, ETA \(Format.fixed(eta, 1))s\(detail.isEmpty ? "" : "  " + detail)"
        if CLI.isTerminal {
            fputs("\r\u{1B}[K" + line + (done == total ? "\n" : ""), stderr)
        } else {
            fputs(line + "\n", stderr)
        }
    }
}

/// Number formatting without Foundation.
public enum Format {
    public static func fixed(_ value: Double, _ digits: Int) -> String {
        guard value.isFinite else { return "\(value)" }
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let rounded = (abs(value) * scale).rounded()
        let integer = Int(rounded / scale)
        let fraction = Int(rounded - Double(integer) * scale)
        var text = "\(value < 0 && rounded != 0 ? "-" : "")\(integer)"
        if digits > 0 {
            let f = String(fraction)
            text += "." + String(repeating: "0", count: digits - f.count) + f
        }
        return text
    }

    /// 1.5e-07 style for small errors.
    public static func scientific(_ value: Double, _ digits: Int = 2) -> String {
        guard value.isFinite, value != 0 else { return value == 0 ? "0" : "\(value)" }
        var exponent = 0
        var mantissa = abs(value)
        while mantissa >= 10 { mantissa /= 10; exponent += 1 }
        while mantissa < 1 { mantissa *= 10; exponent -= 1 }
        return "\(value < 0 ? "-" : "")\(fixed(mantissa, digits))e\(exponent < 0 ? "-" : "+")\(abs(exponent) < 10 ? "0" : "")\(abs(exponent))"
    }

    public static func bytes(_ count: Int) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(count)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
        return unit == 0 ? "\(count) B" : "\(fixed(value, 1)) \(units[unit])"
    }
}

extension CLI {
    /// "1,3.5" -> [1, 3.5]; a usage error naming the flag otherwise.
    public static func numbers<T: LosslessStringConvertible>(_ text: String, flag: String, as: T.Type = T.self) throws -> [T] {
        try text.split(separator: ",").map { part in
            let trimmed = part.drop { $0 == " " }
            guard let value = T(String(trimmed)) else {
                throw PPError(.usage, entry: flag, "'\(text)' is not a comma-separated list of \(T.self == Int32.self || T.self == Int.self ? "integers" : "numbers")")
            }
            return value
        }
    }
}
