import PPCheckpoint
import PPFileIO
import PPModel
import PPTensor

/// Classifier-free guidance: `uncond + s·(cond - uncond)` with one scale, or one per pyramid level.
/// Where a level's scale is 1 the unconditional pass is skipped.
public struct Guidance: Equatable, Sendable {
    public var scales: [Float]
    public var channels: GuidanceChannels

    public init(scales: [Float], channels: GuidanceChannels = .all) {
        self.scales = scales
        self.channels = channels
    }

    func check(levels: Int) throws {
        guard scales.count == 1 || scales.count == levels else {
            throw PPError(.usage, "\(scales.count) guidance scales for a model with \(levels) level(s): give one, or one per level")
        }
        guard scales.allSatisfy(\.isFinite) else { throw PPError(.usage, "guidance scales must be finite numbers") }
    }

    func scale(level: Int) -> Float { scales.count == 1 ? scales[0] : scales[level] }
}

public enum SampleFields {
    /// The velocity field of `model` for its objective; `unknown` is refused with how to record it.
    public static func field(model: Model, objective: Objective, guidance: Guidance?,
                             schedule: DDPMSchedule = .dit) throws -> VelocityField {
        switch objective {
        case .velocity: return try VelocityModelField(model: model, guidance: guidance)
        case .epsilon: return try epsilonField(model: model, guidance: guidance, schedule: schedule)
        case .unknown:
            throw PPError(.usage, "the checkpoint does not record whether the model predicts epsilon (DiT) or velocity (SiT/PPFlow); "
                + "record it with `ppconvert from-dit --objective epsilon|velocity` (DiT files are epsilon, SiT files velocity)")
        }
    }

    /// A DDPM epsilon model (DiT, or a pyramid model still carrying DiT's objective) as a flow, through
    /// `EpsilonFlowField`'s change of variables. The model gets the fractional DDPM step as its time; a
    /// pyramid level is chosen from the flow time (the thresholds are flow times).
    public static func epsilonField(model: Model, guidance: Guidance?, schedule: DDPMSchedule = .dit) throws -> EpsilonFlowField {
        try guidance?.check(levels: model.config.levels)
        let c = model.config.inChannels, outChannels = model.config.outChannels
        let null = Int32(model.config.numClasses)
        return EpsilonFlowField(channels: c, schedule: schedule) { state, step, flowTime, labels, batch in
            let level = model.level(forTime: flowTime)
            let steps = [Float](repeating: step, count: batch)
            let scale = guidance?.scale(level: level) ?? 1
            let plane = state.count / (batch * c)
            if scale == 1 {
                let out = model.forward(x: state, t: steps, y: labels, batch: batch, level: level)  // [B, Cout, S, S]
                return (predictionChannels(out, batch: batch, channels: c, outChannels: outChannels, plane: plane),
                        batch, guidance == nil ? 0 : batch)
            }
            // Conditional and unconditional halves in one call: [2B, C, S, S].
            let out = model.forward(x: state + state, t: steps + steps, y: labels + [Int32](repeating: null, count: batch),
                                    batch: 2 * batch, level: level)  // [2B, Cout, S, S]
            var epsilon = predictionChannels(out, batch: batch, channels: c, outChannels: outChannels, plane: plane)  // [B, C, S, S]
            let mixed = (guidance!.channels == .first3 ? min(3, c) : c) * plane
            for i in 0..<batch {
                let unconditional = (batch + i) * outChannels * plane
                for k in 0..<mixed {
                    let u = out[unconditional + k]
                    epsilon[i * c * plane + k] = u + scale * (epsilon[i * c * plane + k] - u)
                }
            }
            return (epsilon, 2 * batch, 0)
        }
    }

    /// The first C of Cout channels: [B, Cout, S, S] -> [B, C, S, S].
    static func predictionChannels(_ out: [Float], batch: Int, channels c: Int, outChannels: Int, plane: Int) -> [Float] {
        if c == outChannels { return out }
        var prediction = [Float](repeating: 0, count: batch * c * plane)  // [B, C, S, S]
        for i in 0..<batch {
            prediction[(i * c * plane)..<((i + 1) * c * plane)] = out[(i * outChannels * plane)..<(i * outChannels * plane + c * plane)]
        }
        return prediction
    }
}

/// A velocity model (SiT, PPFlow): the prediction channels of `Model.forward`, guided per level through
/// `Model.forwardWithGuidance` (which skips the unconditional pass where the scale is 1). A PPFlow model
/// picks its level from t at every evaluation.
public final class VelocityModelField: VelocityField {
    public let model: Model
    public let guidance: Guidance?
    public var channels: Int { model.config.inChannels }
    public private(set) var count = EvaluationCount()

    public init(model: Model, guidance: Guidance?) throws {
        try guidance?.check(levels: model.config.levels)
        self.model = model
        self.guidance = guidance
    }

    public func velocity(x: [Float], t: Float, labels: [Int32], batch: Int) throws -> [Float] {
        let c = model.config.inChannels
        guard batch > 0, labels.count == batch, x.count % (batch * c) == 0 else {
            throw PPError(.usage, "x has \(x.count) values for \(batch) samples of \(c) channels")
        }
        if let bad = labels.first(where: { $0 < 0 || Int($0) > model.config.numClasses }) {
            throw PPError(.usage, entry: "y", "label \(bad) outside 0...\(model.config.numClasses)")
        }
        let times = [Float](repeating: t, count: batch)
        let before = model.forwardCount
        let out: [Float]  // [B, Cout, S, S]
        if let guidance {
            out = model.forwardWithGuidance(x: x, t: times, y: labels, batch: batch, scales: guidance.scales, channels: guidance.channels)
            if guidance.scale(level: model.level(forTime: t)) == 1 { count.savedEvaluations += batch }
        } else {
            out = model.forward(x: x, t: times, y: labels, batch: batch)
        }
        count.evaluations += model.forwardCount - before
        count.fieldCalls += 1
        return SampleFields.predictionChannels(out, batch: batch, channels: c, outChannels: model.config.outChannels, plane: x.count / (batch * c))
    }
}
