import XCTest

@testable import PPTensor

final class TensorViewTests: XCTestCase {
    private func f32Bytes(_ values: [Float]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }

    func testStridedTransposeView() {
        let base = TensorView(floats: [0, 1, 2, 3, 4, 5], shape: [2, 3])
        XCTAssertTrue(base.isRowMajorContiguous)
        XCTAssertEqual(base.strides, [3, 1])
        let t = TensorView(dtype: .f32, shape: [3, 2], strides: [1, 3], storage: base.storage, byteOffset: 0)
        XCTAssertFalse(t.isRowMajorContiguous)
        XCTAssertNil(t.contiguousBytes)
        XCTAssertEqual(t.floats(), [0, 3, 1, 4, 2, 5])
        XCTAssertEqual(t.rowMajorBytes(), f32Bytes([0, 3, 1, 4, 2, 5]))
        XCTAssertEqual(t.int64s(), [0, 3, 1, 4, 2, 5])
        XCTAssertEqual(t.doubles(), [0, 3, 1, 4, 2, 5])
        var offsets: [Int] = []
        t.forEachElementOffset { offsets.append($0) }
        XCTAssertEqual(offsets, [0, 3, 1, 4, 2, 5])
    }

    func testOffsetSliceAndBroadcastViews() {
        let base = TensorView(floats: (0..<12).map(Float.init), shape: [3, 4])
        // Column 1 of rows 1...2: start at element 5, stride one row.
        let col = TensorView(dtype: .f32, shape: [2], strides: [4], storage: base.storage, byteOffset: 5 * 4)
        XCTAssertEqual(col.floats(), [5, 9])
        // Row 2 as a contiguous view with an offset: no copy, exact bytes.
        let row = TensorView(dtype: .f32, shape: [4], storage: base.storage, byteOffset: 8 * 4)
        XCTAssertTrue(row.isRowMajorContiguous)
        XCTAssertEqual(row.contiguousBytes.map(Array.init), f32Bytes([8, 9, 10, 11]))
        // Stride 0 repeats one element.
        let rep = TensorView(dtype: .f32, shape: [2, 3], strides: [0, 1], storage: base.storage, byteOffset: 4)
        XCTAssertEqual(rep.floats(), [1, 2, 3, 1, 2, 3])
        // Size-1 dimensions do not break contiguity whatever their stride.
        let one = TensorView(dtype: .f32, shape: [1, 4], strides: [99, 1], storage: base.storage, byteOffset: 0)
        XCTAssertTrue(one.isRowMajorContiguous)
        // A scalar and an empty tensor.
        let scalar = TensorView(dtype: .f32, shape: [], storage: base.storage, byteOffset: 7 * 4)
        XCTAssertEqual(scalar.elementCount, 1)
        XCTAssertEqual(scalar.floats(), [7])
        let empty = TensorView(dtype: .f32, shape: [0, 3], storage: base.storage, byteOffset: 0)
        XCTAssertEqual(empty.floats(), [])
        XCTAssertEqual(empty.rowMajorBytes(), [])
    }

    /// Little-endian bytes of `values` stored as `dtype`, built independently of TensorView.encode.
    private func encode(_ values: [Double], _ dtype: DType) -> [UInt8] {
        var out: [UInt8] = []
        func le<T: FixedWidthInteger>(_ x: T) { withUnsafeBytes(of: x.littleEndian) { out += $0 } }
        for v in values {
            switch dtype {
            case .f64: le(v.bitPattern)
            case .f32: le(Float(v).bitPattern)
            case .f16: le(Float16(v).bitPattern)
            case .bf16: le(UInt16(Float(v).bitPattern >> 16))   // test values are exact in bf16
            case .i64: le(Int64(v))
            case .i32: le(Int32(v))
            case .i16: le(Int16(v))
            case .i8: le(Int8(v))
            case .u64: le(UInt64(v))
            case .u32: le(UInt32(v))
            case .u16: le(UInt16(v))
            case .u8, .bool: le(UInt8(v))
            }
        }
        return out
    }

