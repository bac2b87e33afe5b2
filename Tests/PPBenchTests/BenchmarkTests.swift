import PPBench
import PPModel
import PPTestSupport
import XCTest

#if canImport(Glibc)
import Glibc
#endif

final class BenchmarkTests: XCTestCase {
    /// The forward benchmark runs and reports finite positive rates over the architecture's FLOP count
    /// (small sizes; no timing is asserted; the real measurement is `ppsample bench-forward`).
    func testForwardBenchmarkReports() {
        let small = ModelConfig(inChannels: 4, inputSize: 8, patchSize: 2, hiddenSize: 32, depth: 2, numHeads: 4, numClasses: 10)
        let report = ForwardBenchmark.run(threads: 2, sgemmSize: 64, config: small, batch: 2, repeats: 1)
        XCTAssert(report.sgemmGFLOPS.isFinite && report.sgemmGFLOPS > 0, "\(report)")
        XCTAssert(report.forwardGFLOPS.isFinite && report.forwardGFLOPS > 0, "\(report)")
        XCTAssertEqual(report.forwardFLOPs, small.forwardFLOPs(level: 0, batch: 2))
    }

    /// bench-io's child measurement: the toolkit's command reports its own peak RSS, which excludes the
    /// parent's memory (here 256 MiB touched before the spawn); other programs report nothing.
    func testChildPeakMemoryIsTheChildsOwn() throws {
        let ballast = UnsafeMutableRawPointer.allocate(byteCount: 256 << 20, alignment: 4096)
        defer { ballast.deallocate() }
        memset(ballast, 1, 256 << 20)
        let child = try IOBenchmark.timeChild(["\(Binaries.folder)/ppconvert", "inspect", Paths.digitsZip])
        XCTAssertGreaterThan(child.peakResidentBytes, 1 << 20)
        XCTAssertLessThan(child.peakResidentBytes, 200 << 20)
        XCTAssertEqual(try IOBenchmark.timeChild(["/bin/true"]).peakResidentBytes, 0)
    }
}
