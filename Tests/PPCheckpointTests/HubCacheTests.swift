import PPCheckpoint
import PPFileIO
import PPTensor
import PPTorchFormat
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Hub ids resolved in fake caches built in scratch folders; the environment is passed in, never set.
final class HubCacheTests: XCTestCase {
    let commit = "0123456789abcdef0123456789abcdef01234567"
    let other = "fedcba9876543210fedcba9876543210fedcba98"

    /// mkdir -p for an absolute path.
    func mkdirs(_ path: String) {
        var prefix = ""
        for part in path.split(separator: "/") { prefix += "/" + part; mkdir(prefix, 0o755) }
    }

    /// A cache holding `owner/name` with `files` (relative path -> bytes) in snapshot `commit`, stored
    /// as huggingface_hub stores them: content in blobs/, snapshot entries are relative symlinks.
    func makeCache(_ root: String, repo: String, commit: String, files: [(String, [UInt8])], refs: [String: String]) throws {
        let folder = "\(root)/models--\(repo.replacingOccurrences(of: "/", with: "--"))"
        mkdirs(folder + "/blobs")
        for (index, (path, bytes)) in files.enumerated() {
            let blob = "blob\(index)"
            try write(bytes, to: "\(folder)/blobs/\(blob)")
            let link = "\(folder)/snapshots/\(commit)/\(path)"
            mkdirs(FileOutput.directory(of: link))
            let depth = path.split(separator: "/").count + 1   // snapshots/<commit>/<path...>
            let target = String(repeating: "../", count: depth) + "blobs/\(blob)"
            XCTAssertEqual(symlink(target, link), 0)
        }
        for (name, value) in refs {
            mkdirs(FileOutput.directory(of: "\(folder)/refs/\(name)"))
            try write(Array(value.utf8), to: "\(folder)/refs/\(name)")
        }
    }

    func testParseAcceptsHubIdsAndRefusesPaths() {
        XCTAssertEqual(HubCache.parse("facebook/DiT-XL-2-256"),
                       .init(owner: "facebook", name: "DiT-XL-2-256", revision: nil, subfolder: nil))
        XCTAssertEqual(HubCache.parse("facebook/DiT-XL-2-256@v1.0/transformer"),
                       .init(owner: "facebook", name: "DiT-XL-2-256", revision: "v1.0", subfolder: "transformer"))
        XCTAssertEqual(HubCache.parse("a/b/c/d.safetensors")?.subfolder, "c/d.safetensors")
        for notAnID in ["DiT-XL-2-256.pt", "/abs/path", "./a/b", "../a/b", "~/a/b", "a//b", "a/../b", "a/b@", "-a/b", "a--x/b", "a/b/c@d"] {
            XCTAssertNil(HubCache.parse(notAnID), notAnID)
        }
    }

    func testCacheRootFollowsHuggingFaceHubsOrderOfVariables() {
        XCTAssertEqual(HubCache.cacheRoot(environment: ["HOME": "/h"]).path, "/h/.cache/huggingface/hub")
        XCTAssertEqual(HubCache.cacheRoot(environment: ["HOME": "/h", "XDG_CACHE_HOME": "/x"]).path, "/x/huggingface/hub")
        XCTAssertEqual(HubCache.cacheRoot(environment: ["HOME": "/h", "XDG_CACHE_HOME": "/x", "HF_HOME": "~/hf"]).path, "/h/hf/hub")
        XCTAssertEqual(HubCache.cacheRoot(environment: ["HF_HOME": "/hf", "HUGGINGFACE_HUB_CACHE": "/old"]).path, "/old")
        XCTAssertEqual(HubCache.cacheRoot(environment: ["HF_HOME": "/hf", "HUGGINGFACE_HUB_CACHE": "/old", "HF_HUB_CACHE": "/new"]).path, "/new")
    }