    func testFloatsForEveryDType() {
        for dtype in DType.allCases {
            let values: [Double]
            switch dtype {
            case .f64, .f32, .f16, .bf16: values = [-2, -0.5, 0, 1.5, 96]
            case .i64, .i32, .i16, .i8: values = [-128, -1, 0, 1, 127]
            case .u64, .u32, .u16, .u8: values = [0, 1, 2, 200, 255]
            case .bool: values = [0, 1, 1, 0, 1]
            }
            let t = TensorView(dtype: dtype, shape: [5], bytes: encode(values, dtype))
            XCTAssertEqual(t.byteCount, 5 * dtype.byteSize, "\(dtype)")
            XCTAssertEqual(t.floats(), values.map(Float.init), "\(dtype)")
            XCTAssertEqual(t.doubles(), values, "\(dtype)")
            // The same values through a strided (reversed-pairs) view.
            let strided = TensorView(dtype: dtype, shape: [2, 2], strides: [1, 2], storage: t.storage, byteOffset: 0)
            XCTAssertEqual(strided.floats(), [values[0], values[2], values[1], values[3]].map(Float.init), "\(dtype)")
        }
        // 64-bit integers beyond 2^24 round to the nearest float, and int64s stays exact.
        let big = TensorView(int64s: [Int64(1) << 40 + 1, -3], shape: [2])
        XCTAssertEqual(big.floats(), [Float(1 << 40), -3])
        XCTAssertEqual(big.int64s(), [Int64(1) << 40 + 1, -3])
        // Floating-point values truncate toward zero as integers.
        XCTAssertEqual(TensorView(floats: [-1.7, 2.9], shape: [2]).int64s(), [-1, 2])
    }

    func testConvertedTo() {
        let values: [Float] = [1, -2.5, 65504, 1 + 1.0 / 4096]
        let t = TensorView(floats: values, shape: [2, 2])
        let h = t.converted(to: .f16)
        XCTAssertEqual(h.dtype, .f16)
        XCTAssertEqual(h.shape, [2, 2])
        XCTAssertEqual(h.floats(), [1, -2.5, 65504, 1])   // 1 + 2^-12 rounds to 1 in f16
        let b = t.converted(to: .bf16)
        XCTAssertEqual(b.rowMajorBytes(), encode([1, -2.5, 65536, 1], .bf16))
        XCTAssertEqual(t.converted(to: .f64).doubles(), values.map(Double.init))
        // A strided source converts row-major.
        let tr = TensorView(dtype: .f32, shape: [2, 2], strides: [1, 2], storage: t.storage, byteOffset: 0)
        XCTAssertEqual(tr.converted(to: .f16).floats(), [1, 65504, -2.5, 1])
        XCTAssertTrue(tr.converted(to: .f32).isRowMajorContiguous)
        // Same dtype copies bytes exactly, NaN payloads included.
        let odd: [UInt8] = [0x01, 0x7c, 0x00, 0x3c]   // f16 signalling NaN, 1.0
        let same = TensorView(dtype: .f16, shape: [2], bytes: odd).converted(to: .f16)
        XCTAssertEqual(same.rowMajorBytes(), odd)
        let ints = TensorView(int64s: [5, -6], shape: [2]).converted(to: .i64)
        XCTAssertEqual(ints.int64s(), [5, -6])
        XCTAssertEqual(TensorView(int64s: [5, -6], shape: [2]).converted(to: .f32).floats(), [5, -6])
    }

