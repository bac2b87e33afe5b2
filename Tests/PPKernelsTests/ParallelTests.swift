import COpenBLAS
import PPKernels
import XCTest

final class ParallelTests: XCTestCase {
    /// A thread count holds inside its scope only (nested scopes too), and OpenBLAS's process-wide count
    /// follows it on entry and comes back on exit.
    func testThreadCountIsScoped() {
        let outer = Parallel.threads
        Parallel.withThreads(1) {
            XCTAssertEqual(Parallel.threads, 1)
            XCTAssertEqual(openblas_get_num_threads(), 1)
            Parallel.withThreads(2) {
                XCTAssertEqual(Parallel.threads, 2)
                XCTAssertEqual(openblas_get_num_threads(), 2)
            }
            XCTAssertEqual(Parallel.threads, 1)
            XCTAssertEqual(openblas_get_num_threads(), 1)
            Parallel.withThreads(nil) { XCTAssertEqual(Parallel.threads, 1) }  // no --threads: the enclosing count
        }
        XCTAssertEqual(Parallel.threads, outer)
        XCTAssertEqual(Int(openblas_get_num_threads()), outer)
    }
}
