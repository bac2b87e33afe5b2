import Foundation
import PPFileIO
import PPJSON
import PPKernels
import PPSafetensors
import PPTensor
import PPTestSupport
import XCTest
@testable import PPEval

final class FrechetDistanceTests: XCTestCase {
    func testEigenDecompositionRebuildsTheMatrix() throws {
        let n = 5
        var random = SeededRandom(seed: 3)
        let m = (0..<(n * n)).map { _ in random.normal() }
        var s = [Double](repeating: 0, count: n * n)              // [n, n] = m·mᵀ, symmetric
        for i in 0..<n { for j in 0..<n { for k in 0..<n { s[i * n + j] += m[i * n + k] * m[j * n + k] } } }
        let (values, vectors) = try XCTUnwrap(SymmetricEigen.decompose(s, n: n))
        XCTAssertEqual(values, values.sorted())
        var rebuilt = [Double](repeating: 0, count: n * n)
        for j in 0..<n { for a in 0..<n { for b in 0..<n { rebuilt[a * n + b] += values[j] * vectors[j * n + a] * vectors[j * n + b] } } }
        assertClose(rebuilt, s, tolerance: 1e-12, "V·diag(λ)·Vᵀ")
        let root = try XCTUnwrap(SymmetricEigen.squareRoot(s, n: n))
        var square = [Double](repeating: 0, count: n * n)
        for i in 0..<n { for j in 0..<n { for k in 0..<n { square[i * n + j] += root[i * n + k] * root[k * n + j] } } }
        assertClose(square, s, tolerance: 1e-12, "sqrt(S)²")
    }

    func testIdenticalFeatureSetsAreAtDistanceZero() throws {
        var random = SeededRandom(seed: 11)
        let (rows, dim) = (300, 24)
        let features = (0..<(rows * dim)).map { i in Float(random.normal()) * Float(1 + i % dim) }  // [rows, dim]
        let stats = FeatureStatistics(features: features, count: rows, dim: dim)
        let fd = try FrechetDistance.distance(stats, stats)
        let trace = (0..<dim).reduce(0.0) { $0 + stats.covariance[$1 * dim + $1] }
        XCTAssertLessThan(abs(fd), 1e-10 * trace, "FD(a, a) = \(fd)")
    }

    /// scripts/fd-reference.py: the same features through pytorch-fid's formula (scipy's sqrtm).
    func testMatchesScipyOnFixedFeatures() throws {
        let reference = try JSON.parse(file: Paths.fixture("fd/reference.json"))
        let cases = try XCTUnwrap(reference["cases"]?.arrayValue)
        XCTAssertEqual(cases.count, 2)
        for c in cases {
            let dim = Int(try XCTUnwrap(c["dim"]?.intValue))
            func stats(_ key: String) throws -> FeatureStatistics {
                let values = try XCTUnwrap(c[key]?.arrayValue).map { $0.doubleValue! }
                return FeatureStatistics(features: values, count: Int(try XCTUnwrap(c["\(key)_rows"]?.intValue)), dim: dim)
            }
            let expected = try XCTUnwrap(c["fd"]?.doubleValue)
            let fd = try FrechetDistance.distance(try stats("a"), try stats("b"))
            XCTAssertLessThanOrEqual(abs(fd - expected), 1e-6 * abs(expected), "\(c["name"]!): \(fd) vs scipy \(expected)")
            XCTAssertLessThan(abs(try FrechetDistance.distance(try stats("a"), try stats("a"))), 1e-9)
        }
    }
}

final class DigitsClassifierTests: XCTestCase {
    static let data = "\(Paths.repository)/examples/digits/digits.safetensors"
    static let shipped = "\(Paths.repository)/examples/digits/digits-classifier.safetensors"

    /// The hand-written backward against central differences (float32, a tiny net).
    func testGradientMatchesFiniteDifferences() {
        var model = DigitsClassifier(inputShape: [1, 2, 3], hidden: [5, 4], classes: 3)
        model.initialize(seed: 2)
        var random = SeededRandom(seed: 4)
        for i in model.parameters.indices { model.parameters[i] += Float(random.normal()) * 0.1 }  // non-zero biases
        let batch = 4
        let x = (0..<(batch * 6)).map { _ in Float(random.normal()) }
        let labels = [0, 2, 1, 2]
        let (_, gradient) = model.lossAndGradient(x, labels: labels, batch: batch)
        var numeric = [Float](repeating: 0, count: gradient.count)
        let h: Float = 1e-2
        for i in model.parameters.indices {
            var plus = model, minus = model
            plus.parameters[i] += h; minus.parameters[i] -= h
            numeric[i] = (plus.lossAndGradient(x, labels: labels, batch: batch).loss - minus.lossAndGradient(x, labels: labels, batch: batch).loss) / (2 * h)
        }
        assertClose(gradient, numeric, tolerance: 2e-2, "dLoss/dParameters")
    }

    /// `ppsample train-classifier` with its defaults writes the shipped file bit for bit, on any CPU: the
    /// command runs OpenBLAS's Haswell kernels (this test process runs whatever OpenBLAS picked here, so
    /// in-process training matches only on machines that pick those kernels themselves).
    func testTrainingReproducesTheShippedClassifier() throws {
        let scratch = Paths.scratch(self)
        let out = scratch + "/classifier.safetensors"
        // The command picks its kernels itself unless told otherwise: no override reaches it from here.
        unsetenv("OPENBLAS_CORETYPE"); unsetenv("PPFLOW_KEEP_BLAS_CORE")
        let run = try Binaries.run("ppsample", ["train-classifier", "--data", Self.data, "--out", out], scratch: scratch)
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertEqual(try SHA256.hashFile(out), try SHA256.hashFile(Self.shipped), run.stdout)
        let written = try DigitsClassifier.read(out)
        XCTAssertEqual(written.widths, [256, 128, 64, 10])
        let accuracy = try XCTUnwrap(written.metadata.first { $0.0 == "held_out_accuracy" }.flatMap { Double($0.1) })
        XCTAssertGreaterThan(accuracy, 0.9)
    }
}

