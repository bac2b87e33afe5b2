import PPFileIO
import PPTensor

/// Gives the unpickler the bytes of a `data/<key>` storage record.
public protocol TorchStorageResolver {
    /// The storage holding record `key`, checked to hold exactly `numel` elements of `dtype`,
    /// and the byte offset where the record starts in it.
    func storage(key: String, dtype: DType, numel: Int) throws -> (storage: ByteStorage, offset: Int)
}

/// A restricted pickle stack machine (protocol 2, plus the protocol 3-5 opcodes torch may emit).
/// It never imports or calls anything: GLOBAL is checked against an allow-list and the few allowed
/// callables (OrderedDict(), tensor rebuilds, Namespace()) are interpreted as data constructors.
public struct Unpickler {
    public static let maximumNesting = 256
    public static let maximumMarkDepth = 4096

    /// Storage class name in module `torch` → dtype.
    static let storageDTypes: [String: DType] = [
        "FloatStorage": .f32, "HalfStorage": .f16, "BFloat16Storage": .bf16, "DoubleStorage": .f64,
        "LongStorage": .i64, "IntStorage": .i32, "ShortStorage": .i16, "CharStorage": .i8,
        "ByteStorage": .u8, "BoolStorage": .bool,
    ]

    static func isAllowedGlobal(module: String, name: String) -> Bool {
        switch (module, name) {
        case ("collections", "OrderedDict"),
             ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
             ("torch._tensor", "_rebuild_from_type_v2"),
             ("torch.nn.parameter", "Parameter"), ("torch", "Tensor"),
             ("argparse", "Namespace"):
            return true
        case ("torch", _): return storageDTypes[name] != nil
        default: return false
        }
    }

    let bytes: UnsafeRawBufferPointer
    let origin: String
    let entry: String
    let resolver: TorchStorageResolver?

    /// One stack slot: a value and its nesting depth when it was pushed (tuples are immutable, so
    /// theirs stays right; containers carry their own, updated on mutation).
    private struct Slot { var value: PickleValue; var depth: Int }

    private var stack: [Slot] = []
    private var marks: [Int] = []
    private var memo: [Int: Slot] = [:]
    private var position = 0
    private var opcodeStart = 0

    public init(bytes: UnsafeRawBufferPointer, origin: String, entry: String, resolver: TorchStorageResolver?) {
        self.bytes = bytes
        self.origin = origin
        self.entry = entry
        self.resolver = resolver
    }

    /// Unpickles `bytes`; errors name the file, the entry and the byte offset.
    public static func load(_ bytes: UnsafeRawBufferPointer, origin: String, entry: String,
                            resolver: TorchStorageResolver? = nil) throws -> PickleValue {
        var machine = Unpickler(bytes: bytes, origin: origin, entry: entry, resolver: resolver)
        return try machine.run()
    }

    private func fail(_ message: String) -> PPError {
        PPError.badInput(origin, entry: entry, "\(message) (pickle offset \(opcodeStart))")
    }

    // MARK: reading operands

    private mutating func take(_ count: Int) throws -> UnsafeRawBufferPointer {
        guard count >= 0, count <= bytes.count - position else { throw fail("truncated pickle: needs \(count) more bytes") }
        defer { position += count }
        return UnsafeRawBufferPointer(rebasing: bytes[position ..< position + count])
    }

    private mutating func u8() throws -> Int { Int(try take(1)[0]) }

    private mutating func littleEndian(_ count: Int) throws -> UInt64 {
        let b = try take(count)
        var v: UInt64 = 0
        for i in (0..<count).reversed() { v = v << 8 | UInt64(b[i]) }
        return v
    }

