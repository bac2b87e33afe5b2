import PPFileIO
import PPKernels
import PPTensor

/// Named views into one flat Float buffer, in `parameterShapes` order: forward, backward, optimizer
/// moments and writers all share this layout.
public final class ParameterLayout: Sendable {
    public let names: [String]
    public let offsets: [Int]
    public let shapes: [[Int]]
    public let totalCount: Int
    private let index: [String: Int]

    public init(shapes named: [(name: String, shape: [Int])]) {
        var offset = 0
        var offsets: [Int] = []
        for (_, shape) in named { offsets.append(offset); offset += shape.reduce(1, *) }
        names = named.map(\.name)
        shapes = named.map(\.shape)
        self.offsets = offsets
        totalCount = offset
        index = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($1, $0) })
    }

    public convenience init(config: ModelConfig) { self.init(shapes: config.parameterShapes) }

    public func range(of name: String) -> Range<Int>? {
        guard let i = index[name] else { return nil }
        return offsets[i] ..< offsets[i] + shapes[i].reduce(1, *)
    }

    /// Index of a tensor the layout must hold (a programming error otherwise).
    func index(_ name: String) -> Int {
        guard let i = index[name] else { preconditionFailure("parameter \(name) is not in the layout") }
        return i
    }

    /// Offset of a tensor the layout must hold (a programming error otherwise).
    func offset(_ name: String) -> Int {
        guard let r = range(of: name) else { preconditionFailure("parameter \(name) is not in the layout") }
        return r.lowerBound
    }
}

/// `@unchecked Sendable` although `values` is mutable: parameters move between threads (a model built on
/// one thread, evaluated or trained on another, the kernels' workers reading disjoint rows), but they are
/// changed by one owner at a time (an initializer, a trainer's step) and never while a forward pass reads them.
public final class ModelParameters: @unchecked Sendable {
    public let config: ModelConfig
    public let layout: ParameterLayout
    /// Every parameter, [totalCount], in layout order.
    public var values: [Float]

    /// Zero-filled parameters (to be filled by an initializer or a trainer).
    public init(config: ModelConfig) {
        self.config = config
        layout = ParameterLayout(config: config)
        values = [Float](repeating: 0, count: layout.totalCount)
    }

    /// Copies `tensors` (any float dtype) into the flat buffer after checking the exact key set and
    /// every shape; the error names the key and both shapes.
    public init(config: ModelConfig, tensors: TensorDict) throws {
        self.config = config
        let layout = ParameterLayout(config: config)
        self.layout = layout
        try ModelParameters.check(tensors, layout: layout)
        var values = [Float](repeating: 0, count: layout.totalCount)
        values.withUnsafeMutableBufferPointer { buffer in
            for (i, name) in layout.names.enumerated() {
                let count = layout.shapes[i].reduce(1, *)
                tensors[name]!.writeFloats(into: UnsafeMutableBufferPointer(rebasing: buffer[layout.offsets[i] ..< layout.offsets[i] + count]))
            }
        }
        self.values = values
    }

    /// Checks that `tensors` holds exactly the layout's keys, each with its shape and a float dtype.
    static func check(_ tensors: TensorDict, layout: ParameterLayout) throws {
        let expected = Set(layout.names)
        if let unexpected = tensors.names.first(where: { !expected.contains($0) }) {
            let more = tensors.names.filter { !expected.contains($0) }.count - 1
            throw PPError(.badInput, entry: unexpected, "unexpected tensor for this model configuration" + (more > 0 ? " (and \(more) more)" : ""))
        }
        if let missing = layout.names.first(where: { !tensors.contains($0) }) {
            let more = layout.names.filter { !tensors.contains($0) }.count - 1
            throw PPError(.badInput, entry: missing, "missing from the checkpoint" + (more > 0 ? " (and \(more) more)" : ""))
        }
        for (i, name) in layout.names.enumerated() {
            let tensor = tensors[name]!
            guard tensor.shape == layout.shapes[i] else {
                throw PPError(.badInput, entry: name, "shape \(tensor.shape), but the model expects \(layout.shapes[i])")
            }
            guard tensor.dtype.isFloatingPoint else {
                throw PPError(.badInput, entry: name, "dtype \(tensor.dtype.shortName), expected a floating-point tensor")
            }
        }
    }

    /// The parameters as official-named tensors, in state_dict order.
    public func tensors(dtype: DType = .f32) -> TensorDict {
        var dict = TensorDict()
        for (i, name) in layout.names.enumerated() {
            let count = layout.shapes[i].reduce(1, *)
            dict[name] = TensorView(floats: Array(values[layout.offsets[i] ..< layout.offsets[i] + count]), shape: layout.shapes[i], dtype: dtype)
        }
        return dict
    }

