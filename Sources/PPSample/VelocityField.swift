import PPFileIO
import PPTensor

/// Model evaluations spent by a sampler (one evaluation = one sample through the network once), and the
/// unconditional passes guidance did not need because the level's scale was 1.
public struct EvaluationCount: Equatable, Sendable {
    public var evaluations = 0
    public var savedEvaluations = 0
    /// Calls of the velocity field (one per solver stage).
    public var fieldCalls = 0

    public init(evaluations: Int = 0, savedEvaluations: Int = 0, fieldCalls: Int = 0) {
        self.evaluations = evaluations
        self.savedEvaluations = savedEvaluations
        self.fieldCalls = fieldCalls
    }
}

/// A flow-matching velocity field in the SiT convention (t = 0 noise, t = 1 data): what the ODE solvers
/// integrate. Implementations are not thread-safe (models reuse scratch buffers).
public protocol VelocityField: AnyObject {
    /// Latent channels C of x and of the returned velocity.
    var channels: Int { get }
    /// Evaluations so far.
    var count: EvaluationCount { get }
    /// x [B, C, S, S], one time t for the whole batch, labels y [B] -> velocity [B, C, S, S].
    func velocity(x: [Float], t: Float, labels: [Int32], batch: Int) throws -> [Float]
}

/// A velocity field given by a closure (tests, analytic fields). Every call counts `batch` evaluations.
public final class ClosureVelocityField: VelocityField {
    public let channels: Int
    public private(set) var count = EvaluationCount()
    private let body: (_ x: [Float], _ t: Float, _ labels: [Int32], _ batch: Int) throws -> [Float]

    public init(channels: Int, _ body: @escaping (_ x: [Float], _ t: Float, _ labels: [Int32], _ batch: Int) throws -> [Float]) {
        self.channels = channels
        self.body = body
    }

    public func velocity(x: [Float], t: Float, labels: [Int32], batch: Int) throws -> [Float] {
        let v = try body(x, t, labels, batch)
        guard v.count == x.count else {
            throw PPError(.mismatch, "velocity field returned \(v.count) values for an input of \(x.count)")
        }
        count.evaluations += batch
        count.fieldCalls += 1
        return v
    }
}
