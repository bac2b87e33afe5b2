import PPFileIO
import PPKernels
import PPTensor
import PPModel

/// One training batch in the caller's sample order.
public struct TrainBatch {
    public var x1: [Float]   // [B, C, S, S] data
    public var x0: [Float]   // [B, C, S, S] noise
    public var t: [Float]    // [B] flow time, 0 = noise, 1 = data
    public var y: [Int]      // [B] class labels (K = null class)
    public var count: Int { t.count }

    public init(x1: [Float], x0: [Float], t: [Float], y: [Int]) {
        self.x1 = x1; self.x0 = x0; self.t = t; self.y = y
    }
}

/// A SiT / PPFlow model being trained: the flow-matching loss of the official PPFlow trainer on the one
/// network definition (`PPModel.Network`, whose forward keeps what its backward twin needs), with the
/// parameters and their gradients in flat buffers.
public final class TrainingModel {
    public let config: TrainConfig
    public let layout: ParameterLayout
    /// [P] parameters in `layout` order.
    public var parameters: [Float]
    /// [P] gradients of the last `forwardBackward` (frozen tensors stay zero).
    public var gradients: [Float]
    /// Floating-point operations of the matrix products of the last forward + backward (2·m·n·k each).
    public var matmulFlops: Double { network.matmulFlops }
    /// Which tokens attend to each other (per sample unless parity with the official trainer is wanted).
    public var attentionScope: AttentionScope = .perSample
    private let network: Network

    public init(config: TrainConfig, parameters: [Float]) {
        self.config = config
        layout = ParameterLayout(config: config.model)
        precondition(parameters.count == layout.totalCount, "parameter buffer does not match the layout")
        self.parameters = parameters
        gradients = [Float](repeating: 0, count: layout.totalCount)
        network = Network(config: config.model, layout: layout)
    }

    /// Checks the exact key set and every shape (ModelParameters) and copies the tensors in.
    public convenience init(config: TrainConfig, tensors: TensorDict, origin: String = "model") throws {
        let values: [Float]
        do { values = try ModelParameters(config: config.model, tensors: tensors).values } catch let error as PPError { throw error.inFile(origin) }
        self.init(config: config, parameters: values)
    }

    /// Trains the values of PPModel parameters (same flat layout); heads and sizes come from their config.
    public convenience init(model: ModelParameters) {
        self.init(config: TrainConfig(model: model.config), parameters: model.values)
    }

    /// Bytes of activation memory: the network's arena, sized for the largest level group so far (each
    /// group runs forward, loss and backward before the next, so only one group's activations live).
    public var activationBytes: Int { network.arenaBytes }

    /// Forward, loss and backward for one batch; gradients land in `gradients` (overwritten).
    /// Returns the mean loss and the per-sample losses in the caller's sample order.
    public func forwardBackward(_ batch: TrainBatch) throws -> (loss: Float, perSample: [Float]) {
        let C = config.channels, S = config.side, B = batch.count, sampleSize = C * S * S
        guard B > 0, batch.x1.count == B * sampleSize, batch.x0.count == B * sampleSize, batch.y.count == B else {
            throw PPError(.usage, "training batch: x1, x0 must be [\(B), \(C), \(S), \(S)] and y [\(B)]")
        }
        for label in batch.y where label < 0 || label > config.classes {
            throw PPError(.usage, "training batch: label \(label) is outside 0...\(config.classes)")
        }
        let levels = batch.t.map { config.level(forTime: $0) }
        let members = (0..<config.levels).map { level in (0..<B).filter { levels[$0] == level } }
        let packings = try members.enumerated().map { level, samples in
            attentionScope == .officialPacking ? try network.officialPacking(geometry: config.geometry(level: level), count: samples.count) : nil
        }
        network.resetFlops()
        var losses = [Double](repeating: 0, count: B)
        gradients.withUnsafeMutableBufferPointer { G in G.update(repeating: 0) }
        for (level, samples) in members.enumerated() where !samples.isEmpty {
            let g = config.geometry(level: level), n = samples.count
            let levelSize = g.channels * g.height * g.width, outSize = g.outputChannels * g.height * g.width
            // x_t = t·x1 + (1-t)·x0 and the target x1 - x0, [n, C, S, S], then in the level's layout [n, Cl, Hl, Wl].
            var interpolated = [Float](repeating: 0, count: n * sampleSize), velocity = interpolated
            for (i, source) in samples.enumerated() {
                let t = batch.t[source], base = source * sampleSize
                for e in 0..<sampleSize {
                    let a = batch.x1[base + e], b = batch.x0[base + e]
                    interpolated[i * sampleSize + e] = t * a + (1 - t) * b
                    velocity[i * sampleSize + e] = a - b
                }
            }
            var input = [Float](repeating: 0, count: n * levelSize), target = input
            interpolated.withUnsafeBufferPointer { g.rearrange($0.baseAddress!, into: &input, batch: n) }
            velocity.withUnsafeBufferPointer { g.rearrange($0.baseAddress!, into: &target, batch: n) }
            var image = [Float](repeating: 0, count: n * outSize)       // [n, Cout_l, Hl, Wl]
            var dImage = [Float](repeating: 0, count: n * outSize)      // [n, Cout_l, Hl, Wl]
            let times = samples.map { batch.t[$0] }
            let pass = network.plan(geometry: g, labels: samples.map { batch.y[$0] }, keepActivations: true, packing: packings[level])
            parameters.withUnsafeBufferPointer { flat in
                let P = WeightTable(flat: flat.baseAddress!, layout: layout)
                times.withUnsafeBufferPointer { network.forward(pass, input: input, t: $0.baseAddress!, weights: P, image: &image) }
                // Per-sample mean squared error of the prediction channels against x1 - x0 (the loss is the
                // mean over all B samples), and its gradient.
                let scale = Float(2.0 / (Double(levelSize) * Double(B)))
                for i in 0..<n {
                    var sum = 0.0
                    for e in 0..<levelSize {
                        let d = image[i * outSize + e] - target[i * levelSize + e]
                        sum += Double(d) * Double(d)
                        dImage[i * outSize + e] = scale * d
                    }
                    losses[samples[i]] = sum / Double(levelSize)
                }
                gradients.withUnsafeMutableBufferPointer { G in
                    network.backward(pass, dImage: dImage, weights: P, gradients: G.baseAddress!)
                }
            }
        }
        // The mean in level order, as the samples were computed.
        let mean = members.joined().reduce(0.0) { $0 + losses[$1] } / Double(B)
        return (Float(mean), losses.map { Float($0) })
    }
}
