import ArgumentParser
import PPCheckpoint
import PPCLI
import PPConvert
import PPJSON
import PPModel
import PPTensor

struct PPConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ppconvert",
        abstract: "Read DiT/SiT/PPFlow checkpoints in any common form, convert DiT/SiT to PPFlow, verify, compare.",
        discussion: """
            SOURCE/PATH may be a torch .pt (bare state dict or train checkpoint), a safetensors file, a sharded
            safetensors folder, a diffusers folder, a native PPFlow folder, or a zip of any of these. Formats are
            detected by content. Exit codes: 0 ok, 1 verification/diff mismatch, 64 usage, 65 bad input,
            66 missing input, 74 I/O error.
            """,
        subcommands: [Inspect.self, Convert.self, Diff.self, FromDit.self, Verify.self])
}

struct SourceOptions: ParsableArguments {
    @Option(help: "Which state dict of a train checkpoint to use: ema or model (default: ema when present).")
    var weights: WeightsChoice?

    @Flag(name: .customLong("no-verify-hash"), help: "Do not check native checkpoints against the sha256 in their config.json.")
    var noVerifyHash = false

    func load(_ path: String) throws -> LoadedCheckpoint {
        CheckpointLoader.verifyNativeHashes = !noVerifyHash
        return try CheckpointLoader.load(path, weights: weights)
    }
}

extension WeightsChoice: ExpressibleByArgument {}
extension OutputFormat: ExpressibleByArgument {}
extension OutputDType: ExpressibleByArgument {}
extension InitializerKind: ExpressibleByArgument {}

extension PPConvertCommand {
    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show format, family, inferred configuration, sub-dicts and tensors of a checkpoint.")

        @Argument(help: "The checkpoint (file, folder or zip).") var path: String
        @OptionGroup var source: SourceOptions
        @Flag(help: "Print a JSON report instead of text.") var json = false
        @Flag(help: "List every tensor (the text report shows the first 40).") var all = false
        @Option(help: "Number of attention heads, if no metadata says (released models: S 6, B 12, L/XL 16).") var heads: Int?

        func run() throws {
            CLI.run("ppconvert inspect") {
                var loaded = try source.load(path)
                if let heads { loaded.architectureHints["num_heads"] = .int(Int64(heads)) }
                let report = InspectReport(loaded, sha256: try SourceHash.of(path))
                if json {
                    try CLI.writeJSON(report.json, to: "-")
                } else {
                    report.lines(maxTensors: all ? .max : 40).forEach { print($0) }
                }
                return 0
            }
        }
    }

    struct Convert: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Change the container without changing the model.",
            discussion: """
                Examples:
                  ppconvert convert PPF-XL-2.pt ppf-xl-2 --format native
                  ppconvert convert ppf-xl-2 PPF-XL-2-bf16.pt --format torch --dtype bf16
                  ppconvert convert dit_diffusers.zip dit.safetensors --format safetensors
                """)

        @Argument(help: "The source checkpoint.") var input: String
        @Argument(help: "The output file (or folder for --format native).") var output: String
        @Option(help: "native | torch | torch-train | safetensors") var format: OutputFormat = .native
        @Option(help: "keep | f32 | f16 | bf16 (floating-point tensors; rounding to nearest even)") var dtype: OutputDType = .keep
        @Option(help: "Number of attention heads when no metadata says.") var heads: Int?
        @OptionGroup var source: SourceOptions

        func run() throws {
            CLI.run("ppconvert convert") {
                let loaded = try source.load(input)
                let summary = try ContainerConversion.run(loaded, to: output, format: format, dtype: dtype,
                                                          sourceSHA256: try SourceHash.of(input), heads: heads)
                print("wrote \(output) (\(format.rawValue)): \(summary.tensorCount) tensors, \(Format.bytes(summary.bytes))")
                return 0
            }
        }
    }

    struct Diff: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Compare two checkpoints tensor by tensor; exit 0 when equal, 1 when not.")

        @Argument(help: "First checkpoint.") var a: String
        @Argument(help: "Second checkpoint.") var b: String
        @Flag(help: "Print a JSON report.") var json = false
        @OptionGroup var source: SourceOptions

        func run() throws {
            CLI.run("ppconvert diff") {
                let diff = CheckpointDiff(try source.load(a).tensors, try source.load(b).tensors)
                if json {
                    try CLI.writeJSON(diff.json(pathA: a, pathB: b), to: "-")
                } else {
                    diff.lines().forEach { print($0) }
                }
                return diff.isEqual ? 0 : 1
            }
        }
    }
}

/// sha256 of a file or, for a folder, of its weights file(s) in name order.
enum SourceHash {
    static func of(_ path: String) throws -> String? {
        if let storage = try? ByteStorage(mappingFile: path) { return SHA256.hash(storage.bytes) }
        return nil
    }
}

PPConvertCommand.main()
