/// 3x3 stride-1 convolutions by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, "Fast
/// Algorithms for Convolutional Neural Networks", 2015): each 2x2 block of outputs comes from a 4x4
/// input tile with 16 multiplications per (input, output) channel pair instead of 36, so the sgemm work,
/// which is nearly all of a VAE's time, falls to 4/9 of the unrolled (im2col) product's.
///
/// Hand-written because neither OpenBLAS nor any Debian or offline Swift package offers a CPU
/// convolution (oneDNN is not packaged for this). F(2x2, 3x3) is the variant whose transforms use only
/// 0, ±1 and ±1/2, so its rounding stays within a few ulps of the direct sum (checked against
/// `Reference.conv2d` and against the diffusers VAE fixture); larger tiles (F(4x4, 3x3)) would save more
/// multiplications at a visibly larger error.
///
/// With Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A for a 3x3 kernel g and a 4x4 tile d:
///     Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
///     G  = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
///     Aᵀ = [1 1 1 0; 0 1 -1 -1]
/// and the sum over input channels moves inside: for each of the 16 tile positions ξ,
/// M[ξ] (Cout x tiles) = U[ξ] (Cout x Cin) · V[ξ] (Cin x tiles), one sgemm each.
extension Kernels {
    /// Upper bound, in floats, of the transformed input (and of the transformed output) of one block of
    /// tile rows (16 MiB each), as `convolutionColumnBudget` bounds the unrolled matrix.
    public static let winogradTileBudget = 1 << 22

    /// True for the convolutions `conv2dWinograd` computes: 3x3, stride 1 (any padding, optionally on the
    /// upsampled plane).
    public static func winogradApplies(_ g: Conv2DGeometry) -> Bool { g.kernel == 3 && g.stride == 1 }

    /// Same contract as `conv2d` (output[Cout, Ho·Wo] = weight ∗ transform(input) + bias, or += when
    /// `accumulate`), for geometries where `winogradApplies`.
    public static func conv2dWinograd(input: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                                      output: UnsafeMutablePointer<Float>, geometry g: Conv2DGeometry,
                                      transform: ChannelTransform? = nil, accumulate: Bool = false,
                                      tileBudget: Int = winogradTileBudget) {
        precondition(winogradApplies(g), "conv2dWinograd: needs a 3x3 stride-1 convolution, got \(g)")
        let ho = g.outHeight, wo = g.outWidth, cin = g.inChannels, cout = g.outChannels
        guard ho > 0, wo > 0, cout > 0 else { return }
        // Tile rows are `tilesWide` tiles apart: a multiple of 4, as the transforms take 4 tiles at a time
        // (the padding tiles read zeros and their outputs are not stored).
        let tilesHigh = (ho + 1) / 2, tilesWide = ((wo + 1) / 2 + 3) / 4 * 4
        // Equal blocks of tile rows, each holding at most `tileBudget` transformed floats on either side.
        let widest = max(1, min(tilesHigh, tileBudget / max(1, 16 * max(cin, cout) * tilesWide)))
        let blockCount = (tilesHigh + widest - 1) / widest
        let tileRowsPerBlock = (tilesHigh + blockCount - 1) / blockCount
        let maxTiles = tileRowsPerBlock * tilesWide
        // Staged input: the (transformed, upsampled) plane of one block with its zero padding,
        // [Cin, stagedRows, stagedWidth]; tile (ty, tx) reads rows 2ty..2ty+3, columns 2tx..2tx+3.
        let stagedWidth = 2 * tilesWide + 2, stagedRowsMax = 2 * tileRowsPerBlock + 2
        let staged = UnsafeMutablePointer<Float>.allocate(capacity: cin * stagedRowsMax * stagedWidth)
        let transformedWeight = UnsafeMutablePointer<Float>.allocate(capacity: 16 * cout * cin)   // U[16, Cout, Cin]
        let transformedInput = UnsafeMutablePointer<Float>.allocate(capacity: 16 * cin * maxTiles)  // V[16, Cin, tiles]
        let products = UnsafeMutablePointer<Float>.allocate(capacity: 16 * cout * maxTiles)         // M[16, Cout, tiles]
        defer {
            staged.deallocate(); transformedWeight.deallocate(); transformedInput.deallocate(); products.deallocate()
        }
        winogradWeights(weight, into: transformedWeight, outChannels: cout, inChannels: cin)

        var ty0 = 0
        while ty0 < tilesHigh {
            let tileRows = min(tileRowsPerBlock, tilesHigh - ty0)
            let tiles = tileRows * tilesWide
            stageWinogradRows(input, into: staged, firstPaddedRow: 2 * ty0, rows: 2 * tileRows + 2, width: stagedWidth,
                              geometry: g, transform: transform)
            winogradInputTiles(staged, into: transformedInput, channels: cin, stagedRows: 2 * tileRows + 2,
                               stagedWidth: stagedWidth, tileRows: tileRows, tilesWide: tilesWide)
            for position in 0..<16 {
                BLAS.sgemm(transposeA: false, transposeB: false, m: cout, n: tiles, k: cin,
                           a: transformedWeight + position * cout * cin, lda: cin,
                           b: transformedInput + position * cin * tiles, ldb: tiles,
                           beta: 0, c: products + position * cout * tiles, ldc: tiles)
            }
            winogradOutputTiles(products, tiles: tiles, outChannels: cout, into: output, firstTileRow: ty0, tileRows: tileRows,
                                tilesWide: tilesWide, outHeight: ho, outWidth: wo, bias: bias, accumulate: accumulate)
            ty0 += tileRows
        }
    }

