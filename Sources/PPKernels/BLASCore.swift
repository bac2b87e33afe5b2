import COpenBLAS

#if canImport(Glibc)
import Glibc
#endif

/// Which OpenBLAS kernels this process runs, and a fix for CPUs the library does not recognise.
///
/// OpenBLAS picks its kernels once, when the library loads. Debian's build falls back to its generic
/// `Prescott` (SSE3) kernels on CPUs newer than it knows, which on an AVX-512 Xeon runs sgemm about 3.5x
/// slower than its SkylakeX kernels (measured: 19 vs 68 GFLOP/s). Its idle worker threads also spin
/// (sched_yield) for a long while after each product, stealing the second core from the elementwise
/// and attention loops that run between products; `OPENBLAS_THREAD_TIMEOUT=1` puts them to sleep at
/// once (SiT-B/2 forward on 2 cores: 173 -> 199 GFLOP/s). Both are read only when the library loads,
/// so the executables re-execute themselves once with them set. Values the user set are kept;
/// `PPFLOW_KEEP_BLAS_CORE=1` turns all of this off.
public enum BLASCore {
    public static var name: String { openblas_get_corename().map { String(cString: $0) } ?? "unknown" }

    /// The OpenBLAS core type this CPU's features support, if better than the generic fallback.
    static func preferredCore() -> String? {
        guard let flags = cpuFlags() else { return nil }
        if flags.isSuperset(of: ["avx512f", "avx512dq", "avx512bw", "avx512vl"]) { return "SkylakeX" }
        if flags.isSuperset(of: ["avx2", "fma"]) { return "Haswell" }
        return nil
    }

    static func supportsHaswellKernels() -> Bool { cpuFlags()?.isSuperset(of: ["avx2", "fma"]) ?? false }

    /// The `flags` line of /proc/cpuinfo (nil when it cannot be read).
    static func cpuFlags() -> Set<String>? {
        guard let file = fopen("/proc/cpuinfo", "r") else { return nil }
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 1 << 16)
        while fgets(&line, Int32(line.count), file) != nil {
            let text = line.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            guard text.hasPrefix("flags") else { continue }
            return Set(text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).map(String.init))
        }
        return nil
    }

    /// Call first thing in `main`: re-executes the process with a better core type when OpenBLAS fell
    /// back to Prescott on a CPU with AVX2 or AVX-512. Returns normally when nothing needs doing.
    ///
    /// `reproducible`: for results that must be the same bit for bit on every machine (the shipped digits
    /// classifier), run OpenBLAS's `Haswell` kernels on any CPU with AVX2 and FMA. Each kernel family sums
    /// in its own order, so a Zen 4 (`Cooperlake` kernels) trains a different file from a Zen 1 (`Zen`,
    /// which are the `Haswell` kernels) or an Intel AVX-512 CPU (`SkylakeX`).
    public static func useCPUKernels(reproducible: Bool = false) {
        guard getenv("PPFLOW_KEEP_BLAS_CORE") == nil else { return }
        var changed = false
        let current = name.lowercased()
        if reproducible, getenv("OPENBLAS_CORETYPE") == nil, !["haswell", "zen"].contains(current), supportsHaswellKernels() {
            setenv("OPENBLAS_CORETYPE", "Haswell", 1)
            changed = true
        } else if getenv("OPENBLAS_CORETYPE") == nil, current == "prescott", let core = preferredCore() {
            setenv("OPENBLAS_CORETYPE", core, 1)
            changed = true
        }
        if getenv("OPENBLAS_THREAD_TIMEOUT") == nil {
            setenv("OPENBLAS_THREAD_TIMEOUT", "1", 1)
            changed = true
        }
        guard changed else { return }
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        // exec failed: carry on with what the library chose.
    }
}
