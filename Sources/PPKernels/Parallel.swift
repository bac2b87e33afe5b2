import COpenBLAS
import Dispatch

/// Thread count shared by OpenBLAS and the kernels' own parallel loops. Starts at OpenBLAS's own
/// default; process-wide (one setting for every model in the process).
public enum Parallel {
    nonisolated(unsafe) private static var threadCount = max(1, Int(openblas_get_num_threads()))

    /// Sets the OpenBLAS thread count and the width of the kernels' own parallel loops.
    public static func setThreads(_ count: Int) {
        threadCount = max(1, count)
        openblas_set_num_threads(Int32(threadCount))
    }

    public static var threads: Int { threadCount }

    /// Runs `body(range)` over `0..<count` split into at most `threads` contiguous chunks.
    /// Falls back to a plain call when the work is too small to be worth a thread hop.
    public static func forChunks(_ count: Int, minimumPerChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        guard count > 0 else { return }
        let chunks = min(threadCount, max(1, count / max(1, minimumPerChunk)))
        if chunks <= 1 { body(0..<count); return }
        let per = (count + chunks - 1) / chunks
        withoutActuallyEscaping(body) { escapable in
            // The kernels pass raw buffers they own for the duration of the call: safe to share.
            let task = UncheckedSendable(escapable)
            DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
                let start = chunk * per
                let end = min(count, start + per)
                if start < end { task.value(start..<end) }
            }
        }
    }

    /// Runs `body(i)` for every i in `0..<count`, spread over the threads (dynamic: one task per index).
    public static func forEach(_ count: Int, _ body: (Int) -> Void) {
        guard count > 0 else { return }
        if threadCount <= 1 || count == 1 { for i in 0..<count { body(i) }; return }
        withoutActuallyEscaping(body) { escapable in
            let task = UncheckedSendable(escapable)
            DispatchQueue.concurrentPerform(iterations: count) { task.value($0) }
        }
    }

    /// Runs `body` with OpenBLAS restricted to one thread, so that sgemm calls made from our own
    /// parallel loops do not fight over the OpenBLAS thread pool.
    public static func withSingleThreadedBLAS<R>(_ body: () -> R) -> R {
        if threadCount <= 1 { return body() }
        openblas_set_num_threads(1)
        defer { openblas_set_num_threads(Int32(threadCount)) }
        return body()
    }
}

/// Lets a closure over raw buffers cross into `concurrentPerform`; the caller guarantees that the
/// iterations write disjoint memory.
struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