    /// U[ξ, o, c] = (G g Gᵀ)[ξ] for each 3x3 kernel g = weight[o, c].
    static func winogradWeights(_ weight: UnsafePointer<Float>, into u: UnsafeMutablePointer<Float>, outChannels cout: Int, inChannels cin: Int) {
        let pairs = cout * cin
        Parallel.forChunks(pairs, minimumPerChunk: 4096) { range in
            var gg = [Float](repeating: 0, count: 12)                               // G g: [4, 3]
            for pair in range {
                let k = weight + pair * 9
                for col in 0..<3 {
                    let g0 = k[col], g1 = k[3 + col], g2 = k[6 + col]
                    gg[col] = g0
                    gg[3 + col] = 0.5 * (g0 + g1 + g2)
                    gg[6 + col] = 0.5 * (g0 - g1 + g2)
                    gg[9 + col] = g2
                }
                for row in 0..<4 {
                    let a = gg[row * 3], b = gg[row * 3 + 1], c = gg[row * 3 + 2]
                    u[(row * 4 + 0) * pairs + pair] = a
                    u[(row * 4 + 1) * pairs + pair] = 0.5 * (a + b + c)
                    u[(row * 4 + 2) * pairs + pair] = 0.5 * (a - b + c)
                    u[(row * 4 + 3) * pairs + pair] = c
                }
            }
        }
    }

    /// staged[c, r, x] = the padded plane's pixel at row firstPaddedRow + r, column x: the stored input
    /// (through `transform`, then nearest-upsampled when asked) inside, 0 in the padding and past the
    /// plane's end (the last tile of an odd-sized output reads one column or row beyond it).
    static func stageWinogradRows(_ input: UnsafePointer<Float>, into staged: UnsafeMutablePointer<Float>,
                                  firstPaddedRow: Int, rows: Int, width: Int, geometry g: Conv2DGeometry,
                                  transform: ChannelTransform?) {
        let sh = g.sourceHeight, sw = g.sourceWidth, up = g.upsample ? 1 : 0
        // Columns [x0, x1) of a staged row hold source columns x - padLeft.
        let x0 = min(width, g.padLeft), x1 = min(width, g.padLeft + sw)
        Parallel.forChunks(g.inChannels, minimumPerChunk: max(1, 8192 / max(1, rows * width))) { channels in
            for c in channels {
                let a = transform?.scale[c] ?? 1, b = transform?.shift[c] ?? 0, silu = transform?.silu ?? false
                let plane = input + c * g.height * g.width
                for r in 0..<rows {
                    let to = staged + (c * rows + r) * width
                    let sy = firstPaddedRow + r - g.padTop
                    guard sy >= 0 && sy < sh && x1 > x0 else {
                        to.update(repeating: 0, count: width)
                        continue
                    }
                    to.update(repeating: 0, count: x0)
                    (to + x1).update(repeating: 0, count: width - x1)
                    let from = plane + (sy >> up) * g.width
                    let dst = to + x0
                    let n = x1 - x0
                    if transform == nil {
                        if up == 1 { for x in 0..<n { dst[x] = from[x >> 1] } } else { dst.update(from: from, count: n) }
                    } else if silu {
                        if up == 1 { for x in 0..<n { dst[x] = Reference.silu(from[x >> 1] * a + b) } }
                        else { for x in 0..<n { dst[x] = Reference.silu(from[x] * a + b) } }
                    } else {
                        if up == 1 { for x in 0..<n { dst[x] = from[x >> 1] * a + b } } else { for x in 0..<n { dst[x] = from[x] * a + b } }
                    }
                }
            }
        }
    }

