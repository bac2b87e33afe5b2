import PPFileIO
import PPJSON
import PPTensor
import XCTest

import PPSafetensors

final class ShardedTests: XCTestCase {
    var folder = ""

    override func setUpWithError() throws { folder = try makeTemporaryFolder() }
    override func tearDown() { FileOutput.removeTree(folder) }

    func write(_ name: String, _ text: String) throws {
        try FileOutput.writeFile("\(folder)/\(name)", bytes: Array(text.utf8))
    }

    func shard(_ name: String, _ tensors: [(String, [Float])]) throws {
        try SafetensorsWriter.write(TensorDict(tensors.map { ($0.0, TensorView(floats: $0.1, shape: [$0.1.count])) }),
                                    metadata: [("format", "pt")], to: "\(folder)/\(name)")
    }

    func testWriteThenOpenGivesTheSameTensors() throws {
        let tensors = everyDTypeTensors()
        let indexPath = try ShardedSafetensors.write(tensors, metadata: [("format", "pt")], folder: folder, baseName: "model", maxShardBytes: 64)
        XCTAssertEqual(indexPath, "\(folder)/model.safetensors.index.json")
        let files = try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
        XCTAssertGreaterThan(files.count, 3)
        let shards = files.filter { $0.hasSuffix(".safetensors") }
        XCTAssertEqual(shards.first, "model-00001-of-\(String(format: "%05d", shards.count)).safetensors")

        let (back, metadata) = try ShardedSafetensors.open(indexPath: indexPath)
        assertSameTensors(tensors, back)
        XCTAssertEqual(back.names, back.sortedNames)  // weight_map order, which the writer sorts
        XCTAssertEqual(metadata.map { $0.0 }, ["format", "total_size"])
        XCTAssertEqual(metadata.map { $0.1 }, ["pt", String(tensors.totalBytes)])

        // Deterministic: a second write of what was read gives the same files.
        let first = try files.map { name -> [UInt8] in
            let storage = try ByteStorage(mappingFile: "\(folder)/\(name)")
            return withExtendedLifetime(storage) { Array(storage.bytes) }
        }
        let again = try makeTemporaryFolder()
        defer { FileOutput.removeTree(again) }
        try ShardedSafetensors.write(back, metadata: [("format", "pt")], folder: again, baseName: "model", maxShardBytes: 64)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: again).sorted(), files)
        for (k, f) in files.enumerated() {
            let storage = try ByteStorage(mappingFile: "\(again)/\(f)")
            withExtendedLifetime(storage) { XCTAssertEqual(Array(storage.bytes), first[k], f) }
        }
    }

    func testOneShardWhenEverythingFits() throws {
        let tensors = everyDTypeTensors()
        let indexPath = try ShardedSafetensors.write(tensors, metadata: [], folder: folder, maxShardBytes: 1 << 30)
        let index = try JSON.parse(file: indexPath)
        XCTAssertEqual(Set(index["weight_map"]!.objectValue!.values.compactMap(\.stringValue)), ["model-00001-of-00001.safetensors"])
        assertSameTensors(tensors, try ShardedSafetensors.open(indexPath: indexPath).tensors)
    }

    func testHandWrittenIndex() throws {
        try shard("a.safetensors", [("x", [1, 2]), ("y", [3])])
        try shard("b.safetensors", [("z", [4])])
        try write("i.json", #"{"metadata":{"total_size":16,"n":null},"weight_map":{"z":"b.safetensors","y":"a.safetensors","x":"a.safetensors"}}"#)
        let (t, m) = try ShardedSafetensors.open(indexPath: "\(folder)/i.json")
        XCTAssertEqual(t.names, ["z", "y", "x"])
        XCTAssertEqual(t["x"]!.floats(), [1, 2])
        XCTAssertEqual(m.map { $0.0 }, ["total_size", "n"])
        XCTAssertEqual(m.map { $0.1 }, ["16", "null"])
        // A missing "metadata" is fine; files the map does not name are not opened.
        try write("j.json", #"{"weight_map":{"z":"b.safetensors"}}"#)
        let (only, none) = try ShardedSafetensors.open(indexPath: "\(folder)/j.json")
        XCTAssertEqual(only.names, ["z"])
        XCTAssertTrue(none.isEmpty)
    }

    func assertIndexRefused(_ text: String, kind: PPError.Kind = .badInput, entry: String?, _ fragment: String,
                            file: StaticString = #filePath, line: UInt = #line) throws {
        try write("bad.json", text)
        let path = "\(folder)/bad.json"
        do {
            _ = try ShardedSafetensors.open(indexPath: path)
            XCTFail("accepted", file: file, line: line)
        } catch let e as PPError {
            XCTAssertEqual(e.kind, kind, "\(e)", file: file, line: line)
            XCTAssertEqual(e.entry, entry, "\(e)", file: file, line: line)
            XCTAssertTrue(e.description.contains(fragment), "\(e.description) lacks \(fragment.debugDescription)", file: file, line: line)
            XCTAssertTrue(e.file?.hasPrefix(folder) ?? false, "\(e)", file: file, line: line)
        }
    }

    func testBadIndexFilesRefused() throws {
        try shard("a.safetensors", [("x", [1, 2]), ("y", [3])])
        try shard("b.safetensors", [("z", [4])])
        try shard("c.safetensors", [("z", [5])])

        try assertIndexRefused("[]", entry: nil, "index is an array")
        try assertIndexRefused(#"{"metadata":{}}"#, entry: nil, "index has no \"weight_map\"")
        try assertIndexRefused(#"{"weight_map":[]}"#, entry: "weight_map", "expected an object")
        try assertIndexRefused(#"{"metadata":"x","weight_map":{}}"#, entry: "metadata", "expected an object")
        try assertIndexRefused(#"{"weight_map":{"x":1}}"#, entry: "x", "weight_map value is an integer")
        try assertIndexRefused(#"{"weight_map":{"x":"a.safetensors","x":"a.safetensors"}}"#, entry: "x", "duplicate key \"x\"")
        // A tensor the map names but its shard lacks.
        try assertIndexRefused(#"{"weight_map":{"x":"a.safetensors","y":"a.safetensors","z":"b.safetensors","w":"b.safetensors"}}"#,
                               entry: "w", "weight_map puts the tensor in b.safetensors, which has no such tensor")
        // A shard tensor missing from the map.
        try assertIndexRefused(#"{"weight_map":{"x":"a.safetensors","z":"b.safetensors"}}"#,
                               entry: "y", "tensor is in shard a.safetensors but not in the weight_map")
        // The map names the wrong shard.
        try assertIndexRefused(#"{"weight_map":{"x":"a.safetensors","y":"b.safetensors","z":"b.safetensors"}}"#,
                               entry: "y", "weight_map puts the tensor in b.safetensors, but it is in a.safetensors")
        // The same tensor in two shards.
        try assertIndexRefused(#"{"weight_map":{"z":"b.safetensors","q":"c.safetensors"}}"#,
                               entry: "z", "tensor is in two shards, b.safetensors and c.safetensors")
        // Shard names that leave the folder, or spell a file two ways.
        for name in ["../a.safetensors", "/etc/passwd", "./a.safetensors", "sub//a.safetensors", ""] {
            try assertIndexRefused(#"{"weight_map":{"x":\#(JSON.quoted(name))}}"#, entry: "x", "must be a relative path inside the index's folder")
        }
        // A missing shard, and a broken one.
        try assertIndexRefused(#"{"weight_map":{"x":"nope.safetensors"}}"#, kind: .missingInput, entry: nil, "nope.safetensors")
        try write("broken.safetensors", "not safetensors")
        try assertIndexRefused(#"{"weight_map":{"x":"broken.safetensors"}}"#, entry: nil, "broken.safetensors: header length")
        // Not JSON at all.
        try assertIndexRefused("{weight_map}", entry: nil, "bad.json: not valid JSON")
    }
}
