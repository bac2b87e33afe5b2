import PPFileIO
import PPJSON
import PPTensor
import PPTrain
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// A recipe's model may be a Hugging Face hub id when no file of that name is beside the recipe.
final class RecipeHubIdTests: XCTestCase {
    func testStartCheckpointAcceptsAHubIdFoundInTheCache() throws {
        let folder = FineTuneSupport.scratch(self)
        let commit = String(repeating: "ab", count: 20)
        let snapshot = "\(folder)/hub/models--someone--ppf2/snapshots/\(commit)"
        for dir in ["\(folder)/hub", "\(folder)/hub/models--someone--ppf2", "\(folder)/hub/models--someone--ppf2/refs",
                    "\(folder)/hub/models--someone--ppf2/snapshots", snapshot] { mkdir(dir, 0o755) }
        try FileOutput.writeFile("\(folder)/hub/models--someone--ppf2/refs/main", bytes: Array(commit.utf8))
        XCTAssertEqual(symlink(Fixtures.path("ppf2.pt"), "\(snapshot)/ppf2.pt"), 0)
        let env = ["HF_HUB_CACHE": "\(folder)/hub"]

        var r = try FineTuneSupport.recipe(folder: folder)
        r["start"] = .object(JSONObject([("checkpoint", "someone/ppf2/ppf2.pt"), ("heads", 4)]))
        let recipe = try Recipe(json: .object(r), path: "\(folder)/r.json", environment: env)
        XCTAssertEqual(recipe.start, .checkpoint(path: "someone/ppf2/ppf2.pt", heads: 4), "kept as the id; the loader resolves it")

        r["start"] = .object(JSONObject([("checkpoint", "someone/absent"), ("heads", 4)]))
        do {
            _ = try Recipe(json: .object(r), path: "\(folder)/r.json", environment: env)
            XCTFail("accepted a hub id that is not in the cache")
        } catch let error as PPError {
            XCTAssertEqual(error.kind, .missingInput)
            XCTAssertEqual(error.entry, "start.checkpoint")
            XCTAssertTrue(error.description.contains("models--someone--absent does not exist"), error.description)
        }
    }
}
