import PPFileIO
import PPKernels
import PPTensor
import PPVAE

#if canImport(Glibc)
import Glibc
#endif

/// What `VAEBenchmark.run` measured.
public struct VAEBenchmarkReport: Sendable {
    public var threads: Int
    public var config: VAEConfig
    public var batch: Int
    public var imageSize: Int
    /// Best of the repeats, seconds for the whole batch.
    public var decodeSeconds: Double
    public var encodeSeconds: Double
    /// Resident memory once the weights are in place, and the peak of each phase (bytes; 0 if unknown).
    public var residentAfterWeights: Int
    public var decodePeakResident: Int
    public var encodePeakResident: Int
    /// Whether the kernel let us reset the peak between phases (/proc/self/clear_refs); if not, the
    /// encode peak includes the decode's.
    public var peaksSeparate: Bool

    public var text: String {
        let l = config.latentChannels, side = imageSize / config.downsamplingFactor
        func mib(_ bytes: Int) -> String { bytes > 0 ? "\(bytes >> 20) MiB" : "unknown" }
        return """
            VAE \(config.summary), random weights, \(threads) thread\(threads == 1 ? "" : "s")
            decode [\(batch),\(l),\(side),\(side)] -> [\(batch),\(config.outChannels),\(imageSize),\(imageSize)]: \(fixed(decodeSeconds)) s (\(fixed(decodeSeconds / Double(batch))) s/image), peak RSS \(mib(decodePeakResident))
            encode [\(batch),\(config.inChannels),\(imageSize),\(imageSize)] -> [\(batch),\(l),\(side),\(side)]: \(fixed(encodeSeconds)) s (\(fixed(encodeSeconds / Double(batch))) s/image), peak RSS \(mib(encodePeakResident))\(peaksSeparate ? "" : " (includes decode)")
            RSS with the weights loaded: \(mib(residentAfterWeights))
            """
    }

    private func fixed(_ v: Double) -> String {
        let r = (v * 1000).rounded() / 1000
        let whole = Int(r), frac = Int(((r - Double(whole)) * 1000).rounded())
        return "\(whole)." + String(repeating: "0", count: 3 - String(frac).count) + "\(frac)"
    }
}

/// Times decode and encode of a random-weight VAE (the SD architecture by default) on a batch.
public enum VAEBenchmark {
    public static func run(config: VAEConfig = .stableDiffusion, threads: Int, batch: Int, imageSize: Int,
                           repeats: Int, log: (String) -> Void = { _ in }) throws -> VAEBenchmarkReport {
        try Parallel.withThreads(threads) {
            try measure(config: config, threads: threads, batch: batch, imageSize: imageSize, repeats: repeats, log: log)
        }
    }

    private static func measure(config: VAEConfig, threads: Int, batch: Int, imageSize: Int,
                                repeats: Int, log: (String) -> Void) throws -> VAEBenchmarkReport {
        let f = config.downsamplingFactor
        guard imageSize > 0, imageSize % f == 0, batch > 0, repeats > 0 else {
            throw PPError(.usage, entry: "--size", "image size \(imageSize) must be a positive multiple of \(f); batch and repeats positive")
        }
        let vae = AutoencoderKL.random(config, seed: 1)
        let residentAfterWeights = currentResident()
        let side = imageSize / f
        var random = SeededRandom(seed: 2)
        let latents = VAETensor(values: random.normals(batch * config.latentChannels * side * side),
                                shape: [batch, config.latentChannels, side, side])                    // [B, L, h, w]
        let images = VAETensor(values: (0..<(batch * config.inChannels * imageSize * imageSize)).map { _ in Float(random.uniform() * 2 - 1) },
                               shape: [batch, config.inChannels, imageSize, imageSize])              // [B, 3, H, W]

        let separate = resetPeak()
        var decodeSeconds = Double.infinity
        for round in 0..<repeats {
            let start = now()
            let decoded = try vae.decode(z: latents)
            decodeSeconds = min(decodeSeconds, now() - start)
            precondition(decoded.values.allSatisfy(\.isFinite), "non-finite decoder output")
            log("decode round \(round + 1)/\(repeats): \(now() - start) s")
        }
        let decodePeak = PeakMemory.residentHighWaterMark()
        _ = resetPeak()
        var encodeSeconds = Double.infinity
        for round in 0..<repeats {
            let start = now()
            let posterior = try vae.encode(images: images)
            encodeSeconds = min(encodeSeconds, now() - start)
            precondition(posterior.moments.values.allSatisfy(\.isFinite), "non-finite encoder output")
            log("encode round \(round + 1)/\(repeats): \(now() - start) s")
        }
        let encodePeak = PeakMemory.residentHighWaterMark()
        return VAEBenchmarkReport(threads: threads, config: config, batch: batch, imageSize: imageSize,
                                  decodeSeconds: decodeSeconds, encodeSeconds: encodeSeconds,
                                  residentAfterWeights: residentAfterWeights, decodePeakResident: decodePeak,
                                  encodePeakResident: encodePeak, peaksSeparate: separate)
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    /// Resets VmHWM to the current RSS (Linux: "5" to /proc/self/clear_refs). False when not possible.
    static func resetPeak() -> Bool {
        guard let file = fopen("/proc/self/clear_refs", "w") else { return false }
        let written = fputs("5", file) >= 0
        return fclose(file) == 0 && written
    }

    /// VmRSS from /proc/self/status, bytes; 0 when unavailable.
    static func currentResident() -> Int {
        guard let file = fopen("/proc/self/status", "r") else { return 0 }
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 256)
        while fgets(&line, Int32(line.count), file) != nil {
            let text = line.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            if text.hasPrefix("VmRSS:") { return (Int(text.filter(\.isNumber)) ?? 0) * 1024 }
        }
        return 0
    }
}
