import Foundation
import PPFileIO
import PPKernels
import PPSafetensors
import PPTensor

/// A small ReLU MLP classifier on flattened latents: input [C·H·W] -> hidden widths -> classes. Its last
/// hidden layer (after the ReLU) is the feature space of the toolkit's Fréchet distance.
public struct DigitsClassifier {
    /// [C, H, W] of one input.
    public let inputShape: [Int]
    /// Layer widths: input, hidden..., classes.
    public let widths: [Int]
    /// Every layer's weight [out, in] then bias [out], layer after layer.
    public var parameters: [Float]
    /// The safetensors metadata it was read with or will be written with (training facts).
    public var metadata: [(String, String)] = []

    public var classes: Int { widths.last! }
    public var featureDim: Int { widths[widths.count - 2] }
    public var inputSize: Int { widths[0] }
    var layerCount: Int { widths.count - 1 }

    public init(inputShape: [Int], hidden: [Int], classes: Int) {
        precondition(inputShape.count == 3 && !hidden.isEmpty && classes >= 2)
        self.inputShape = inputShape
        widths = [inputShape.reduce(1, *)] + hidden + [classes]
        parameters = [Float](repeating: 0, count: zip(widths, widths.dropFirst()).reduce(0) { $0 + $1.1 * $1.0 + $1.1 })
    }

    /// Flat offsets of layer l's weight [out, in] and bias [out].
    func offsets(layer l: Int) -> (weight: Int, bias: Int) {
        var offset = 0
        for k in 0..<l { offset += widths[k + 1] * widths[k] + widths[k + 1] }
        return (offset, offset + widths[l + 1] * widths[l])
    }

    /// Kaiming-uniform weights for ReLU (bound sqrt(6 / fan_in)), zero biases, from `seed`.
    public mutating func initialize(seed: UInt64) {
        var random = SeededRandom(seed: seed)
        for l in 0..<layerCount {
            let (w, b) = offsets(layer: l)
            let bound = (6.0 / Double(widths[l])).squareRoot()
            for i in w..<b { parameters[i] = Float((2 * random.uniform() - 1) * bound) }
            for i in b..<(b + widths[l + 1]) { parameters[i] = 0 }
        }
    }

    /// Activations of a forward pass over x [B, inputSize]: index 0 is the input, index l the output of
    /// layer l (after the ReLU for hidden layers; the last is the logits [B, classes]).
    func forwardActivations(_ x: [Float], batch: Int) -> [[Float]] {
        var activations = [x]
        parameters.withUnsafeBufferPointer { p in
            for l in 0..<layerCount {
                let (w, b) = offsets(layer: l)
                var out = [Float](repeating: 0, count: batch * widths[l + 1])  // [B, out]
                activations[l].withUnsafeBufferPointer { input in
                    out.withUnsafeMutableBufferPointer { o in
                        Kernels.linear(input: input.baseAddress!, weight: p.baseAddress! + w, bias: p.baseAddress! + b,
                                       output: o.baseAddress!, rows: batch, inFeatures: widths[l], outFeatures: widths[l + 1])
                    }
                }
                if l < layerCount - 1 { for i in out.indices where out[i] < 0 { out[i] = 0 } }
                activations.append(out)
            }
        }
        return activations
    }

    /// x [B, inputSize] -> features [B, featureDim] (the last hidden layer), computed in chunks.
    public func features(_ x: [Float], batch: Int) -> [Float] {
        precondition(x.count == batch * inputSize)
        var result = [Float](); result.reserveCapacity(batch * featureDim)
        let chunk = 256
        for start in stride(from: 0, to: batch, by: chunk) {
            let n = min(chunk, batch - start)
            let acts = forwardActivations(Array(x[(start * inputSize)..<((start + n) * inputSize)]), batch: n)
            result += acts[layerCount - 1]
        }
        return result
    }

    /// x [B, inputSize] -> predicted class [B] (arg max of the logits; the first on ties).
    public func predict(_ x: [Float], batch: Int) -> [Int] {
        var result = [Int](); result.reserveCapacity(batch)
        let chunk = 256
        for start in stride(from: 0, to: batch, by: chunk) {
            let n = min(chunk, batch - start)
            let logits = forwardActivations(Array(x[(start * inputSize)..<((start + n) * inputSize)]), batch: n)[layerCount]
            for r in 0..<n {
                var best = 0
                for k in 1..<classes where logits[r * classes + k] > logits[r * classes + best] { best = k }
                result.append(best)
            }
        }
        return result
    }

