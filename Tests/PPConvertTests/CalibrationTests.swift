import PPCheckpoint
import PPConvert
import PPKernels
import PPModel
import PPModelIO
import PPSafetensors
import PPTensor
import XCTest

#if canImport(Glibc)
import Glibc
#endif

final class CalibrationTests: XCTestCase {
    /// Calibration latents for the 8x8x4 fixture models: smooth images plus noise, with labels.
    func makeLatents(_ folder: String, count: Int = 24) throws -> String {
        var rng = SeededRandom(seed: 11)
        var latents = [Float](repeating: 0, count: count * 4 * 8 * 8)   // [N, 4, 8, 8]
        for n in 0..<count { for c in 0..<4 { for h in 0..<8 { for w in 0..<8 {
            latents[((n * 4 + c) * 8 + h) * 8 + w] = Float(sin(Double(h + 2 * c) * 0.7) * cos(Double(w + n) * 0.5)) + 0.1 * Float(rng.normal())
        } } } }
        let labels = (0..<count).map { Int64($0 % 10) }
        let path = "\(folder)/latents.safetensors"
        try SafetensorsWriter.write(TensorDict([("latents", TensorView(floats: latents, shape: [count, 4, 8, 8])),
                                                ("labels", TensorView(int64s: labels, shape: [count]))]), metadata: [], to: path)
        return path
    }

    func convert(levels: Int, initializer: InitializerKind, data: String?, detailScale: Double = 0) throws -> ConversionResult {
        var options = FromDiTOptions()
        options.levels = levels
        options.heads = 4
        options.objective = .velocity
        options.initializer = initializer
        if let data {
            var calibration = CalibratedInitializer.Options(dataPath: data)
            calibration.batch = 5           // several batches, the last one short
            calibration.detailScale = detailScale
            options.calibration = calibration
        }
        return try FromDiT.convert(try CheckpointLoader.load(Paths.fixture("sit.pt")), options: options, sourceSHA256: nil)
    }

    /// The written prediction rows solve the ridge normal equations: Aᵀ(Y − A·W) = λ·W.
    func testWrittenRowsSolveTheNormalEquations() throws {
        let folder = Paths.scratch(self)
        let data = try makeLatents(folder)
        for (levels, detailScale) in [(2, 0.0), (3, 0.0), (2, 0.5), (3, 0.5)] {
            let result = try convert(levels: levels, initializer: .calibrated, data: data, detailScale: detailScale)
            let report = try XCTUnwrap(result.calibration)
            XCTAssertEqual(report.fits.count, levels - 1)
            let source = try CheckpointLoader.load(Paths.fixture("sit.pt"))
            let sourceConfig = try ModelLoader.configuration(of: source, heads: 4)
            let sourceModel = Model(config: sourceConfig, parameters: try ModelParameters(config: sourceConfig, tensors: source.tensors))
            let model = Model(config: result.config, parameters: try ModelParameters(config: result.config, tensors: result.tensors))
            let loaded = try VerificationData.load(data, channels: 4, size: 8)
            var options = CalibratedInitializer.Options(dataPath: data)
            options.batch = 5
            let used = CalibratedInitializer.calibrationSamples(count: loaded.count, options: options)
            for fit in report.fits {
                let level = fit.level
                let factor = result.config.levelLayouts[level].channelFactor
                let levelChannels = 4 * factor, headChannels = 8 * factor, k = 4 * levelChannels, d = 64
                var ridge = RidgeRegression(features: d, outputs: k)
                var featureRows: [[Float]] = [], targetRows: [[Float]] = []
                CalibratedInitializer.forEachBatch(level: level, config: result.config, model: model, source: sourceModel,
                                                   data: loaded, used: used, options: options) { f, t, rows, _ in
                    f.withUnsafeBufferPointer { fp in t.withUnsafeBufferPointer { tp in ridge.accumulate(x: fp.baseAddress!, y: tp.baseAddress!, count: rows) } }
                    for r in 0..<rows { featureRows.append(Array(f[r * d ..< (r + 1) * d])); targetRows.append(Array(t[r * k ..< (r + 1) * k])) }
                }
                XCTAssertEqual(ridge.rows, fit.rows)
                let weight = result.tensors[fit.tensor + ".weight"]!.floats(), bias = result.tensors[fit.tensor + ".bias"]!.floats()
                // Gradient of the ridge objective at the written solution, per output column, in Double.
                var worst = 0.0, scale = 0.0
                for column in 0..<k {
                    let row = CalibratedInitializer.headRow(column, levelChannels: levelChannels, headChannels: headChannels)
                    let w = (0..<d).map { Double(weight[row * d + $0]) } + [Double(bias[row])]
                    var gradient = w.map { fit.lambda * $0 }                     // λ·W
                    for (f, t) in zip(featureRows, targetRows) {
                        let a = f.map(Double.init) + [1]
                        let residual = Double(t[column]) - zip(a, w).reduce(0) { $0 + $1.0 * $1.1 }
                        for i in 0...d { gradient[i] -= a[i] * residual }           // − Aᵀ(Y − A·W)
                    }
                    for i in 0...d {
                        worst = max(worst, abs(gradient[i]))
                        var column2 = 0.0
                        for (f, t) in zip(featureRows, targetRows) { column2 += abs((i < d ? Double(f[i]) : 1) * Double(t[column])) }
                        scale = max(scale, column2)
                    }
                }
                // Float32 storage of W limits how exactly the written rows can satisfy the equations.
                XCTAssertLessThanOrEqual(worst / scale, 1e-6, "levels \(levels), level \(level)")
                XCTAssertLessThan(fit.relativeResidualFitted, fit.relativeResidualRepeat, "the refit fits better than the repeat rule")
            }
        }
    }