    private mutating func line() throws -> String {
        guard let newline = bytes[position...].firstIndex(of: 0x0a) else { throw fail("truncated pickle: unterminated GLOBAL line") }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[position ..< newline]), as: UTF8.self)
        position = newline + 1
        return text
    }

    private mutating func utf8(_ count: Int) throws -> String {
        let raw = try take(count)
        guard let s = String(validating: raw, as: UTF8.self) else { throw fail("string is not valid UTF-8") }
        return s
    }

    private mutating func length(_ width: Int) throws -> Int {
        let v = try littleEndian(width)
        guard v <= UInt64(bytes.count - position) else { throw fail("truncated pickle: a \(v)-byte string runs past the end") }
        return Int(v)
    }

    // MARK: stack

    private func depth(_ slot: Slot) -> Int {
        switch slot.value {
        case .list(let l), .set(let l): return l.depth
        case .dict(let d): return d.depth
        case .object(let o): return o.depth
        default: return slot.depth
        }
    }

    private mutating func push(_ value: PickleValue, depth: Int = 0) throws {
        guard depth <= Unpickler.maximumNesting else { throw fail("values nest deeper than \(Unpickler.maximumNesting) levels") }
        stack.append(Slot(value: value, depth: depth))
    }

    private mutating func pop() throws -> Slot {
        guard let top = stack.popLast(), stack.count >= (marks.last ?? 0) else { throw fail("stack underflow") }
        return top
    }

    private func top() throws -> Slot {
        guard let t = stack.last, stack.count > (marks.last ?? 0) else { throw fail("stack underflow") }
        return t
    }

    private mutating func popMark() throws -> [Slot] {
        guard let mark = marks.popLast() else { throw fail("no MARK to pop to") }
        let items = Array(stack[mark...])
        stack.removeSubrange(mark...)
        return items
    }

    private mutating func tuple(_ items: [Slot]) throws {
        try push(.tuple(items.map(\.value)), depth: 1 + (items.map(depth).max() ?? 0))
    }

    private mutating func memoize(_ index: Int) throws {
        // Every memo slot needs at least one opcode byte, so a larger index cannot come from a real pickler.
        guard index >= 0, index < bytes.count else { throw fail("memo index \(index) is impossible in a \(bytes.count)-byte pickle") }
        memo[index] = try top()
    }

    private mutating func recall(_ index: Int) throws {
        guard let slot = memo[index] else { throw fail("memo index \(index) was never stored") }
        stack.append(slot)
    }

    /// The container's depth once `slot` is inside it (read first: the slot may be the container itself).
    private func grown(_ containerDepth: Int, with slot: Slot) throws -> Int {
        let itemDepth = depth(slot)
        let result = max(containerDepth, itemDepth + 1)
        guard result <= Unpickler.maximumNesting else { throw fail("values nest deeper than \(Unpickler.maximumNesting) levels") }
        return result
    }

    private mutating func appendItems(_ items: [Slot]) throws {
        let target = try top()
        switch target.value {
        case .list(let l), .set(let l):
            for item in items { l.depth = try grown(l.depth, with: item); l.items.append(item.value) }
        default: throw fail("APPEND to a \(kind(target.value)), not a list")
        }
    }

    private mutating func setItems(_ items: [Slot]) throws {
        guard items.count % 2 == 0 else { throw fail("SETITEMS with an odd number of values") }
        let target = try top()
        guard case .dict(let d) = target.value else { throw fail("SETITEM on a \(kind(target.value)), not a dict") }
        for i in stride(from: 0, to: items.count, by: 2) {
            d.depth = try grown(d.depth, with: items[i])
            d.depth = try grown(d.depth, with: items[i + 1])
            d.set(items[i].value, items[i + 1].value)
        }
    }

    private func kind(_ v: PickleValue) -> String {
        switch v {
        case .none: return "None"
        case .bool: return "bool"
        case .int, .bigInt: return "int"
        case .float: return "float"
        case .string: return "str"
        case .bytes: return "bytes"
        case .tuple: return "tuple"
        case .list: return "list"
        case .set: return "set"
        case .dict: return "dict"
        case .global(let m, let n): return "\(m).\(n)"
        case .object(let o): return o.className
        case .tensor: return "tensor"
        case .storage: return "storage"
        }
    }

    // MARK: the machine

    mutating func run() throws -> PickleValue {
        while true {
            opcodeStart = position
            guard position < bytes.count else { throw fail("truncated pickle: no STOP opcode") }
            let op = try u8()
            switch op {
            case 0x80: // PROTO
                let proto = try u8()
                guard proto <= 5 else { throw fail("pickle protocol \(proto) is not supported") }
            case 0x95: _ = try take(8) // FRAME: a length hint only
            case 0x2e: // STOP
                let result = try pop()
                return result.value
            case 0x28: // MARK
                guard marks.count < Unpickler.maximumMarkDepth else { throw fail("MARKs nest deeper than \(Unpickler.maximumMarkDepth)") }
                marks.append(stack.count)
            case 0x30: _ = try pop() // POP
            case 0x31: _ = try popMark() // POP_MARK
            case 0x32: stack.append(try top()) // DUP
            case 0x4e: try push(.none) // NONE
            case 0x88: try push(.bool(true)) // NEWTRUE
            case 0x89: try push(.bool(false)) // NEWFALSE
            case 0x4a: try push(.int(Int64(Int32(bitPattern: UInt32(try littleEndian(4)))))) // BININT
            case 0x4b: try push(.int(Int64(try u8()))) // BININT1
            case 0x4d: try push(.int(Int64(try littleEndian(2)))) // BININT2
            case 0x8a: try pushLong(try length(1)) // LONG1
            case 0x8b: try pushLong(try length(4)) // LONG4
            case 0x47: try push(.float(Double(bitPattern: try littleEndian(8).byteSwapped))) // BINFLOAT (big-endian)
            case 0x58: try push(.string(try utf8(try length(4)))) // BINUNICODE
            case 0x8c: try push(.string(try utf8(try length(1)))) // SHORT_BINUNICODE
            case 0x8d: try push(.string(try utf8(try length(8)))) // BINUNICODE8
            case 0x55: try push(.string(try latin1(try length(1)))) // SHORT_BINSTRING
            case 0x54: try push(.string(try latin1(try length(4)))) // BINSTRING
            case 0x43: try push(.bytes(Array(try take(try length(1))))) // SHORT_BINBYTES
            case 0x42: try push(.bytes(Array(try take(try length(4))))) // BINBYTES
            case 0x8e: try push(.bytes(Array(try take(try length(8))))) // BINBYTES8
            case 0x29: try push(.tuple([]), depth: 1) // EMPTY_TUPLE
            case 0x74: try tuple(try popMark()) // TUPLE
            case 0x85, 0x86, 0x87: // TUPLE1..3
                let n = op - 0x84
                guard stack.count - (marks.last ?? 0) >= n else { throw fail("stack underflow") }
                let items = Array(stack.suffix(n))
                stack.removeLast(n)
                try tuple(items)
            case 0x5d: try push(.list(PickleList()), depth: 1) // EMPTY_LIST
            case 0x6c: // LIST
                let items = try popMark()
                let l = PickleList()
                for item in items { l.depth = try grown(l.depth, with: item); l.items.append(item.value) }
                try push(.list(l))
            case 0x61: try appendItems([try pop()]) // APPEND
            case 0x65: try appendItems(try popMark()) // APPENDS
            case 0x8f: try push(.set(PickleList()), depth: 1) // EMPTY_SET
            case 0x90: try appendItems(try popMark()) // ADDITEMS
            case 0x91: // FROZENSET
                let items = try popMark()
                let l = PickleList()
                for item in items { l.depth = try grown(l.depth, with: item); l.items.append(item.value) }
                try push(.set(l))
            case 0x7d: try push(.dict(PickleDict(ordered: false)), depth: 1) // EMPTY_DICT
            case 0x64: // DICT
                let items = try popMark()
                try push(.dict(PickleDict(ordered: false)), depth: 1)
                try setItems(items)
            case 0x73: // SETITEM
                let value = try pop(), key = try pop()
                try setItems([key, value])
            case 0x75: try setItems(try popMark()) // SETITEMS
            case 0x63: // GLOBAL
                let module = try line(), name = try line()
                try pushGlobal(module: module, name: name)
            case 0x93: // STACK_GLOBAL
                let name = try pop(), module = try pop()
                guard case .string(let n) = name.value, case .string(let m) = module.value else { throw fail("STACK_GLOBAL needs two strings") }
                try pushGlobal(module: m, name: n)
            case 0x52: // REDUCE
                let args = try pop(), callable = try pop()
                let result = try reduce(callable.value, args: args)
                try push(result.value, depth: result.depth)
            case 0x81: // NEWOBJ
                let args = try pop(), cls = try pop()
                try newObject(cls.value, args: args)
            case 0x62: // BUILD
                let state = try pop()
                let target = try top()
                try build(target.value, state: state)
            case 0x51: // BINPERSID
                let pid = try pop()
                try push(try persistentLoad(pid.value))
            case 0x71: try memoize(try u8()) // BINPUT
            case 0x72: try memoize(Int(try littleEndian(4))) // LONG_BINPUT
            case 0x94: try memoize(memo.count) // MEMOIZE
            case 0x68: try recall(try u8()) // BINGET
            case 0x6a: try recall(Int(try littleEndian(4))) // LONG_BINGET
            default:
                throw fail("unsupported pickle opcode 0x\(String(op, radix: 16, uppercase: false))")
            }
        }
    }

    private mutating func latin1(_ count: Int) throws -> String {
        String(try take(count).map { Character(Unicode.Scalar($0)) })
    }

    private mutating func pushLong(_ count: Int) throws {
        let raw = Array(try take(count))
        if count == 0 { try push(.int(0)); return }
        if count <= 8 {
            var v: UInt64 = 0
            for b in raw.reversed() { v = v << 8 | UInt64(b) }
            let shift = UInt64(64 - 8 * count)
            try push(.int(Int64(bitPattern: v << shift) >> Int64(shift))) // sign-extend
        } else {
            try push(.bigInt(raw))
        }
    }

    private mutating func pushGlobal(module: String, name: String) throws {
        guard Unpickler.isAllowedGlobal(module: module, name: name) else {
            throw fail("global '\(module).\(name)' is not allowed (only tensors, OrderedDict and argparse.Namespace are read; nothing is executed)")
        }
        try push(.global(module: module, name: name))
    }

    private mutating func persistentLoad(_ pid: PickleValue) throws -> PickleValue {
        guard case .tuple(let t) = pid, t.count == 5, t[0].stringValue == "storage",
              case .global(let module, let className) = t[1], module == "torch",
              let dtype = Unpickler.storageDTypes[className],
              case .string(let key) = t[2], t[3].stringValue != nil,
              case .int(let numel) = t[4], numel >= 0 else {
            throw fail("persistent id is not ('storage', torch.<T>Storage, key, location, numel)")
        }
        return .storage(key: key, dtype: dtype, numel: Int(numel))
    }

    private func integers(_ v: PickleValue, _ what: String) throws -> [Int] {
        guard case .tuple(let items) = v else { throw fail("tensor \(what) is not a tuple") }
        return try items.map {
            guard case .int(let i) = $0, i >= 0, i <= Int64(Int32.max) * 1024 else { throw fail("tensor \(what) holds a value that is not a non-negative int") }
            return Int(i)
        }
    }

    /// The allowed callables, interpreted as data constructors.
    private mutating func reduce(_ callable: PickleValue, args argsSlot: Slot) throws -> Slot {
        guard case .global(let module, let name) = callable else {
            throw fail("REDUCE of a \(kind(callable)) (only allow-listed globals can be applied)")
        }
        guard case .tuple(let args) = argsSlot.value else { throw fail("REDUCE arguments are not a tuple") }
        switch (module, name) {
        case ("collections", "OrderedDict"):
            guard args.isEmpty else { throw fail("OrderedDict with constructor arguments is not supported") }
            return Slot(value: .dict(PickleDict(ordered: true)), depth: 1)
        case ("torch._utils", "_rebuild_tensor_v2"):
            return Slot(value: try rebuildTensor(args), depth: 1)
        case ("torch._utils", "_rebuild_parameter"):
            guard args.count >= 2, case .tensor = args[0] else { throw fail("_rebuild_parameter without a tensor") }
            return Slot(value: args[0], depth: 1)
        case ("torch._tensor", "_rebuild_from_type_v2"):
            // (func, type, args, state): only func = _rebuild_tensor_v2 is accepted.
            guard args.count == 4, case .global("torch._utils", "_rebuild_tensor_v2") = args[0],
                  case .tuple(let inner) = args[2] else {
                throw fail("_rebuild_from_type_v2 other than around _rebuild_tensor_v2")
            }
            return Slot(value: try rebuildTensor(inner), depth: 1)
        default:
            throw fail("REDUCE of '\(module).\(name)' is not supported")
        }
    }

    private func rebuildTensor(_ args: [PickleValue]) throws -> PickleValue {
        guard args.count >= 4, case .storage(let key, let dtype, let numel) = args[0], case .int(let offset64) = args[1],
              offset64 >= 0, offset64 <= Int64(numel) else {
            throw fail("_rebuild_tensor_v2 arguments are not (storage, offset, size, stride, ...)")
        }
        let shape = try integers(args[2], "size")
        let strides = try integers(args[3], "stride")
        guard shape.count == strides.count else { throw fail("tensor size and stride differ in rank") }
        let requiresGrad: Bool
        if args.count > 4, case .bool(let b) = args[4] { requiresGrad = b } else { requiresGrad = false }
        let offset = Int(offset64)
        // Every reachable element index must lie inside the storage.
        guard let count = TensorView.elementCount(shape) else { throw fail("tensor size overflows") }
        if count > 0 {
            var last = offset
            for (n, s) in zip(shape, strides) {
                let (step, o1) = (n - 1).multipliedReportingOverflow(by: s)
                let (sum, o2) = last.addingReportingOverflow(step)
                guard !o1, !o2 else { throw fail("tensor strides overflow") }
                last = sum
            }
            guard last < numel else {
                throw fail("tensor (storage \(key), offset \(offset), size \(shape), stride \(strides)) reaches element \(last) of a \(numel)-element storage")
            }
        }
        guard let resolver else { throw fail("tensor data is not available (no storage records)") }
        let (storage, recordOffset) = try resolver.storage(key: key, dtype: dtype, numel: numel)
        let view = TensorView(dtype: dtype, shape: shape, strides: strides, storage: storage,
                              byteOffset: recordOffset + offset * dtype.byteSize)
        return .tensor(TorchTensorRef(storageKey: key, requiresGrad: requiresGrad, view: view))
    }

    private mutating func newObject(_ cls: PickleValue, args: Slot) throws {
        guard case .global(let module, let name) = cls else { throw fail("NEWOBJ of a \(kind(cls))") }
        guard case .tuple(let items) = args.value else { throw fail("NEWOBJ arguments are not a tuple") }
        switch (module, name) {
        case ("argparse", "Namespace"):
            let o = PickleObject(className: "argparse.Namespace", args: items)
            o.depth = args.depth + 1
            try push(.object(o))
        case ("collections", "OrderedDict") where items.isEmpty:
            try push(.dict(PickleDict(ordered: true)), depth: 1)
        default:
            throw fail("NEWOBJ of '\(module).\(name)' is not supported")
        }
    }

    private func build(_ target: PickleValue, state: Slot) throws {
        switch target {
        case .dict(let d) where d.ordered:
            break // an OrderedDict's state is the state dict `_metadata`: not needed, ignored
        case .object(let o):
            guard o.state == nil else { throw fail("BUILD applied twice to one \(o.className)") }
            o.depth = try grown(o.depth, with: state)
            o.state = state.value
        case .tensor:
            break // Parameter / tensor subclass state (hooks, attributes): not needed for weights
        default:
            throw fail("BUILD on a \(kind(target)) is not supported")
        }
    }
}
