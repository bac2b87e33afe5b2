import PPTensor

/// A list, set or dict made by the unpickler. Classes, so that a container memoized and then mutated
/// (APPEND/SETITEM after BINPUT) is seen the same everywhere it is referenced, as in Python.
/// `@unchecked Sendable` (as are PickleDict and PickleObject), so that a parsed checkpoint can move between
/// threads: the unpickler fills the containers on the one thread it runs on, before it returns the value,
/// and the toolkit only reads them after that. Code that changes a shared list's `items` must not do so
/// while another thread reads it.
public final class PickleList: @unchecked Sendable {
    public var items: [PickleValue]
    /// Nesting depth including this container (bounded by the unpickler).
    var depth = 1
    init(_ items: [PickleValue] = []) { self.items = items }
}

/// `@unchecked Sendable`: filled by the unpickler before it returns, read only afterwards (see PickleList).
public final class PickleDict: @unchecked Sendable {
    /// Items in insertion order; keys may be strings, ints, tuples...
    public private(set) var items: [(key: PickleValue, value: PickleValue)]
    /// True for collections.OrderedDict (a plain dict otherwise).
    public let ordered: Bool
    var depth = 1
    /// Where each str/int/bool/None key sits in `items`, so that SETITEM is not a linear search
    /// (a hostile pickle with n keys would otherwise cost n^2/2 comparisons).
    private var positions: [Key: Int] = [:]
    init(ordered: Bool) { self.items = []; self.ordered = ordered }

    private enum Key: Hashable { case string(String), int(Int64), bool(Bool), none }

    /// Sets `key` (replacing an equal key, as a Python dict does for str/int keys).
    func set(_ key: PickleValue, _ value: PickleValue) {
        let hashable: Key?
        switch key {
        case .string(let s): hashable = .string(s)
        case .int(let i): hashable = .int(i)
        case .bool(let b): hashable = .bool(b)
        case .none: hashable = Key.none
        default: hashable = nil
        }
        if let hashable {
            if let i = positions[hashable] { items[i].value = value } else { positions[hashable] = items.count; items.append((key, value)) }
        } else {
            items.append((key, value))   // other keys (tuples, floats, ...) never compare equal here, as before
        }
    }

    public subscript(key: String) -> PickleValue? {
        items.first { if case .string(let s) = $0.key { return s == key } else { return false } }?.value
    }
}

/// An instance of an allow-listed class that is kept as inert data (argparse.Namespace):
/// the constructor arguments and whatever BUILD set as state. Nothing is ever called.
/// `@unchecked Sendable`: its state is set by the unpickler before it returns, read only afterwards.
public final class PickleObject: @unchecked Sendable {
    public let className: String
    public let args: [PickleValue]
    public internal(set) var state: PickleValue?
    var depth = 1
    init(className: String, args: [PickleValue]) { self.className = className; self.args = args }

    /// Attributes set by BUILD from a state dict (a Namespace's fields).
    public var attributes: [(name: String, value: PickleValue)] {
        guard case .dict(let d)? = state else { return [] }
        return d.items.compactMap { if case .string(let k) = $0.key { return (k, $0.value) } else { return nil } }
    }
}

/// A tensor `torch._utils._rebuild_tensor_v2` would build: a view into a `data/<key>` record.
public struct TorchTensorRef: Sendable {
    public let storageKey: String
    public let requiresGrad: Bool
    public let view: TensorView
}

