import XCTest

@testable import PPTensor

final class HalfFloatTests: XCTestCase {
    private func f16(_ f: Float) -> UInt16 { HalfFloat.f32ToF16(f) }
    private func bf16(_ f: Float) -> UInt16 { HalfFloat.f32ToBF16(f) }
    private func bits(_ u: UInt32) -> Float { Float(bitPattern: u) }

    func testF16ExhaustiveRoundTrip() {
        for h in 0...UInt16.max {
            let f = HalfFloat.f16ToF32(h)
            let isNaN = (h & 0x7c00) == 0x7c00 && (h & 0x03ff) != 0
            if isNaN {
                XCTAssertTrue(f.isNaN, "0x\(String(h, radix: 16))")
                let back = HalfFloat.f32ToF16(f)
                XCTAssertEqual(back & 0x7c00, 0x7c00)
                XCTAssertNotEqual(back & 0x03ff, 0, "NaN must not become infinity")
                XCTAssertEqual(back & 0x8000, h & 0x8000, "NaN sign")
            } else {
                XCTAssertEqual(HalfFloat.f32ToF16(f), h, "0x\(String(h, radix: 16)) -> \(f)")
            }
        }
    }

    func testF16DecodesSpecialValues() {
        XCTAssertEqual(HalfFloat.f16ToF32(0x3c00), 1)
        XCTAssertEqual(HalfFloat.f16ToF32(0xc000), -2)
        XCTAssertEqual(HalfFloat.f16ToF32(0x7bff), 65504)
        XCTAssertEqual(HalfFloat.f16ToF32(0x0001), bits(0x3380_0000))   // 2^-24, smallest subnormal
        XCTAssertEqual(HalfFloat.f16ToF32(0x03ff), 1023 * bits(0x3380_0000))   // largest subnormal
        XCTAssertEqual(HalfFloat.f16ToF32(0x7c00), .infinity)
        XCTAssertEqual(HalfFloat.f16ToF32(0xfc00), -.infinity)
        XCTAssertEqual(HalfFloat.f16ToF32(0x8000).bitPattern, 0x8000_0000)   // -0 keeps its sign
        XCTAssertTrue(HalfFloat.f16ToF32(0x7e00).isNaN)
    }

    func testF16RoundsToNearestEven() {
        let ulpAt1: Float = 1.0 / 1024
        XCTAssertEqual(f16(1 + ulpAt1 / 2), 0x3c00)                  // tie, 1.0 is even
        XCTAssertEqual(f16(1 + 3 * ulpAt1 / 2), 0x3c02)              // tie, rounds up to even
        XCTAssertEqual(f16(1 + ulpAt1 / 2 + ulpAt1 / 64), 0x3c01)    // just past the tie
        XCTAssertEqual(f16(1 + ulpAt1 / 2 - ulpAt1 / 64), 0x3c00)    // just below the tie
        XCTAssertEqual(f16(-1 - ulpAt1 / 2 - ulpAt1 / 64), 0xbc01)
        // Overflow: 65520 is the tie between 65504 and 65536 (infinity), so it rounds to infinity.
        XCTAssertEqual(f16(65519), 0x7bff)
        XCTAssertEqual(f16(65520), 0x7c00)
        XCTAssertEqual(f16(1e10), 0x7c00)
        XCTAssertEqual(f16(-1e10), 0xfc00)
        XCTAssertEqual(f16(.infinity), 0x7c00)
        XCTAssertEqual(f16(-.infinity), 0xfc00)
        // Subnormals and underflow (2^-24 is the smallest subnormal step).
        let tiny = bits(0x3380_0000)
        XCTAssertEqual(f16(tiny), 0x0001)
        XCTAssertEqual(f16(tiny / 2), 0x0000)                        // tie with zero, zero is even
        XCTAssertEqual(f16(tiny / 2 * 1.01), 0x0001)
        XCTAssertEqual(f16(3 * tiny / 2), 0x0002)                    // tie between 1 and 2 steps
        XCTAssertEqual(f16(-tiny / 4), 0x8000)                       // underflows to -0
        XCTAssertEqual(f16(bits(0x3880_0000)), 0x0400)               // 2^-14, smallest normal
        XCTAssertEqual(f16(bits(0x3880_0000) - tiny / 2), 0x0400)    // rounds up out of subnormals
        XCTAssertEqual(f16(-0.0), 0x8000)
        let nan = f16(.nan)
        XCTAssertEqual(nan & 0x7c00, 0x7c00)
        XCTAssertNotEqual(nan & 0x03ff, 0)
    }

    func testBF16ExhaustiveRoundTrip() {
        for b in 0...UInt16.max {
            let f = HalfFloat.bf16ToF32(b)
            XCTAssertEqual(f.bitPattern, UInt32(b) << 16)
            let isNaN = (b & 0x7f80) == 0x7f80 && (b & 0x007f) != 0
            // NaNs come back quiet (bit 6 set), every other value exactly.
            XCTAssertEqual(HalfFloat.f32ToBF16(f), isNaN ? b | 0x0040 : b, "0x\(String(b, radix: 16))")
        }
    }

    func testBF16RoundsToNearestEven() {
        XCTAssertEqual(bf16(1), 0x3f80)
        XCTAssertEqual(bf16(bits(0x3f80_8000)), 0x3f80)              // tie, 0x3f80 is even
        XCTAssertEqual(bf16(bits(0x3f81_8000)), 0x3f82)              // tie, rounds up to even
        XCTAssertEqual(bf16(bits(0x3f80_8001)), 0x3f81)              // past the tie
        XCTAssertEqual(bf16(bits(0x3f80_7fff)), 0x3f80)              // below the tie
        XCTAssertEqual(bf16(bits(0xbf80_8001)), 0xbf81)
        XCTAssertEqual(bf16(.greatestFiniteMagnitude), 0x7f80)       // rounds up to infinity
        XCTAssertEqual(bf16(bits(0x7f7f_7fff)), 0x7f7f)              // stays finite
        XCTAssertEqual(bf16(.infinity), 0x7f80)
        XCTAssertEqual(bf16(-.infinity), 0xff80)
        XCTAssertEqual(bf16(bits(0x0001_0000)), 0x0001)              // subnormal
        XCTAssertEqual(bf16(bits(0x0000_8000)), 0x0000)              // tie with zero
        XCTAssertEqual(bf16(bits(0x0000_8001)), 0x0001)
        XCTAssertEqual(bf16(-0.0), 0x8000)
        // A signalling NaN whose payload sits in the low bits must stay NaN, not round to infinity.
        XCTAssertEqual(bf16(bits(0x7f80_0001)), 0x7fc0)
        XCTAssertEqual(bf16(bits(0xff80_0001)), 0xffc0)
        XCTAssertEqual(bf16(bits(0x7fff_ffff)), 0x7fff)              // no carry out of a NaN
        XCTAssertEqual(bf16(.nan), 0x7fc0)
    }
}