    /// V[ξ, c, t] = (Bᵀ d B)[ξ] for the 4x4 tile d of channel c at tile t = row·tilesWide + column,
    /// four tiles at a time (`tilesWide` is a multiple of 4; `stagedWidth` = 2·tilesWide + 2).
    static func winogradInputTiles(_ staged: UnsafePointer<Float>, into v: UnsafeMutablePointer<Float>, channels: Int,
                                   stagedRows: Int, stagedWidth: Int, tileRows: Int, tilesWide: Int) {
        let tiles = tileRows * tilesWide
        let ps = channels * tiles                                    // from one tile position ξ to the next
        /// Columns x, x+1 (even, odd) and x+2, x+3 of four consecutive tiles starting at column x.
        @inline(__always) func columns(_ row: UnsafePointer<Float>) -> (SIMD4<Float>, SIMD4<Float>, SIMD4<Float>, SIMD4<Float>) {
            let a = UnsafeRawPointer(row).loadUnaligned(as: SIMD8<Float>.self)
            let b = UnsafeRawPointer(row + 2).loadUnaligned(as: SIMD8<Float>.self)
            return (a.evenHalf, a.oddHalf, b.evenHalf, b.oddHalf)
        }
        @inline(__always) func store(_ value: SIMD4<Float>, _ to: UnsafeMutablePointer<Float>) {
            UnsafeMutableRawPointer(to).storeBytes(of: value, as: SIMD4<Float>.self)
        }
        Parallel.forChunks(channels, minimumPerChunk: max(1, 4096 / max(1, tiles))) { range in
            for c in range {
                let plane = staged + c * stagedRows * stagedWidth
                let base = v + c * tiles
                for ty in 0..<tileRows {
                    let r0 = plane + 2 * ty * stagedWidth, r1 = r0 + stagedWidth, r2 = r1 + stagedWidth, r3 = r2 + stagedWidth
                    for tx in stride(from: 0, to: tilesWide, by: 4) {
                        let x = 2 * tx
                        let d0 = columns(r0 + x), d1 = columns(r1 + x), d2 = columns(r2 + x), d3 = columns(r3 + x)
                        // Bᵀ d: rows e0..e3 of each tile (a tuple of its four columns).
                        let e0 = (d0.0 - d2.0, d0.1 - d2.1, d0.2 - d2.2, d0.3 - d2.3)
                        let e1 = (d1.0 + d2.0, d1.1 + d2.1, d1.2 + d2.2, d1.3 + d2.3)
                        let e2 = (d2.0 - d1.0, d2.1 - d1.1, d2.2 - d1.2, d2.3 - d1.3)
                        let e3 = (d1.0 - d3.0, d1.1 - d3.1, d1.2 - d3.2, d1.3 - d3.3)
                        // (Bᵀ d) B: the same combination across each row; V[4i + j] is (4i + j)·ps away.
                        let o0 = base + ty * tilesWide + tx, o1 = o0 + 4 * ps, o2 = o1 + 4 * ps, o3 = o2 + 4 * ps
                        store(e0.0 - e0.2, o0); store(e0.1 + e0.2, o0 + ps); store(e0.2 - e0.1, o0 + 2 * ps); store(e0.1 - e0.3, o0 + 3 * ps)
                        store(e1.0 - e1.2, o1); store(e1.1 + e1.2, o1 + ps); store(e1.2 - e1.1, o1 + 2 * ps); store(e1.1 - e1.3, o1 + 3 * ps)
                        store(e2.0 - e2.2, o2); store(e2.1 + e2.2, o2 + ps); store(e2.2 - e2.1, o2 + 2 * ps); store(e2.1 - e2.3, o2 + 3 * ps)
                        store(e3.0 - e3.2, o3); store(e3.1 + e3.2, o3 + ps); store(e3.2 - e3.1, o3 + 2 * ps); store(e3.1 - e3.3, o3 + 3 * ps)
                    }
                }
            }
        }
    }