    func testRevisionsBranchesTagsAndCommitIds() throws {
        let root = Paths.scratch(self)
        try makeCache(root + "/hub", repo: "o/m", commit: commit, files: [("a.txt", [1])], refs: ["main": commit + "\n"])
        try makeCache(root + "/hub", repo: "o/m", commit: other, files: [("sub/b.txt", [2])], refs: ["v2": other])
        let env = ["HF_HUB_CACHE": root + "/hub"]
        let snapshots = root + "/hub/models--o--m/snapshots"
        XCTAssertEqual(try HubCache.resolve("o/m", environment: env), "\(snapshots)/\(commit)")
        XCTAssertEqual(try HubCache.resolve("o/m@v2/sub", environment: env), "\(snapshots)/\(other)/sub")
        XCTAssertEqual(try HubCache.resolve("o/m@\(other)", environment: env), "\(snapshots)/\(other)")
        XCTAssertEqual(try HubCache.resolve("o/m/a.txt", environment: ["HF_HOME": root, "HOME": "/nowhere"]), "\(snapshots)/\(commit)/a.txt")
        // An existing path is never looked up.
        XCTAssertEqual(try HubCache.resolveModelPath(root, environment: [:]), root)
    }

    func testErrorsAreOneLineNamingEveryPlaceLookedAt() throws {
        let root = Paths.scratch(self)
        let env = ["HF_HUB_CACHE": root]
        assertPPError(.missingInput, mentions: ["o/x", "\(root)/models--o--x does not exist", "from HF_HUB_CACHE", "huggingface-cli download o/x"]) {
            try HubCache.resolve("o/x", environment: env)
        }
        try makeCache(root, repo: "o/m", commit: commit, files: [("a.txt", [1])], refs: ["dev": other])
        assertPPError(.missingInput, mentions: ["refs/main does not exist", "'main' is not a commit id of a snapshot (\(commit))"]) {
            try HubCache.resolve("o/m", environment: env)
        }
        assertPPError(.missingInput, mentions: ["snapshots/\(other) does not exist"]) { try HubCache.resolve("o/m@dev", environment: env) }
        assertPPError(.missingInput, mentions: ["snapshots/\(commit)/vae does not exist"]) { try HubCache.resolve("o/m@\(commit)/vae", environment: env) }
        assertPPError(.missingInput, mentions: ["no such file or folder"]) { try CheckpointLoader.load(root + "/not-here.pt", environment: env) }
        do {
            _ = try HubCache.resolve("o/m", environment: env)
        } catch let error as PPError {
            XCTAssertFalse(error.description.contains("\n"))
        }
    }

    /// The diffusers fixture unpacked into a fake cache as a pipeline (transformer/, scheduler/, vae/,
    /// model_index.json) loads through `facebook/DiT-XL-2-256`, and the transformer alone through
    /// `facebook/DiT-XL-2-256/transformer`, with the same tensors as the zip.
    func testLoaderTakesAHubIdOfADiffusersPipeline() throws {
        let root = Paths.scratch(self)
        let zipPath = Paths.fixture("dit_diffusers.zip")
        let tree = ZipTree(archive: try ZipArchive(path: zipPath), origin: zipPath)
        var files: [(String, [UInt8])] = try tree.files.map { ($0, try tree.open($0).withBytes { Array($0) }) }
        files.append(("model_index.json", Array(#"{"_class_name": "DiTPipeline", "transformer": ["diffusers", "DiTTransformer2DModel"]}"#.utf8)))
        files.append(("vae/config.json", Array(#"{"_class_name": "AutoencoderKL"}"#.utf8)))
        files.append(("vae/diffusion_pytorch_model.safetensors", Array(#"not read by the DiT loader"#.utf8)))
        try makeCache(root + "/hf/hub", repo: "facebook/DiT-XL-2-256", commit: commit, files: files, refs: ["main": commit])
        let env = ["HF_HOME": root + "/hf"]

        let expected = try CheckpointLoader.load(zipPath)
        for id in ["facebook/DiT-XL-2-256", "facebook/DiT-XL-2-256/transformer", "facebook/DiT-XL-2-256@main"] {
            let loaded = try CheckpointLoader.load(id, environment: env)
            XCTAssertEqual(loaded.family, "diffusers DiT", id)
            XCTAssertTrue(CheckpointDiff(loaded.tensors, expected.tensors).isEqual, id)
            XCTAssertTrue(loaded.path.hasPrefix(root + "/hf/hub/models--facebook--DiT-XL-2-256/snapshots/\(commit)"), loaded.path)
            XCTAssertTrue(loaded.notes.first?.contains("Hugging Face cache") == true, id)
        }
        // The pipeline knows its scheduler (the objective); the bare transformer folder does not.
        XCTAssertEqual(try CheckpointLoader.load("facebook/DiT-XL-2-256", environment: env).objective, expected.objective)
    }
}
