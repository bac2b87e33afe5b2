#if canImport(Glibc)
import Glibc
#endif

/// Peak resident memory of this process, for benchmarks.
public enum PeakMemory {
    /// Environment variable naming a file into which a command writes its own peak resident bytes when it
    /// ends. A parent cannot read it reliably: after exit /proc/PID/status has no VmHWM, and the rusage
    /// maxrss of a posix_spawn (vfork) child includes the parent's high-water mark from before exec.
    public static let reportFileVariable = "PPFLOW_PEAK_RSS_FILE"

    /// VmHWM from /proc/self/status, in bytes; 0 when unavailable.
    public static func residentHighWaterMark() -> Int {
        guard let file = fopen("/proc/self/status", "r") else { return 0 }
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 256)
        while fgets(&line, Int32(line.count), file) != nil {
            let text = line.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            if text.hasPrefix("VmHWM:") { return (Int(text.filter(\.isNumber)) ?? 0) * 1024 }   // reported in kB
        }
        return 0
    }

    /// Writes the high-water mark (decimal bytes) to the file named by `reportFileVariable`, if set.
    public static func reportIfAsked() {
        guard let path = getenv(reportFileVariable), let file = fopen(path, "w") else { return }
        fputs("\(residentHighWaterMark())\n", file)
        fclose(file)
    }
}
