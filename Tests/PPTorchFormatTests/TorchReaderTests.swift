import PPTensor
@testable import PPTorchFormat
import XCTest

final class TorchReaderTests: XCTestCase {
    func testEveryFixtureReadsAsAStateDict() throws {
        for name in ["sit.pt", "sit_bf16.pt", "dit.pt", "ppf2.pt", "ppf3.pt"] {
            let checkpoint = try TorchCheckpoint.read(path: Fixtures.path(name))
            let dicts = checkpoint.stateDicts()
            XCTAssertEqual(dicts.map(\.path), [""], name)
            XCTAssertTrue(dicts[0].tensors.contains("x_embedder.proj.weight"), name)
            XCTAssertTrue(checkpoint.describeNonTensorEntries().isEmpty, name)
        }
    }

    func testSitMatchesSafetensorsByteForByte() throws {
        let checkpoint = try TorchCheckpoint.read(path: Fixtures.path("sit.pt"))
        let tensors = try XCTUnwrap(checkpoint.stateDict(at: ""))
        let reference = try readSafetensorsForTest(Fixtures.path("sit.safetensors"))
        XCTAssertEqual(Set(tensors.names), Set(reference.keys))
        for (name, view) in tensors.items {
            let ref = try XCTUnwrap(reference[name])
            XCTAssertEqual(view.dtype.rawValue, ref.dtype, name)
            XCTAssertEqual(view.shape, ref.shape, name)
            XCTAssertEqual(view.rowMajorBytes(), ref.bytes, name)
        }
    }

    func testBF16IsSitRoundedToBF16() throws {
        let f32 = try XCTUnwrap(TorchCheckpoint.read(path: Fixtures.path("sit.pt")).stateDict(at: ""))
        let bf16 = try XCTUnwrap(TorchCheckpoint.read(path: Fixtures.path("sit_bf16.pt")).stateDict(at: ""))
        XCTAssertEqual(f32.names, bf16.names)
        for (name, view) in bf16.items {
            XCTAssertEqual(view.dtype, .bf16, name)
            let source = try XCTUnwrap(f32[name])
            let expected = source.floats().map { HalfFloat.f32ToBF16($0) }
            let actual = view.rowMajorBytes().withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) }
            XCTAssertEqual(actual, expected, name)
        }
    }

    func testTrainCheckpointGivesModelEmaArgsAndOpt() throws {
        let checkpoint = try TorchCheckpoint.read(path: Fixtures.path("sit_train.pt"))
        let paths = checkpoint.stateDicts().map(\.path)
        XCTAssertEqual(Array(paths.prefix(2)), ["model", "ema"])
        XCTAssertTrue(paths.dropFirst(2).allSatisfy { $0.hasPrefix("opt/state/") }, "\(paths)")
        let model = try XCTUnwrap(checkpoint.stateDict(at: "model"))
        let sit = try XCTUnwrap(TorchCheckpoint.read(path: Fixtures.path("sit.pt")).stateDict(at: ""))
        XCTAssertEqual(model.names, sit.names)
        for (name, view) in model.items { XCTAssertEqual(view.rowMajorBytes(), sit[name]?.rowMajorBytes(), name) }

        let ema = try XCTUnwrap(checkpoint.stateDict(at: "ema"))
        let reference = try readSafetensorsForTest(Fixtures.path("sit_train_ema.safetensors"))
        XCTAssertEqual(Set(ema.names), Set(reference.keys))
        for (name, view) in ema.items { XCTAssertEqual(view.rowMajorBytes(), reference[name]?.bytes, name) }

        guard case .object(let args)? = checkpoint.root["args"] else { return XCTFail("args is not an object") }
        XCTAssertEqual(args.className, "argparse.Namespace")
        XCTAssertEqual(checkpoint.root["args"]?["model"]?.stringValue, "SiT-S/2")
        XCTAssertEqual(checkpoint.root["args"]?["image_size"]?.intValue, 64)
        let described = Dictionary(uniqueKeysWithValues: checkpoint.describeNonTensorEntries().map { ($0.key, $0.summary) })
        XCTAssertEqual(Set(described.keys), ["opt", "args"])
        XCTAssertTrue(described["args"]!.contains("model='SiT-S/2'"), described["args"]!)
        XCTAssertTrue(described["opt"]!.contains("param_groups"), described["opt"]!)
        // opt holds real tensors: the AdamW moments have the model's shapes.
        let moments = checkpoint.stateDicts().filter { $0.path.hasPrefix("opt/state/") }
        XCTAssertFalse(moments.isEmpty)
        for m in moments { XCTAssertNotNil(m.tensors["exp_avg"]) }
    }

    func testCheckpointInsideAZipReadsInPlace() throws {
        let outer = try ZipArchive(path: Fixtures.digitsZip)
        let entry = try XCTUnwrap(outer.entry(named: "digits_sit.pt"))
        let (storage, offset, count) = try outer.contents(of: entry)
        let checkpoint = try TorchCheckpoint.read(storage: storage, range: offset ..< offset + count, origin: "digits-sit.zip:digits_sit.pt")
        let dicts = checkpoint.stateDicts()
        XCTAssertFalse(dicts.isEmpty)
        let first = try XCTUnwrap(dicts.first?.tensors.items.first?.tensor)
        XCTAssertTrue(first.storage === storage, "stored entries must be views into the outer mapping")
    }
}
