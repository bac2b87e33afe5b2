import PPFileIO
import PPJSON
import PPTensor

/// Loss curves of a run as SVG pictures, one per level: the training loss (averaged over buckets of
/// steps) as a line and the validation loss as dots, from metrics.jsonl.
public enum LossCurve {
    public struct Series {
        public var training: [(step: Int, loss: Double)] = []
        public var validation: [(step: Int, loss: Double)] = []
    }

    /// Per-level series read from a metrics log.
    public static func read(metrics path: String, levels: Int) throws -> [Series] {
        var series = [Series](repeating: Series(), count: levels)
        for line in try MetricsLog.readLines(path) {
            let value = try JSON.parse(line, origin: path)
            guard let step = value["step"]?.intValue.map({ Int($0) }) else { continue }
            if let losses = value["loss_level"]?.arrayValue {
                for (l, v) in losses.enumerated() where l < levels { if let d = v.doubleValue { series[l].training.append((step, d)) } }
            }
            if let losses = value["validation_level"]?.arrayValue {
                for (l, v) in losses.enumerated() where l < levels { if let d = v.doubleValue { series[l].validation.append((step, d)) } }
            }
        }
        return series
    }

    /// One SVG picture (600×360) of a level's curves.
    public static func svg(_ s: Series, title: String) -> String {
        let width = 600.0, height = 360.0, left = 60.0, right = 20.0, top = 30.0, bottom = 40.0
        // Bucket the training loss into at most 200 points so the picture stays small and readable.
        var line: [(Double, Double)] = []
        let bucket = max(1, s.training.count / 200)
        var i = 0
        while i < s.training.count {
            let chunk = s.training[i..<min(i + bucket, s.training.count)]
            line.append((Double(chunk.last!.step), chunk.map(\.loss).reduce(0, +) / Double(chunk.count)))
            i += bucket
        }
        let points = line + s.validation.map { (Double($0.step), $0.loss) }
        let maxStep = max(1, points.map(\.0).max() ?? 1)
        let values = points.map(\.1).filter(\.isFinite)
        let lo = 0.0, hi = max(1e-12, (values.max() ?? 1) * 1.05)
        func x(_ step: Double) -> Double { left + (width - left - right) * step / maxStep }
        func y(_ v: Double) -> Double { top + (height - top - bottom) * (1 - (v - lo) / (hi - lo)) }
        func f(_ v: Double) -> String { Format3.fixed(v) }
        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        out += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        out += "<text x=\"\(f(left))\" y=\"18\" font-size=\"14\">\(title)</text>\n"
        out += "<line x1=\"\(f(left))\" y1=\"\(f(height - bottom))\" x2=\"\(f(width - right))\" y2=\"\(f(height - bottom))\" stroke=\"black\"/>\n"
        out += "<line x1=\"\(f(left))\" y1=\"\(f(top))\" x2=\"\(f(left))\" y2=\"\(f(height - bottom))\" stroke=\"black\"/>\n"
        for k in 0...4 {
            let v = lo + (hi - lo) * Double(k) / 4
            out += "<text x=\"\(f(left - 6))\" y=\"\(f(y(v) + 4))\" text-anchor=\"end\">\(Format3.fixed(v))</text>\n"
            let step = maxStep * Double(k) / 4
            out += "<text x=\"\(f(x(step)))\" y=\"\(f(height - bottom + 16))\" text-anchor=\"middle\">\(Int(step.rounded()))</text>\n"
        }
        out += "<text x=\"\(f((left + width - right) / 2))\" y=\"\(f(height - 6))\" text-anchor=\"middle\">step</text>\n"
        if !line.isEmpty {
            out += "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\""
                + line.filter { $0.1.isFinite }.map { "\(f(x($0.0))),\(f(y($0.1)))" }.joined(separator: " ") + "\"/>\n"
        }
        for p in s.validation where p.loss.isFinite {
            out += "<circle cx=\"\(f(x(Double(p.step))))\" cy=\"\(f(y(p.loss)))\" r=\"4\" fill=\"#d62728\"/>\n"
        }
        out += "<text x=\"\(f(width - right - 150))\" y=\"\(f(top + 12))\" fill=\"#1f77b4\">training loss</text>\n"
        out += "<text x=\"\(f(width - right - 150))\" y=\"\(f(top + 28))\" fill=\"#d62728\">validation (EMA)</text>\n"
        out += "</svg>\n"
        return out
    }

    /// Writes loss-level-L.svg for every level into `folder`; returns the paths.
    @discardableResult
    public static func write(metrics: String, levels: Int, into folder: String) throws -> [String] {
        let all = try read(metrics: metrics, levels: levels)
        return try all.enumerated().map { l, s in
            let path = "\(folder)/loss-level-\(l).svg"
            try FileOutput.writeFile(path, bytes: Array(svg(s, title: "level \(l) loss").utf8))
            return path
        }
    }
}

/// Three significant decimals without Foundation.
enum Format3 {
    static func fixed(_ v: Double) -> String {
        guard v.isFinite else { return "0" }
        let scaled = Int((abs(v) * 1000).rounded())
        let frac = String(scaled % 1000)
        return (v < 0 && scaled != 0 ? "-" : "") + "\(scaled / 1000)." + String(repeating: "0", count: 3 - frac.count) + frac
    }
}
