@_exported import PPTestSupport
import Foundation
import PPTensor
import XCTest

/// Paths of the committed fixtures.
enum Fixtures {
    static let root: String = {
        let here = URL(fileURLWithPath: #filePath)  // Tests/PPTorchFormatTests/TestSupport.swift
        return here.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures").path
    }()
    static func path(_ name: String) -> String { "\(root)/\(name)" }
    static let digitsZip: String = {
        let here = URL(fileURLWithPath: #filePath)
        return here.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("examples/digits/digits-sit.zip").path
    }()
}

/// A throwaway folder for outputs, removed by the caller.
func makeTemporaryFolder() -> String {
    let path = NSTemporaryDirectory() + "pptorch-\(UUID().uuidString)"
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Minimal safetensors reading for comparisons (test-only; to be replaced by PPSafetensors).
/// Returns name -> (dtype string, shape, raw bytes).
func readSafetensorsForTest(_ path: String) throws -> [String: (dtype: String, shape: [Int], bytes: [UInt8])] {
    let data = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
    var headerLength = 0
    for i in (0..<8).reversed() { headerLength = headerLength << 8 | Int(data[i]) }
    let header = try JSONSerialization.jsonObject(with: Data(data[8 ..< 8 + headerLength])) as! [String: Any]
    var result: [String: (String, [Int], [UInt8])] = [:]
    for (name, info) in header where name != "__metadata__" {
        let d = info as! [String: Any]
        let offsets = d["data_offsets"] as! [Int]
        let start = 8 + headerLength
        result[name] = (d["dtype"] as! String, d["shape"] as! [Int], Array(data[start + offsets[0] ..< start + offsets[1]]))
    }
    return result
}
