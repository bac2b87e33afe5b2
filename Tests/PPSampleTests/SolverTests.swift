import XCTest
@testable import PPSample

final class SolverTests: XCTestCase {
    func testTimeGridMatchesLinspaceAndKeepsTheLevelBoundaryExact() {
        for points in [2, 7, 9, 50, 251] {
            let grid = FixedGridSolver.timeGrid(points: points)
            XCTAssertEqual(grid.count, points)
            XCTAssertEqual(grid.first, 0)
            XCTAssertEqual(grid.last, 1)
            for (i, t) in grid.enumerated() {
                XCTAssertEqual(Double(t), Double(i) / Double(points - 1), accuracy: 1.2e-7, "point \(i) of \(points)")
            }
        }
        // PPFlow picks level 0 for t <= 0.5: the 7- and 9-point grids must hit 0.5 exactly, not 0.50000006.
        XCTAssertEqual(FixedGridSolver.timeGrid(points: 7)[3], 0.5)
        XCTAssertEqual(FixedGridSolver.timeGrid(points: 9)[4], 0.5)
        XCTAssertEqual(FixedGridSolver.timeGrid(points: 9)[6], 0.75)
    }

    func testEulerOnALinearFieldIsTheExplicitProduct() throws {
        // dx/dt = a·x: Euler multiplies by (1 + a·dt) per step.
        let a: Float = -1.5
        var times: [Float] = []
        let field = ClosureVelocityField(channels: 1) { x, t, _, _ in times.append(t); return x.map { a * $0 } }
        let x0: [Float] = [1, -2, 0.5, 3]
        let out = try FixedGridSolver.integrate(field, noise: x0, labels: [0, 0, 0, 0], batch: 4, method: .euler, points: 9)
        let factor = pow(1 + Double(a) / 8, 8)
        assertClose(out, x0.map { Float(Double($0) * factor) }, tolerance: 1e-6, "euler")
        XCTAssertEqual(times, Array(FixedGridSolver.timeGrid(points: 9).dropLast()))
        XCTAssertEqual(field.count.fieldCalls, 8)
        XCTAssertEqual(field.count.evaluations, 32)
    }

    func testHeunOnALinearFieldIsTheSecondOrderTaylorProduct() throws {
        let a: Float = 2
        let field = ClosureVelocityField(channels: 1) { x, _, _, _ in x.map { a * $0 } }
        let x0: [Float] = [1, -0.25]
        let out = try FixedGridSolver.integrate(field, noise: x0, labels: [1, 2], batch: 2, method: .heun, points: 7)
        let h = Double(a) / 6
        let factor = pow(1 + h + h * h / 2, 6)
        assertClose(out, x0.map { Float(Double($0) * factor) }, tolerance: 1e-6, "heun")
        XCTAssertEqual(field.count.fieldCalls, 12)
    }

    func testHeunEvaluatesTheSecondStageAtTheNextGridPoint() throws {
        // dx/dt = 3t²: Heun is the trapezoid rule, 1 + 1/(2n²) over n intervals, only if the stages sit at
        // (t0, t1).
        var times: [Float] = []
        let field = ClosureVelocityField(channels: 1) { x, t, _, _ in times.append(t); return x.map { _ in 3 * t * t } }
        let out = try FixedGridSolver.integrate(field, noise: [0], labels: [0], batch: 1, method: .heun, points: 5)
        XCTAssertEqual(Double(out[0]), 1 + 1.0 / 32, accuracy: 1e-6)
        let grid = FixedGridSolver.timeGrid(points: 5)
        XCTAssertEqual(times, [grid[0], grid[1], grid[1], grid[2], grid[2], grid[3], grid[3], grid[4]])
    }

    func testMethodNamesAndBadArguments() {
        XCTAssertEqual(ODEMethod(name: "heun2"), .heun)
        XCTAssertEqual(ODEMethod(name: "Euler"), .euler)
        XCTAssertNil(ODEMethod(name: "dopri5"))
        let field = ClosureVelocityField(channels: 1) { x, _, _, _ in x }
        XCTAssertThrowsError(try FixedGridSolver.integrate(field, noise: [0], labels: [0], batch: 1, method: .euler, points: 1))
        XCTAssertThrowsError(try FixedGridSolver.integrate(field, noise: [0, 0], labels: [0], batch: 2, method: .euler, points: 3))
        let wrongSize = ClosureVelocityField(channels: 1) { _, _, _, _ in [1, 2, 3] }
        XCTAssertThrowsError(try FixedGridSolver.integrate(wrongSize, noise: [0], labels: [0], batch: 1, method: .euler, points: 3))
    }
}
