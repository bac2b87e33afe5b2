import COpenBLAS

#if canImport(Glibc)
import Glibc
#endif

/// Which OpenBLAS kernels this process runs, and a fix for CPUs the library does not recognise.
///
/// OpenBLAS picks its kernels once, when the library loads. Debian's build falls back to its generic
/// `Prescott` (SSE3) kernels on CPUs newer than it knows, which on an AVX-512 Xeon runs sgemm about 3.5x
/// slower than its SkylakeX kernels (measured: 19 vs 68 GFLOP/s). Since the choice cannot change after
/// loading, the executables re-execute themselves once with `OPENBLAS_CORETYPE` set from the CPU's own
/// feature flags. `OPENBLAS_CORETYPE` set by the user, or `PPFLOW_KEEP_BLAS_CORE=1`, turns this off.
public enum BLASCore {
    public static var name: String { openblas_get_corename().map { String(cString: $0) } ?? "unknown" }

    /// The OpenBLAS core type this CPU's features support, if better than the generic fallback.
    static func preferredCore() -> String? {
        guard let file = fopen("/proc/cpuinfo", "r") else { return nil }
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 1 << 16)
        while fgets(&line, Int32(line.count), file) != nil {
            let text = String(cString: line)
            guard text.hasPrefix("flags") else { continue }
            let flags = Set(text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).map(String.init))
            if flags.isSuperset(of: ["avx512f", "avx512dq", "avx512bw", "avx512vl"]) { return "SkylakeX" }
            if flags.isSuperset(of: ["avx2", "fma"]) { return "Haswell" }
            return nil
        }
        return nil
    }

    /// Call first thing in `main`: re-executes the process with a better core type when OpenBLAS fell
    /// back to Prescott on a CPU with AVX2 or AVX-512. Returns normally when nothing needs doing.
    public static func useCPUKernels() {
        guard getenv("OPENBLAS_CORETYPE") == nil, getenv("PPFLOW_KEEP_BLAS_CORE") == nil,
              name.lowercased() == "prescott", let core = preferredCore() else { return }
        setenv("OPENBLAS_CORETYPE", core, 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        // exec failed: carry on with the generic kernels.
    }
}