final class EvalTests: XCTestCase {
    static let data = DigitsClassifierTests.data
    static let classifier = DigitsClassifierTests.shipped

    func samplesFile(shape: [Int], labels: [Int64], in folder: String) throws -> String {
        let path = folder + "/samples.safetensors"
        var random = SeededRandom(seed: 1)
        try SafetensorsWriter.write(TensorDict([("samples", TensorView(floats: random.normals(shape.reduce(1, *)), shape: shape)),
                                                ("labels", TensorView(int64s: labels, shape: [labels.count]))]), metadata: [], to: path)
        return path
    }

    func testRealDataScoresItsFloor() throws {
        let folder = Paths.scratch(self)
        let all = try LabeledLatents.read(Self.data)
        let half = all.subset(Array(0..<600))
        let path = folder + "/samples.safetensors"
        try SafetensorsWriter.write(TensorDict([("samples", TensorView(floats: half.values, shape: half.shape)),
                                                ("labels", TensorView(int64s: half.labels.map(Int64.init), shape: [half.count]))]), metadata: [], to: path)
        let report = try EvalJob(input: path, dataPath: Self.data, classifierPath: Self.classifier).run()
        XCTAssertEqual(report.kind, "samples")
        XCTAssertLessThan(report.runs[0].scores.frechetDistance, 5)
        XCTAssertGreaterThan(try XCTUnwrap(report.runs[0].scores.accuracy), 0.95)
    }

    func testRefusesSamplesOfAnotherShape() throws {
        let folder = Paths.scratch(self)
        let path = try samplesFile(shape: [4, 1, 8, 8], labels: [0, 1, 2, 3], in: folder)
        assertPPError(.badInput, mentions: [path, "1x8x8", "1x16x16"]) {
            try EvalJob(input: path, dataPath: Self.data, classifierPath: Self.classifier).run()
        }
    }

    func testRefusesLabelsBeyondTheClassifiersClasses() throws {
        let folder = Paths.scratch(self)
        let path = try samplesFile(shape: [3, 1, 16, 16], labels: [0, 11, 2], in: folder)
        assertPPError(.badInput, mentions: [path, "label 11", "10 classes"]) {
            try EvalJob(input: path, dataPath: Self.data, classifierPath: Self.classifier).run()
        }
    }

    func testRefusesAModelWithOtherClassesOrImages() throws {
        let folder = Paths.scratch(self)
        // A classifier for 4x4 images of 5 classes: the digits SiT (16x16, 10 classes) does not fit it.
        var small = DigitsClassifier(inputShape: [1, 16, 16], hidden: [8], classes: 5)
        small.initialize(seed: 0)
        let smallPath = folder + "/five.safetensors"
        try small.write(to: smallPath)
        let fiveClassData = folder + "/five-data.safetensors"
        var random = SeededRandom(seed: 5)
        try SafetensorsWriter.write(TensorDict([("latents", TensorView(floats: random.normals(10 * 256), shape: [10, 1, 16, 16])),
                                                ("labels", TensorView(int64s: (0..<10).map { Int64($0 % 5) }, shape: [10]))]), metadata: [], to: fiveClassData)
        assertPPError(.badInput, mentions: [Paths.digitsZip, "10 classes", "5"]) {
            try EvalJob(input: Paths.digitsZip, dataPath: fiveClassData, classifierPath: smallPath).run()
        }
        // Real data the classifier cannot read.
        assertPPError(.badInput, mentions: [Self.data, "label 5", "5 classes"]) {
            try EvalJob(input: Paths.digitsZip, dataPath: Self.data, classifierPath: smallPath).run()
        }
        // Not a classifier at all.
        assertPPError(.badInput, mentions: ["not a digits classifier"]) {
            try EvalJob(input: Paths.digitsZip, dataPath: Self.data, classifierPath: Self.data).run()
        }
    }

    func testSamplesAModelAndCountsItsCost() throws {
        var job = EvalJob(input: Paths.digitsZip, dataPath: Self.data, classifierPath: Self.classifier)
        job.sampling.count = 20
        job.sampling.points = 5
        job.seeds = [0, 1]
        let report = try job.run()
        XCTAssertEqual(report.runs.count, 2)
        let cost = try XCTUnwrap(report.runs[0].cost)
        XCTAssertEqual(cost.evaluationsPerImage, 4)          // 4 Euler steps, no guidance
        XCTAssertGreaterThan(cost.flopsPerImage, 0)
        XCTAssertNotEqual(report.runs[0].scores.frechetDistance, report.runs[1].scores.frechetDistance)
    }

    /// The command: a mismatched samples file is one line on stderr and exit 65.
    func testCommandRefusesMismatchedSamplesWithOneLineAndExit65() throws {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        let binaries = FileOutput.directory(of: String(cString: Array(buffer[0..<max(n, 0)]) + [0]))
        let folder = Paths.scratch(self)
        let path = try samplesFile(shape: [4, 1, 8, 8], labels: [0, 1, 2, 3], in: folder)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "\(binaries)/ppsample")
        process.arguments = ["eval", path, "--data", Self.data, "--classifier", Self.classifier]
        let errors = Pipe()
        process.standardOutput = FileHandle.nullDevice; process.standardError = errors
        try process.run()
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 65, text)
        XCTAssertEqual(text.split(separator: "\n").count, 1, text)
        XCTAssertTrue(text.hasPrefix("ppsample eval: \(path): "), text)
    }
}
