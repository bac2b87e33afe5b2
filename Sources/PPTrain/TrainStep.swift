import PPTensor
import PPModel

/// What one training step produced, in the meaning of the official fixture `ref_ppf*_train_step`.
public struct TrainStepResult {
    public var loss: Float
    /// [B] per-sample mean squared errors, in the batch's sample order.
    public var perSampleLoss: [Float]
    /// [B] the pyramid level each sample was trained at (`ModelConfig.level(forTime:)`).
    public var levels: [Int]
    /// "grad.<key>" for every trainable tensor.
    public var gradients: TensorDict
    /// "after.<key>": every tensor after the AdamW step.
    public var after: TensorDict
    /// "ema.<key>": decay·before + (1 - decay)·after, every tensor.
    public var ema: TensorDict
    /// Global gradient norm before clipping.
    public var gradientNorm: Double

    /// All of it as one tensor dictionary: `loss` [1], `per_sample_loss` [B], `level` [B], grad.*, after.*, ema.*.
    public var tensors: TensorDict {
        var all = TensorDict()
        all["loss"] = TensorView(floats: [loss], shape: [1])
        all["per_sample_loss"] = TensorView(floats: perSampleLoss, shape: [perSampleLoss.count])
        all["level"] = TensorView(int64s: levels.map { Int64($0) }, shape: [levels.count])
        for dict in [gradients, after, ema] { for (name, t) in dict.items { all[name] = t } }
        return all
    }
}

/// One fine-tuning step from a checkpoint's tensors: the `ppfinetune step` engine.
public enum TrainStep {
    /// Runs forward, loss, backward, AdamW (step 1, fresh moments) and EMA (started at the parameters
    /// before the step) on one batch. x1, x0: [B, C, S, S]; t: [B]; y: [B].
    public static func run(tensors: TensorDict, config: TrainConfig, x1: [Float], x0: [Float], t: [Float], y: [Int],
                           optimizer options: AdamWOptions, emaDecay: Float, attention: AttentionScope = .perSample,
                           origin: String = "model") throws -> TrainStepResult {
        try run(model: TrainingModel(config: config, tensors: tensors, origin: origin), x1: x1, x0: x0, t: t, y: y,
                optimizer: options, emaDecay: emaDecay, attention: attention)
    }

    /// The same step on a loaded model (any checkpoint ModelLoader reads).
    public static func run(parameters: ModelParameters, x1: [Float], x0: [Float], t: [Float], y: [Int],
                           optimizer options: AdamWOptions, emaDecay: Float, attention: AttentionScope = .perSample) throws -> TrainStepResult {
        try run(model: TrainingModel(model: parameters), x1: x1, x0: x0, t: t, y: y, optimizer: options, emaDecay: emaDecay, attention: attention)
    }

    private static func run(model: TrainingModel, x1: [Float], x0: [Float], t: [Float], y: [Int],
                            optimizer options: AdamWOptions, emaDecay: Float, attention: AttentionScope) throws -> TrainStepResult {
        model.attentionScope = attention
        let before = model.parameters
        let (loss, perSample) = try model.forwardBackward(TrainBatch(x1: x1, x0: x0, t: t, y: y))
        var optimizer = AdamW(options: options, parameterCount: model.layout.totalCount)
        let norm = optimizer.update(parameters: &model.parameters, gradients: &model.gradients, layout: model.layout)
        var ema = ExponentialMovingAverage(initial: before, decay: emaDecay)
        ema.update(with: model.parameters)
        return TrainStepResult(loss: loss, perSampleLoss: perSample, levels: t.map { model.config.level(forTime: $0) },
                               gradients: model.layout.tensors(model.gradients, prefix: "grad.", learnableOnly: true),
                               after: model.layout.tensors(model.parameters, prefix: "after."),
                               ema: model.layout.tensors(ema.values, prefix: "ema."),
                               gradientNorm: norm)
    }

    /// Convenience over tensor views (as read from a batch file): x1, x0 [B, C, S, S] float, t [B] float,
    /// y [B] integer; heads is not recoverable from the weights and must be given.
    public static func run(tensors: TensorDict, heads: Int, x1: TensorView, x0: TensorView, t: TensorView, y: TensorView,
                           optimizer options: AdamWOptions, emaDecay: Float, attention: AttentionScope = .perSample,
                           origin: String = "model") throws -> TrainStepResult {
        let config = try TrainConfig.infer(from: tensors, heads: heads, origin: origin)
        let labels = y.int64s().map { Int($0) }
        return try run(tensors: tensors, config: config, x1: x1.floats(), x0: x0.floats(), t: t.floats(), y: labels,
                       optimizer: options, emaDecay: emaDecay, attention: attention, origin: origin)
    }

    /// Writes a step's results as one safetensors file with keys `loss`, `per_sample_loss`, `grad.<key>`,
    /// `after.<key>`, `ema.<key>`.
    public static func write(_ result: TrainStepResult, to path: String) throws {
        try TensorFiles.writeSafetensors(result.tensors, to: path)
    }
}