    /// output[o, 2ty + i, 2tx + j] (=, or += when accumulating) (Aᵀ m A)[i, j] + bias[o] for the 4x4
    /// products m = M[·, o, t] of tile t, four tiles at a time, dropping what falls outside the plane
    /// (the padding tiles, and the last row or column of an odd-sized plane).
    static func winogradOutputTiles(_ m: UnsafePointer<Float>, tiles: Int, outChannels: Int, into output: UnsafeMutablePointer<Float>,
                                    firstTileRow: Int, tileRows: Int, tilesWide: Int, outHeight ho: Int, outWidth wo: Int,
                                    bias: UnsafePointer<Float>?, accumulate: Bool) {
        let ps = outChannels * tiles                                 // from one tile position ξ to the next
        @inline(__always) func load(_ from: UnsafePointer<Float>) -> SIMD4<Float> {
            UnsafeRawPointer(from).loadUnaligned(as: SIMD4<Float>.self)
        }
        /// Eight outputs (four tiles' two columns, interleaved) into `row` from column x on.
        @inline(__always) func put(_ left: SIMD4<Float>, _ right: SIMD4<Float>, _ row: UnsafeMutablePointer<Float>, _ x: Int) {
            let pair = SIMD8(lowHalf: left, highHalf: right)
            let values = SIMD8(pair[0], pair[4], pair[1], pair[5], pair[2], pair[6], pair[3], pair[7])
            let to = row + x
            if x + 8 <= wo {
                let old = accumulate ? UnsafeRawPointer(to).loadUnaligned(as: SIMD8<Float>.self) : SIMD8(repeating: 0)
                UnsafeMutableRawPointer(to).storeBytes(of: old + values, as: SIMD8<Float>.self)
            } else {
                for i in 0..<min(8, wo - x) { to[i] = accumulate ? to[i] + values[i] : values[i] }
            }
        }
        Parallel.forChunks(outChannels, minimumPerChunk: max(1, 4096 / max(1, tiles))) { range in
            for o in range {
                let b = SIMD4<Float>(repeating: bias?[o] ?? 0)
                let plane = output + o * ho * wo
                let base = m + o * tiles
                for ty in 0..<tileRows {
                    let y = 2 * (firstTileRow + ty)
                    let row0 = plane + y * wo
                    for tx in stride(from: 0, to: tilesWide, by: 4) where 2 * tx < wo {
                        let t = base + ty * tilesWide + tx
                        // Aᵀ m, column by column: (row 0, row 1) of the 2x4 intermediate.
                        @inline(__always) func column(_ j: Int) -> (SIMD4<Float>, SIMD4<Float>) {
                            let m0 = load(t + j * ps), m1 = load(t + (4 + j) * ps)
                            let m2 = load(t + (8 + j) * ps), m3 = load(t + (12 + j) * ps)
                            return (m0 + m1 + m2, m1 - m2 - m3)
                        }
                        let c0 = column(0), c1 = column(1), c2 = column(2), c3 = column(3)
                        // (Aᵀ m) A: the 2x2 outputs of each tile.
                        put(c0.0 + c1.0 + c2.0 + b, c1.0 - c2.0 - c3.0 + b, row0, 2 * tx)
                        if y + 1 < ho { put(c0.1 + c1.1 + c2.1 + b, c1.1 - c2.1 - c3.1 + b, row0 + wo, 2 * tx) }
                    }
                }
            }
        }
    }
}
