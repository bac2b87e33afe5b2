import PPCheckpoint
import PPConvert
import PPModel
import PPSafetensors
import PPTensor
import PPTorchFormat
import XCTest

final class ContainerConversionTests: XCTestCase {
    /// Every writer round-trips losslessly through the project's own readers.
    func testEveryFormatRoundTripsEveryFixtureModel() throws {
        let folder = Paths.scratch(self)
        for fixture in ["sit.pt", "sit_bf16.pt", "ppf2.pt", "ppf3.pt", "sit_fp16.safetensors"] {
            var source = try CheckpointLoader.load(Paths.fixture(fixture))
            source.architectureHints["num_heads"] = .int(4)
            for format in OutputFormat.allCases {
                let out = "\(folder)/\(fixture)-\(format.rawValue)" + (format == .native ? "" : format == .safetensors ? ".safetensors" : ".pt")
                _ = try ContainerConversion.run(source, to: out, format: format, dtype: .keep, sourceSHA256: nil)
                let back = try CheckpointLoader.load(out)
                let diff = CheckpointDiff(back.tensors, source.tensors)
                XCTAssertTrue(diff.isEqual, "\(fixture) as \(format.rawValue): " + diff.lines().joined(separator: "; "))
                XCTAssertEqual(back.layout, source.layout, "\(fixture) as \(format.rawValue)")
            }
        }
    }

    func testDTypeConversionRoundsToNearestEven() throws {
        let folder = Paths.scratch(self)
        var source = try CheckpointLoader.load(Paths.fixture("sit.pt"))
        source.architectureHints["num_heads"] = .int(4)
        _ = try ContainerConversion.run(source, to: "\(folder)/bf16.pt", format: .torch, dtype: .bf16, sourceSHA256: nil)
        let official = try CheckpointLoader.load(Paths.fixture("sit_bf16.pt")).tensors
        let ours = try CheckpointLoader.load("\(folder)/bf16.pt").tensors
        XCTAssertTrue(CheckpointDiff(ours, official).isEqual, "our bf16 rounding equals torch's .to(torch.bfloat16)")
    }

    func testTrainCheckpointCarriesWhatTheOfficialTrainerReads() throws {
        let folder = Paths.scratch(self)
        var source = try CheckpointLoader.load(Paths.fixture("ppf2.pt"))
        source.architectureHints["num_heads"] = .int(4)
        let out = "\(folder)/0000100.pt"
        _ = try ContainerConversion.run(source, to: out, format: .torchTrain, dtype: .keep, sourceSHA256: nil)
        let checkpoint = try TorchCheckpoint.read(path: out)
        guard case .object(let args)? = checkpoint.root["args"] else { return XCTFail("args is not a Namespace") }
        XCTAssertEqual(args.className, "argparse.Namespace")
        let attributes = Dictionary(args.attributes.map { ($0.name, $0.value) }, uniquingKeysWith: { a, _ in a })
        if case .none? = attributes["initialize_from"] {} else { XCTFail("initialize_from must be None, or the official trainer overwrites the resumed weights") }
        XCTAssertEqual(attributes["patch_level"]?.intValue, 2)
        XCTAssertEqual(attributes["prediction"]?.stringValue, "velocity")
        let groups = checkpoint.root["opt"]?["param_groups"]
        guard case .list(let list)? = groups, case .dict(let group)? = list.items.first,
              case .list(let params)? = group["params"] else { return XCTFail("opt.param_groups[0].params missing") }
        XCTAssertEqual(params.items.count, source.tensors.count, "one AdamW index per parameter, pos_embed included")
        for sub in [WeightsChoice.model, .ema] {
            XCTAssertTrue(CheckpointDiff(try CheckpointLoader.load(out, weights: sub).tensors, source.tensors).isEqual, sub.rawValue)
        }
    }

    func testDiffusersConvertsToAnOfficialDiTStateDictWithComputedPositions() throws {
        let folder = Paths.scratch(self)
        let source = try CheckpointLoader.load(Paths.fixture("dit_diffusers.zip"))
        _ = try ContainerConversion.run(source, to: "\(folder)/dit.safetensors", format: .safetensors, dtype: .keep, sourceSHA256: nil)
        let ours = try CheckpointLoader.load("\(folder)/dit.safetensors").tensors
        let official = try CheckpointLoader.load(Paths.fixture("dit.pt")).tensors
        XCTAssertEqual(Set(ours.names), Set(official.names))
        let pos = ours["pos_embed"]!.floats(), ref = official["pos_embed"]!.floats()
        XCTAssertLessThanOrEqual(zip(pos, ref).map { abs($0 - $1) }.max()!, 1e-6, "computed sin-cos table")
    }
}
