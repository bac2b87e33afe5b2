import PPJSON
import PPTensor

/// Tensor-by-tensor comparison of two checkpoints (after format detection and key mapping).
public struct CheckpointDiff: Sendable {
    public struct TensorDifference: Sendable {
        public var name: String
        public var shapeA: [Int], shapeB: [Int]
        public var dtypeA: DType, dtypeB: DType
        /// Largest |a - b| over elements (nil when the shapes differ).
        public var maxAbsDifference: Double?
        /// True when dtype, shape and every byte agree.
        public var identical: Bool
    }

    public var onlyInA: [String] = []
    public var onlyInB: [String] = []
    public var tensors: [TensorDifference] = []

    public var isEqual: Bool { onlyInA.isEmpty && onlyInB.isEmpty && tensors.allSatisfy(\.identical) }
    public var differing: [TensorDifference] { tensors.filter { !$0.identical } }

    public init(_ a: TensorDict, _ b: TensorDict) {
        onlyInA = a.names.filter { !b.contains($0) }
        onlyInB = b.names.filter { !a.contains($0) }
        for name in a.names {
            guard let ta = a[name], let tb = b[name] else { continue }
            var diff = TensorDifference(name: name, shapeA: ta.shape, shapeB: tb.shape, dtypeA: ta.dtype, dtypeB: tb.dtype,
                                        maxAbsDifference: nil, identical: false)
            if ta.shape == tb.shape {
                if ta.dtype == tb.dtype, let ba = ta.contiguousBytes, let bb = tb.contiguousBytes {
                    diff.identical = ba.elementsEqual(bb)
                } else if ta.dtype == tb.dtype {
                    diff.identical = ta.rowMajorBytes() == tb.rowMajorBytes()
                }
                let va = ta.doubles(), vb = tb.doubles()
                var worst = 0.0
                for i in 0..<va.count {
                    let d = abs(va[i] - vb[i])
                    if d > worst || d.isNaN { worst = d }
                }
                diff.maxAbsDifference = worst
            }
            tensors.append(diff)
        }
    }

    public func json(pathA: String, pathB: String) -> JSONValue {
        .object(JSONObject([
            ("a", .string(pathA)), ("b", .string(pathB)), ("equal", .bool(isEqual)),
            ("only_in_a", .array(onlyInA.map { .string($0) })),
            ("only_in_b", .array(onlyInB.map { .string($0) })),
            ("differences", .array(differing.map { d in
                .object(JSONObject([
                    ("name", .string(d.name)),
                    ("shape_a", .array(d.shapeA.map { .int(Int64($0)) })), ("shape_b", .array(d.shapeB.map { .int(Int64($0)) })),
                    ("dtype_a", .string(d.dtypeA.rawValue)), ("dtype_b", .string(d.dtypeB.rawValue)),
                    ("max_abs_difference", d.maxAbsDifference.map { .double($0) } ?? .null),
                ]))
            })),
        ]))
    }

    /// Human-readable lines.
    public func lines() -> [String] {
        var out: [String] = []
        for name in onlyInA { out.append("only in A: \(name)") }
        for name in onlyInB { out.append("only in B: \(name)") }
        for d in differing {
            if d.shapeA != d.shapeB {
                out.append("\(d.name): shape \(d.shapeA) vs \(d.shapeB)")
            } else {
                let dtype = d.dtypeA == d.dtypeB ? "" : " (dtype \(d.dtypeA.shortName) vs \(d.dtypeB.shortName))"
                out.append("\(d.name): max |a-b| = \(d.maxAbsDifference.map { "\($0)" } ?? "?")\(dtype)")
            }
        }
        out.append(isEqual ? "equal: \(tensors.count) tensors identical"
                           : "different: \(onlyInA.count) only in A, \(onlyInB.count) only in B, \(differing.count) of \(tensors.count) shared tensors differ")
        return out
    }
}