    func testOnlyPredictionRowsChangeAndTheFinestLevelStillMatches() throws {
        let folder = Paths.scratch(self)
        let data = try makeLatents(folder)
        for levels in [2, 3] {
            let repeatRule = try convert(levels: levels, initializer: .repeat, data: nil)
            let calibrated = try convert(levels: levels, initializer: .calibrated, data: data)
            let changed = CheckpointDiff(calibrated.tensors, repeatRule.tensors).differing.map(\.name)
            let expected = (levels == 3 ? ["final_layer.linear1", "final_layer.linear2"] : ["final_layer.linear1"])
                .flatMap { [$0 + ".weight", $0 + ".bias"] }
            XCTAssertEqual(Set(changed), Set(expected))
            // Sigma rows untouched: in each sub-pixel group of Cout·f head channels, the second half.
            for name in expected where name.hasSuffix(".weight") {
                let factor = name.hasSuffix("linear1.weight") ? 4 : 2
                let a = calibrated.tensors[name]!.floats(), b = repeatRule.tensors[name]!.floats()
                for row in 0..<(4 * 8 * factor) where row % (8 * factor) >= 4 * factor {
                    XCTAssertEqual(Array(a[row * 64 ..< (row + 1) * 64]), Array(b[row * 64 ..< (row + 1) * 64]), "\(name) sigma row \(row)")
                }
            }
            let source = try CheckpointLoader.load(Paths.fixture("sit.pt"))
            let sourceConfig = try ModelLoader.configuration(of: source, heads: 4)
            let v = Verification(source: try ModelWeights(config: sourceConfig, tensors: source.tensors), ppflow: try ModelWeights(config: calibrated.config, tensors: calibrated.tensors))
            XCTAssertTrue(v.passed)
            XCTAssertEqual(v.levels.last!.relativeError, 0)
            // Provenance records the initializer, its data hash and the fits.
            let initializer = calibrated.nativeConfig["provenance"]?["initializer"]
            XCTAssertEqual(initializer?["name"]?.stringValue, "calibrated")
            XCTAssertEqual(initializer?["data_sha256"]?.stringValue, try CheckpointLoader.fileSHA256(data))
            XCTAssertEqual(initializer?["fits"]?.arrayValue?.count, levels - 1)
        }
    }