    func testShapeHelpers() {
        XCTAssertEqual(TensorView.rowMajorStrides([2, 3, 4]), [12, 4, 1])
        XCTAssertEqual(TensorView.rowMajorStrides([]), [])
        XCTAssertEqual(TensorView.elementCount([2, 3, 4]), 24)
        XCTAssertEqual(TensorView.elementCount([]), 1)
        XCTAssertEqual(TensorView.elementCount([5, 0]), 0)
        XCTAssertNil(TensorView.elementCount([2, -1]))
        XCTAssertNil(TensorView.elementCount([Int.max, 2]))
    }
}

final class TensorDictTests: XCTestCase {
    private func scalar(_ v: Float) -> TensorView { TensorView(floats: [v], shape: [1]) }

    func testOrderingReplacementAndRemoval() {
        var d = TensorDict([("c", scalar(1)), ("a", scalar(2)), ("b", scalar(3))])
        XCTAssertEqual(d.names, ["c", "a", "b"])
        d["a"] = scalar(20)                       // replacing keeps the position
        XCTAssertEqual(d.names, ["c", "a", "b"])
        XCTAssertEqual(d["a"]?.floats(), [20])
        d["c"] = nil                              // removing the first re-indexes the rest
        XCTAssertEqual(d.names, ["a", "b"])
        XCTAssertEqual(d["a"]?.floats(), [20])
        XCTAssertEqual(d["b"]?.floats(), [3])
        XCTAssertNil(d["c"])
        XCTAssertFalse(d.contains("c"))
        d["missing"] = nil                        // removing an absent name is a no-op
        XCTAssertEqual(d.count, 2)
        d["c"] = scalar(4)                        // re-adding appends
        XCTAssertEqual(d.names, ["a", "b", "c"])
        XCTAssertEqual(d.items.map(\.name), ["a", "b", "c"])
        XCTAssertEqual(d.items.map { $0.tensor.floats()[0] }, [20, 3, 4])
        XCTAssertEqual(d.totalBytes, 12)
        XCTAssertEqual(d.totalElements, 3)
        d["b"] = nil
        d["a"] = nil
        d["c"] = nil
        XCTAssertTrue(d.isEmpty)
    }

    func testSortedNamesUseByteOrder() {
        let d = TensorDict([("b", scalar(0)), ("a_b", scalar(0)), ("B", scalar(0)), ("a.b", scalar(0)), ("é", scalar(0)), ("a", scalar(0))])
        XCTAssertEqual(d.sortedNames, ["B", "a", "a.b", "a_b", "b", "é"])
    }
}

final class SeededRandomTests: XCTestCase {
    func testDeterministicSequence() {
        var a = SeededRandom(seed: 42), b = SeededRandom(seed: 42), c = SeededRandom(seed: 43)
        let sa = (0..<100).map { _ in a.next() }
        XCTAssertEqual(sa, (0..<100).map { _ in b.next() })
        XCTAssertNotEqual(sa, (0..<100).map { _ in c.next() })
        // SplitMix64 reference output for seed 0, so the stream is the same on every machine.
        var z = SeededRandom(seed: 0)
        XCTAssertEqual(z.next(), 0xe220_a839_7b1d_cdaf)
        XCTAssertEqual(z.next(), 0x6e78_9e6a_a1b9_65f4)
        var n1 = SeededRandom(seed: 7), n2 = SeededRandom(seed: 7)
        XCTAssertEqual(n1.normals(5), n2.normals(5))
    }

    func testDistributions() {
        var r = SeededRandom(seed: 1)
        var sum = 0.0, sumSq = 0.0
        let n = 20_000
        for _ in 0..<n {
            let u = r.uniform()
            XCTAssertTrue(u >= 0 && u < 1)
            let k = r.below(7)
            XCTAssertTrue((0..<7).contains(k))
            let x = r.normal()
            XCTAssertTrue(x.isFinite)
            sum += x; sumSq += x * x
        }
        let mean = sum / Double(n), variance = sumSq / Double(n) - mean * mean
        XCTAssertEqual(mean, 0, accuracy: 0.05)
        XCTAssertEqual(variance, 1, accuracy: 0.05)
    }
}
