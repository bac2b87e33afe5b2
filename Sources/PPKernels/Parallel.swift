import COpenBLAS
import Dispatch

/// Thread count of OpenBLAS and the kernels' own parallel loops: OpenBLAS's own default (all cores, or
/// OPENBLAS_NUM_THREADS) unless the caller runs its work inside `withThreads`. A scoped (task-local) value,
/// not a process-wide setting: a command, a benchmark or a test says how many threads its own work uses.
public enum Parallel {
    @TaskLocal public static var threads: Int = max(1, Int(openblas_get_num_threads()))

    /// Runs `body` with `count` threads (nil: the enclosing scope's count). The kernels read the scoped
    /// value on the calling thread. OpenBLAS keeps its thread count in one process-wide variable, so it is
    /// set on entry and restored on exit; scopes may nest, but two threads running different counts at
    /// once would share OpenBLAS's setting.
    public static func withThreads<R>(_ count: Int?, _ body: () throws -> R) rethrows -> R {
        guard let count else { return try body() }
        let inner = max(1, count), outer = threads
        openblas_set_num_threads(Int32(inner))
        defer { openblas_set_num_threads(Int32(outer)) }
        return try $threads.withValue(inner, operation: body)
    }

    /// Runs `body(range)` over `0..<count` split into at most `threads` contiguous chunks.
    /// Falls back to a plain call when the work is too small to be worth a thread hop.
    public static func forChunks(_ count: Int, minimumPerChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        guard count > 0 else { return }
        let chunks = min(threads, max(1, count / max(1, minimumPerChunk)))
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
        if threads <= 1 || count == 1 { for i in 0..<count { body(i) }; return }
        withoutActuallyEscaping(body) { escapable in
            let task = UncheckedSendable(escapable)
            DispatchQueue.concurrentPerform(iterations: count) { task.value($0) }
        }
    }

    /// Runs `body` with OpenBLAS restricted to one thread, so that sgemm calls made from our own
    /// parallel loops do not fight over the OpenBLAS thread pool (restored to the scope's count after).
    public static func withSingleThreadedBLAS<R>(_ body: () -> R) -> R {
        let scoped = threads
        if scoped <= 1 { return body() }
        openblas_set_num_threads(1)
        defer { openblas_set_num_threads(Int32(scoped)) }
        return body()
    }
}

/// Lets a closure over raw buffers cross into `concurrentPerform`; the caller guarantees that the
/// iterations write disjoint memory.
struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