    /// The detail injection changes only the coarse patch embeddings (besides the refit rows), leaves the
    /// embedding of group-constant inputs (what the repeat rule sees) as it was, keeps the finest level
    /// exact, and lets the refit reach a lower residual than without it.
    func testDetailInjectionPassesOnlyTheDetailAndFitsBetter() throws {
        let folder = Paths.scratch(self)
        let data = try makeLatents(folder)
        for levels in [2, 3] {
            let repeatRule = try convert(levels: levels, initializer: .repeat, data: nil)
            let plain = try convert(levels: levels, initializer: .calibrated, data: data)
            let detailed = try convert(levels: levels, initializer: .calibrated, data: data, detailScale: 0.5)
            let changed = Set(CheckpointDiff(detailed.tensors, repeatRule.tensors).differing.map(\.name))
            let embeddings = levels == 3 ? ["x_embedder.proj1.weight", "x_embedder.proj2.weight"] : ["x_embedder.proj1.weight"]
            let heads = (levels == 3 ? ["final_layer.linear1", "final_layer.linear2"] : ["final_layer.linear1"]).flatMap { [$0 + ".weight", $0 + ".bias"] }
            XCTAssertEqual(changed, Set(embeddings + heads))
            for name in embeddings {
                let factor = name.contains("proj1") ? 4 : 2
                let inputs = factor * 4 * 2 * 2                            // [f·C, p, p] flattened
                let a = detailed.tensors[name]!.floats(), b = repeatRule.tensors[name]!.floats()   // [64, f·C·p·p]
                // A group-constant input (every sub-pixel of a group equal) is embedded exactly as before.
                var rng = SeededRandom(seed: 5)
                let perGroup = (0..<(4 * 2 * 2)).map { _ in Float(rng.normal()) }   // [C, p, p]
                var input = [Float](repeating: 0, count: inputs)
                for c in 0..<4 { for k in 0..<factor { for uv in 0..<4 { input[(c * factor + k) * 4 + uv] = perGroup[c * 4 + uv] } } }
                var largest = 0.0
                for row in 0..<64 {
                    var ea = 0.0, eb = 0.0
                    for m in 0..<inputs { ea += Double(a[row * inputs + m] * input[m]); eb += Double(b[row * inputs + m] * input[m]) }
                    largest = max(largest, abs(ea - eb))
                }
                XCTAssertLessThan(largest, 1e-5, name)
                XCTAssertGreaterThan(zip(a, b).map { abs($0 - $1) }.max()!, 1e-3, "\(name) carries detail")
            }
            let source = try CheckpointLoader.load(Paths.fixture("sit.pt"))
            let sourceConfig = try ModelLoader.configuration(of: source, heads: 4)
            let v = Verification(source: try ModelWeights(config: sourceConfig, tensors: source.tensors), ppflow: try ModelWeights(config: detailed.config, tensors: detailed.tensors))
            XCTAssertEqual(v.levels.last!.relativeError, 0)
            for (p, d) in zip(plain.calibration!.fits, detailed.calibration!.fits) {
                XCTAssertLessThan(d.relativeResidualFitted, p.relativeResidualFitted, "level \(p.level): the detail helps the fit")
            }
            XCTAssertEqual(detailed.nativeConfig["provenance"]?["initializer"]?["detail_scale"]?.doubleValue, 0.5)
        }
    }