    /// Mean softmax cross-entropy of x [B, inputSize] against labels [B], and its gradient with respect to
    /// every parameter (in the flat layout), by hand-written backward through the MLP.
    func lossAndGradient(_ x: [Float], labels: [Int], batch: Int) -> (loss: Float, gradient: [Float]) {
        let acts = forwardActivations(x, batch: batch)
        let k = classes
        var delta = [Float](repeating: 0, count: batch * k)   // [B, classes] dLoss/dlogits
        var loss: Float = 0
        let logits = acts[layerCount]
        for r in 0..<batch {
            var top = logits[r * k]
            for j in 1..<k { top = max(top, logits[r * k + j]) }
            var sum: Float = 0
            for j in 0..<k { let e = expf(logits[r * k + j] - top); delta[r * k + j] = e; sum += e }
            for j in 0..<k { delta[r * k + j] /= sum }
            loss -= logf(max(delta[r * k + labels[r]], 1e-30))
            delta[r * k + labels[r]] -= 1
            for j in 0..<k { delta[r * k + j] /= Float(batch) }
        }
        var gradient = [Float](repeating: 0, count: parameters.count)
        parameters.withUnsafeBufferPointer { p in
            gradient.withUnsafeMutableBufferPointer { g in
                for l in stride(from: layerCount - 1, through: 0, by: -1) {
                    let (w, b) = offsets(layer: l)
                    var dInput = [Float](repeating: 0, count: l > 0 ? batch * widths[l] : 0)  // [B, in]
                    acts[l].withUnsafeBufferPointer { input in
                        delta.withUnsafeBufferPointer { d in
                            dInput.withUnsafeMutableBufferPointer { di in
                                Backward.linear(input: input.baseAddress!, weight: p.baseAddress! + w, dOutput: d.baseAddress!,
                                                dInput: l > 0 ? di.baseAddress! : nil, dWeight: g.baseAddress! + w,
                                                dBias: g.baseAddress! + b, rows: batch, inFeatures: widths[l], outFeatures: widths[l + 1])
                            }
                        }
                    }
                    if l > 0 {
                        // Through the ReLU: its output acts[l] is zero exactly where the gradient stops.
                        let a = acts[l]
                        for i in dInput.indices where a[i] <= 0 { dInput[i] = 0 }
                        delta = dInput
                    }
                }
            }
        }
        return (loss / Float(batch), gradient)
    }
}

// MARK: File format

extension DigitsClassifier {
    public static let formatName = "ppflow-digits-classifier"

    /// Tensors `layers.L.weight` [out, in] and `layers.L.bias` [out], metadata `format`, `input_shape`
    /// ("1,16,16") and the training facts.
    public func write(to path: String) throws {
        var tensors = TensorDict()
        for l in 0..<layerCount {
            let (w, b) = offsets(layer: l)
            tensors["layers.\(l).weight"] = TensorView(floats: Array(parameters[w..<b]), shape: [widths[l + 1], widths[l]])
            tensors["layers.\(l).bias"] = TensorView(floats: Array(parameters[b..<(b + widths[l + 1])]), shape: [widths[l + 1]])
        }
        let fixed: [(String, String)] = [("format", Self.formatName), ("input_shape", inputShape.map(String.init).joined(separator: ","))]
        try SafetensorsWriter.write(tensors, metadata: fixed + metadata.filter { key, _ in !fixed.contains { $0.0 == key } }, to: path)
    }

    public static func read(_ path: String) throws -> DigitsClassifier {
        let file = try SafetensorsFile.open(path)
        let meta = Dictionary(file.metadata, uniquingKeysWith: { a, _ in a })
        guard meta["format"] == formatName else {
            throw PPError.badInput(path, "not a digits classifier (metadata format is \(meta["format"].map { "\"\($0)\"" } ?? "missing"), expected \"\(formatName)\"); train one with `ppsample train-classifier`")
        }
        let shape = (meta["input_shape"] ?? "").split(separator: ",").compactMap { Int($0) }
        guard shape.count == 3, shape.allSatisfy({ $0 > 0 }) else { throw PPError.badInput(path, entry: "input_shape", "expected C,H,W") }
        var widths = [shape.reduce(1, *)]
        var l = 0
        while let weight = file.tensors["layers.\(l).weight"] {
            guard weight.rank == 2, weight.shape[1] == widths.last!, weight.dtype.isFloatingPoint else {
                throw PPError.badInput(path, entry: "layers.\(l).weight", "shape \(weight.shape), expected [out, \(widths.last!)]")
            }
            widths.append(weight.shape[0])
            l += 1
        }
        guard widths.count >= 3 else { throw PPError.badInput(path, "needs at least one hidden layer (layers.0.weight, layers.1.weight)") }
        var classifier = DigitsClassifier(inputShape: shape, hidden: Array(widths[1..<(widths.count - 1)]), classes: widths.last!)
        for l in 0..<classifier.layerCount {
            let (w, b) = classifier.offsets(layer: l)
            guard let bias = file.tensors["layers.\(l).bias"], bias.shape == [widths[l + 1]], bias.dtype.isFloatingPoint else {
                throw PPError.badInput(path, entry: "layers.\(l).bias", "missing or not [\(widths[l + 1])]")
            }
            classifier.parameters.replaceSubrange(w..<b, with: file.tensors["layers.\(l).weight"]!.floats())
            classifier.parameters.replaceSubrange(b..<(b + widths[l + 1]), with: bias.floats())
        }
        classifier.metadata = file.metadata.filter { $0.0 != "format" && $0.0 != "input_shape" }
        return classifier
    }
}