    /// The fixed sin-cos table of `level` for a latent of side `latentSize`, [tokens, D]: what the official
    /// code stores in `pos_embed` / `pos_embed.{level}` (coarse levels on the strided grid).
    public static func positionTable(config: ModelConfig, level: Int, latentSize: Int? = nil) -> [Float] {
        let grid = config.grid(level: level, latentSize: latentSize ?? config.inputSize)
        let strides: (row: Int, col: Int)
        switch config.levelLayouts[level] {
        case .square: strides = (2, 2)
        case .width: strides = (1, 2)
        case .full: strides = (1, 1)
        }
        return Kernels.sinCosPositionTable(dim: config.hiddenSize, rows: grid.rows, cols: grid.cols, rowStride: strides.row, colStride: strides.col)
    }
}

/// Read-only weights for inference, one float32 pointer per tensor of the layout. Built from checkpoint
/// tensors, a float32, contiguous, aligned tensor is used where it lies (a memory-mapped file: nothing is
/// copied, and converted models share their source's unchanged tensors); any other tensor (f16, bf16,
/// strided) is converted into a buffer of its own. Built from `ModelParameters`, it reads their flat buffer.
/// `@unchecked Sendable`: the pointers are immutable after init and only read (by any number of threads);
/// the buffers they point into are kept alive by `views`, `flat` or owned (`converted`, freed in deinit).
public final class ModelWeights: @unchecked Sendable {
    public let config: ModelConfig
    public let layout: ParameterLayout
    /// The flat parameters read, when built from them (their buffer can move, so pointers are taken per use).
    private let flat: ModelParameters?
    /// [tensors] pointers into `views`' storage or `converted`, when built from tensors.
    private let pointers: [UnsafePointer<Float>]
    private let views: [TensorView]
    private let converted: [UnsafeMutablePointer<Float>]
    /// Bytes converted into buffers of the toolkit's own (the rest is read in place).
    public let convertedBytes: Int

    public init(parameters: ModelParameters) {
        config = parameters.config
        layout = parameters.layout
        flat = parameters
        pointers = []; views = []; converted = []
        convertedBytes = 0
    }

    /// Checks the exact key set, shapes and dtypes (as `ModelParameters`), then points at the tensors.
    public init(config: ModelConfig, tensors: TensorDict) throws {
        self.config = config
        let layout = ParameterLayout(config: config)
        self.layout = layout
        try ModelParameters.check(tensors, layout: layout)
        flat = nil
        var pointers: [UnsafePointer<Float>] = [], views: [TensorView] = [], converted: [UnsafeMutablePointer<Float>] = []
        var convertedBytes = 0
        for name in layout.names {
            let tensor = tensors[name]!
            if tensor.dtype == .f32, let bytes = tensor.contiguousBytes, let base = bytes.baseAddress,
               Int(bitPattern: base) % MemoryLayout<Float>.alignment == 0 {
                pointers.append(base.assumingMemoryBound(to: Float.self))
                views.append(tensor)
            } else {
                let buffer = UnsafeMutablePointer<Float>.allocate(capacity: max(1, tensor.elementCount))
                tensor.writeFloats(into: UnsafeMutableBufferPointer(start: buffer, count: tensor.elementCount))
                converted.append(buffer)
                pointers.append(UnsafePointer(buffer))
                convertedBytes += tensor.elementCount * 4
            }
        }
        self.pointers = pointers
        self.views = views
        self.converted = converted
        self.convertedBytes = convertedBytes
    }

    deinit { for buffer in converted { buffer.deallocate() } }

    /// Runs `body` with the table of weight pointers (valid only inside it).
    public func withTable<R>(_ body: (WeightTable) throws -> R) rethrows -> R {
        if let flat {
            return try flat.values.withUnsafeBufferPointer { try body(WeightTable(flat: $0.baseAddress!, layout: layout)) }
        }
        return try body(WeightTable(pointers: pointers))
    }

    /// A copy of one tensor's values in row-major order, nil for a name outside the layout.
    public func floats(_ name: String) -> [Float]? {
        guard let index = layout.names.firstIndex(of: name) else { return nil }
        let count = layout.shapes[index].reduce(1, *)
        return withTable { table in Array(UnsafeBufferPointer(start: table[index], count: count)) }
    }

    /// The weights as flat parameters: the ones it was built from, else a copy of the tensors (for code
    /// that changes or trains them).
    public func parameters() -> ModelParameters {
        if let flat { return flat }
        let copy = ModelParameters(config: config)
        copy.values.withUnsafeMutableBufferPointer { buffer in
            for (i, pointer) in pointers.enumerated() {
                let count = layout.shapes[i].reduce(1, *)
                (buffer.baseAddress! + layout.offsets[i]).update(from: pointer, count: count)
            }
        }
        return copy
    }
}