    /// By default the calibration leaves a tenth of the data out, and a checkpoint's provenance is enough
    /// to find those rows again for `ppconvert verify`.
    func testHeldOutRowsAreTheOnesTheCalibrationDidNotUse() throws {
        let folder = Paths.scratch(self)
        let data = try makeLatents(folder, count: 24)
        let options = CalibratedInitializer.Options(dataPath: data)
        let used = CalibratedInitializer.calibrationSamples(count: 24, options: options)
        let heldOut = CalibratedInitializer.heldOutSamples(count: 24, options: options)
        XCTAssertEqual(used.count, 22)
        XCTAssertEqual(heldOut.count, 2)
        XCTAssertEqual(Set(used).union(heldOut), Set(0..<24))
        XCTAssertTrue(Set(used).isDisjoint(with: heldOut))
        var explicit = options
        explicit.samples = 100                                             // asking for more than there is: all
        XCTAssertEqual(CalibratedInitializer.calibrationSamples(count: 24, options: explicit).count, 24)

        let result = try convert(levels: 2, initializer: .calibrated, data: data)
        let out = folder + "/ppf2"
        _ = try NativeCheckpoint.write(tensors: result.tensors, config: result.nativeConfig, to: out)
        let written = try CheckpointLoader.load(out)
        XCTAssertEqual(try CalibratedInitializer.heldOutSamples(recordedIn: written, dataPath: data, count: 24), heldOut)
        _ = mkdir(folder + "/other", 0o755)
        let other = try makeLatents(folder + "/other", count: 23)          // other bytes: no claim on them
        XCTAssertNil(try CalibratedInitializer.heldOutSamples(recordedIn: written, dataPath: other, count: 23))
    }

    func testCalibrationIsDeterministicAndNeedsAVelocitySource() throws {
        let folder = Paths.scratch(self)
        let data = try makeLatents(folder)
        let a = try convert(levels: 2, initializer: .calibrated, data: data)
        let b = try convert(levels: 2, initializer: .calibrated, data: data)
        XCTAssertTrue(CheckpointDiff(a.tensors, b.tensors).isEqual)
        var options = FromDiTOptions()
        options.heads = 4; options.objective = .epsilon; options.initializer = .calibrated
        options.calibration = CalibratedInitializer.Options(dataPath: data)
        assertPPError(.usage, mentions: ["velocity"]) { try FromDiT.convert(try CheckpointLoader.load(Paths.fixture("dit.pt")), options: options, sourceSHA256: nil) }
        options.objective = .velocity; options.calibration = nil
        assertPPError(.usage, mentions: ["--data"]) { try FromDiT.convert(try CheckpointLoader.load(Paths.fixture("sit.pt")), options: options, sourceSHA256: nil) }
    }

    func testRidgeSolverSatisfiesItsNormalEquations() {
        var rng = SeededRandom(seed: 3)
        let rows = 57, d = 7, k = 3
        let x = rng.normals(rows * d), y = rng.normals(rows * k)
        var ridge = RidgeRegression(features: d, outputs: k)
        x.withUnsafeBufferPointer { xp in y.withUnsafeBufferPointer { yp in ridge.accumulate(x: xp.baseAddress!, y: yp.baseAddress!, count: rows) } }
        let lambda = 0.3
        let w = ridge.solve(lambda: lambda)!
        for column in 0..<k {
            for i in 0...d {
                var g = lambda * w[i * k + column]
                for r in 0..<rows {
                    let a = (0..<d).map { Double(x[r * d + $0]) } + [1]
                    let residual = Double(y[r * k + column]) - (0...d).reduce(0.0) { $0 + a[$1] * w[$1 * k + column] }
                    g -= a[i] * residual
                }
                XCTAssertEqual(g, 0, accuracy: 1e-9)
            }
        }
        // The residual from the accumulated sums equals the direct one.
        var direct = 0.0
        for r in 0..<rows { for column in 0..<k {
            let a = (0..<d).map { Double(x[r * d + $0]) } + [1]
            let residual = Double(y[r * k + column]) - (0...d).reduce(0.0) { $0 + a[$1] * w[$1 * k + column] }
            direct += residual * residual
        } }
        XCTAssertEqual(ridge.residualSquares(w), direct, accuracy: 1e-9 * direct)
    }
}

