// libFuzzer target: the fine-tuning recipe parser (strict JSON, then every field's checks). The
// recipe "lives" in recipes/, so the committed recipes' relative paths (../examples/digits/...) resolve.
import PPJSON
import PPTrain

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    guard let value = try? JSON.parse(bytes, origin: "recipes/fuzz.json") else { return 0 }
    guard let recipe = try? Recipe(json: value, path: "recipes/fuzz.json") else { return 0 }
    precondition(recipe.hash.count == 64, "recipe hash is not a sha256")
    return 0
}
