import PPCheckpoint
import PPJSON
import PPModel
import PPTensor

/// What `ppconvert inspect` reports about a checkpoint.
public struct InspectReport {
    public var loaded: LoadedCheckpoint
    public var sha256: String?
    public var config: ModelConfig?
    /// What could not be inferred, and why.
    public var notInferred: [String] = []

    public init(_ loaded: LoadedCheckpoint, sha256: String?) {
        self.loaded = loaded
        self.sha256 = sha256
        switch loaded.layout {
        case .unknown(let reason):
            notInferred.append("architecture: \(reason)")
        default:
            do {
                config = try ModelConfig.infer(from: loaded.tensors, numHeads: loaded.numHeads, inputSize: loaded.inputSize)
                if loaded.numHeads == nil {
                    notInferred.append("num_heads: not stored; taken from the released-model table for hidden size \(config!.hiddenSize) (a config.json with num_heads, or --heads, removes the doubt)")
                }
            } catch {
                // Show everything else; the head count is the one thing weights cannot say.
                config = try? ModelConfig.infer(from: loaded.tensors, numHeads: 1, inputSize: loaded.inputSize)
                config?.numHeads = 0
                notInferred.append("num_heads: not stored in the weights and not a released size; pass --heads N (or put num_heads in a config.json beside the weights)")
            }
        }
        if loaded.objective == .unknown { notInferred.append("objective: \(loaded.objectiveSource)") }
    }

    public var json: JSONValue {
        var object = JSONObject([
            ("path", .string(loaded.path)),
            ("format", .string(loaded.containerDescription)),
            ("weights_file", loaded.weightsFile.map { .string($0) } ?? .null),
            ("family", .string(loaded.family)),
            ("layout", .string(loaded.layout.description)),
            ("objective", .string(loaded.objective.rawValue)),
            ("objective_source", .string(loaded.objectiveSource)),
            ("time_convention", .string(loaded.objective.timeConvention)),
            ("time_features", .string(loaded.diffusersNumerics ? "diffusers" : "original")),
            ("sha256", sha256.map { .string($0) } ?? .null),
            ("parameters", .int(Int64(loaded.parameterCount))),
            ("bytes", .int(Int64(loaded.tensors.totalBytes))),
        ])
        if let config {
            object["config"] = .object(FromDiT.nativeConfig(for: config, objective: loaded.objective, cfgScales: [],
                                                            family: loaded.family, provenance: JSONObject())["architecture"]!.objectValue!)
            if config.levels > 1 {
                object["pyramid"] = .object(JSONObject([("levels", .int(Int64(config.levels))),
                                                        ("thresholds", .array(config.thresholds.map { .double($0) }))]))
            }
        }
        object["not_inferred"] = .array(notInferred.map { .string($0) })
        object["state_dicts"] = .array(loaded.availableStateDicts.map { .string($0) })
        object["selected_state_dict"] = loaded.selectedStateDict.map { .string($0) } ?? .null
        object["other_entries"] = .object(JSONObject(loaded.extraEntries.map { ($0.key, .string($0.summary)) }))
        object["computed_keys"] = .array(loaded.computedKeys.map { .string($0) })
        object["notes"] = .array(loaded.notes.map { .string($0) })
        object["tensors"] = .array(loaded.tensors.items.map { name, t in
            .object(JSONObject([("name", .string(name)), ("dtype", .string(t.dtype.rawValue)),
                                ("shape", .array(t.shape.map { .int(Int64($0)) })), ("bytes", .int(Int64(t.byteCount)))]))
        })
        return .object(object)
    }

    public func lines(maxTensors: Int = .max) -> [String] {
        var out: [String] = []
        out.append("file:        \(loaded.path)")
        out.append("format:      \(loaded.containerDescription)\(loaded.weightsFile.map { " (\($0))" } ?? "")")
        if let sha256 { out.append("sha256:      \(sha256)") }
        out.append("family:      \(loaded.family)")
        out.append("objective:   \(loaded.objective.rawValue) (\(loaded.objectiveSource))")
        out.append("time:        \(loaded.objective.timeConvention)\(loaded.diffusersNumerics ? "; diffusers time features and LayerNorm eps" : "")")
        if !loaded.availableStateDicts.isEmpty {
            out.append("state dicts: \(loaded.availableStateDicts.joined(separator: ", ")); using '\(loaded.selectedStateDict ?? "")'")
        }
        for entry in loaded.extraEntries { out.append("  \(entry.key): \(entry.summary)") }
        if let c = config {
            out.append("config:      input \(c.inputSize)x\(c.inputSize)x\(c.inChannels), patch \(c.patchSize), hidden \(c.hiddenSize), depth \(c.depth), heads \(c.numHeads == 0 ? "?" : String(c.numHeads)), mlp_ratio \(c.mlpRatio), classes \(c.numClasses), learn_sigma \(c.learnSigma)")
            if c.levels > 1 { out.append("pyramid:     \(c.levels) levels, thresholds \(c.thresholds)") }
        }
        for item in notInferred { out.append("not inferred: \(item)") }
        for note in loaded.notes { out.append("note:        \(note)") }
        out.append("parameters:  \(loaded.parameterCount) in \(loaded.tensors.count) tensors, \(loaded.tensors.totalBytes) bytes")
        let nameWidth = min(48, loaded.tensors.names.map(\.count).max() ?? 0)
        for (i, (name, t)) in loaded.tensors.items.enumerated() {
            if i == maxTensors { out.append("  ... \(loaded.tensors.count - maxTensors) more (--all shows every tensor)"); break }
            let padded = name.count < nameWidth ? name + String(repeating: " ", count: nameWidth - name.count) : name
            out.append("  \(padded)  \(t.dtype.shortName.padding(4))  \(t.shape)  \(t.byteCount)")
        }
        return out
    }
}

extension String {
    func padding(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}
