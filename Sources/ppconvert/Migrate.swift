import ArgumentParser
import PPCheckpoint
import PPCLI
import PPConvert
import PPFileIO
import PPJSON
import PPTensor

extension PPConvertCommand {
    struct Migrate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Convert every DiT/SiT checkpoint in a folder to PPFlow (for CI); already converted sources are skipped.",
            discussion: """
                Each checkpoint in SRC_DIR (found by content: .pt/.pth/.bin/.ckpt, safetensors, zips, diffusers and
                sharded folders) becomes DST_DIR/<stem>-ppf<L>, a verified native folder. A source already converted
                from the same bytes with the same options is skipped; a broken file is reported on stderr and the run
                goes on; other files (README.txt) are listed as skipped. DST_DIR/migration.json records every entry
                (sorted, no timestamps). Nothing in DST_DIR that ppconvert did not write is replaced.
                Exit 0 when nothing failed, 65 when any entry failed.
                Examples:
                  ppconvert migrate results/000-SiT-XL-2/checkpoints ppflow --levels 2,3
                  ppconvert migrate downloads converted --objective velocity --json -
                """)

        @Argument(help: "The folder holding the checkpoints.") var sourceFolder: String
        @Argument(help: "Where the PPFlow folders and migration.json go (created if missing).") var destinationFolder: String
        @Option(help: "Pyramid levels per source: 2, 3 or 2,3.") var levels = "2"
        @Option(help: "Initializer: repeat (the official rule) or calibrated (needs --data).") var `init`: InitializerKind = .repeat
        @Option(help: "Latents (safetensors with latents [N,C,H,W], optional labels [N]) for --init calibrated and the verification.") var data: String?
        @Option(help: "Calibrated only: gain of the within-group detail in the coarse patch embeddings (see from-dit).") var detailScale = 0.0
        @Option(help: "velocity (SiT) or epsilon (DiT), for sources whose metadata does not say.") var objective: String?
        @Option(help: "Number of attention heads, for sources whose metadata does not say.") var heads: Int?
        @Option(help: "Also write the report (the manifest's content) to this file ('-' for stdout).") var json: String?
        @Flag(name: .customLong("no-verify"), help: "Skip running source and converted model.") var noVerify = false
        @Flag(help: "Replace the --json file if it exists (the PPFlow folders and migration.json are continued, never replaced).") var force = false

        func validate() throws {
            if let objective, Objective(userName: objective) == nil { throw ValidationError("--objective must be velocity or epsilon") }
            if `init` == .calibrated && data == nil { throw ValidationError("--init calibrated needs --data LATENTS") }
            if !(detailScale >= 0 && detailScale <= 100) { throw ValidationError("--detail-scale must be in 0...100") }
            if detailScale > 0 && `init` != .calibrated { throw ValidationError("--detail-scale needs --init calibrated") }
        }

        func run() throws {
            CLI.run("ppconvert migrate") {
                if let json, json != "-" { try OutputTarget.check(json, kind: .file, force: force) }
                var migration = Migration(sourceFolder: sourceFolder, destinationFolder: destinationFolder)
                migration.levels = try CLI.numbers(levels, flag: "--levels", as: Int.self)
                migration.options.initializer = `init`
                migration.options.objective = objective.flatMap(Objective.init(userName:))
                migration.options.heads = heads
                if let data, `init` == .calibrated {
                    var calibration = CalibratedInitializer.Options(dataPath: data)
                    calibration.detailScale = detailScale
                    migration.options.calibration = calibration
                }
                migration.dataPath = data
                migration.verify = !noVerify
                // With the report on stdout, progress moves to stderr.
                if json == "-" { migration.progress = { CLI.printError($0) } }
                migration.reportError = { CLI.printError("ppconvert migrate: \($0)") }
                let report = try migration.run()
                if let json { try CLI.writeJSON(report.json, to: json) }
                return report.exitCode
            }
        }
    }
}