/// What a restricted unpickle produces. Containers are references (see PickleList).
public indirect enum PickleValue: Sendable {
    case none
    case bool(Bool)
    case int(Int64)
    /// An integer wider than 64 bits (LONG1/LONG4), as little-endian two's complement bytes.
    case bigInt([UInt8])
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case tuple([PickleValue])
    case list(PickleList)
    case set(PickleList)
    case dict(PickleDict)
    /// An allow-listed class or function, not yet applied.
    case global(module: String, name: String)
    case object(PickleObject)
    case tensor(TorchTensorRef)
    /// A persistent id loaded outside a tensor (kept symbolic).
    case storage(key: String, dtype: DType, numel: Int)

    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
    public var intValue: Int64? { if case .int(let i) = self { return i } else { return nil } }
    public var tensorValue: TorchTensorRef? { if case .tensor(let t) = self { return t } else { return nil } }

    /// Dict item or object attribute by name.
    public subscript(key: String) -> PickleValue? {
        switch self {
        case .dict(let d): return d[key]
        case .object(let o): return o.attributes.first { $0.name == key }?.value
        default: return nil
        }
    }

    /// A one-line, bounded rendering (cycles print as `<cycle>`, long containers are cut).
    public func summary(maxItems: Int = 8, maxDepth: Int = 6) -> String {
        var onPath = Set<ObjectIdentifier>()
        return render(maxItems: maxItems, depth: maxDepth, onPath: &onPath)
    }

    private func render(maxItems: Int, depth: Int, onPath: inout Set<ObjectIdentifier>) -> String {
        func items(_ values: [PickleValue], _ open: String, _ close: String) -> String {
            let shown = values.prefix(maxItems).map { $0.render(maxItems: maxItems, depth: depth - 1, onPath: &onPath) }
            let more = values.count > maxItems ? ", … (\(values.count) items)" : ""
            return open + shown.joined(separator: ", ") + more + close
        }
        func guarded(_ object: AnyObject, _ body: (inout Set<ObjectIdentifier>) -> String) -> String {
            let id = ObjectIdentifier(object)
            if onPath.contains(id) { return "<cycle>" }
            if depth <= 0 { return "…" }
            onPath.insert(id)
            defer { onPath.remove(id) }
            return body(&onPath)
        }
        switch self {
        case .none: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .int(let i): return String(i)
        case .bigInt(let b): return "<\(b.count * 8)-bit int>"
        case .float(let f): return String(f)
        case .string(let s): return "'" + (s.count > 80 ? String(s.prefix(80)) + "…" : s) + "'"
        case .bytes(let b): return "<\(b.count) bytes>"
        case .tuple(let t):
            if depth <= 0 { return "(…)" }
            return items(t, "(", t.count == 1 ? ",)" : ")")
        case .list(let l): return guarded(l) { _ in items(l.items, "[", "]") }
        case .set(let l): return guarded(l) { _ in items(l.items, "{", "}") }
        case .dict(let d):
            return guarded(d) { onPath in
                let shown = d.items.prefix(maxItems).map {
                    $0.key.render(maxItems: maxItems, depth: depth - 1, onPath: &onPath) + ": " +
                        $0.value.render(maxItems: maxItems, depth: depth - 1, onPath: &onPath)
                }
                let more = d.items.count > maxItems ? ", … (\(d.items.count) items)" : ""
                return (d.ordered ? "OrderedDict{" : "{") + shown.joined(separator: ", ") + more + "}"
            }
        case .global(let m, let n): return "<\(m).\(n)>"
        case .object(let o):
            return guarded(o) { onPath in
                let attrs = o.attributes
                if !attrs.isEmpty || o.state == nil {
                    let shown = attrs.prefix(maxItems * 4).map { "\($0.name)=\($0.value.render(maxItems: maxItems, depth: depth - 1, onPath: &onPath))" }
                    let more = attrs.count > maxItems * 4 ? ", …" : ""
                    return "\(o.className)(" + shown.joined(separator: ", ") + more + ")"
                }
                return "\(o.className)(state=\(o.state!.render(maxItems: maxItems, depth: depth - 1, onPath: &onPath)))"
            }
        case .tensor(let t): return "tensor \(t.view.dtype.shortName)\(t.view.shape)"
        case .storage(let key, let dtype, let numel): return "<storage \(key) \(dtype.shortName)×\(numel)>"
        }
    }
}
