// swift-tools-version:6.0
// A package that uses the PPFlow toolkit as a library: load the digits SiT, convert it to PPFlow-2 in
// memory, verify it and sample one digit per class (docs/LIBRARY.md).
import PackageDescription

// SwiftPM names a path dependency after its folder: the repository's folder, two levels up, whatever
// the checkout is called.
let toolkitIdentity = String(Context.packageDirectory.split(separator: "/").dropLast(2).last ?? "ppflow")

let package = Package(
    name: "PPFlowLibraryExample",
    dependencies: [
        // The toolkit itself; from elsewhere: .package(url: "<the toolkit's git URL>", branch: "main").
        .package(path: "../.."),
    ],
    targets: [
        .executableTarget(name: "digits-ppflow", dependencies: [.product(name: "PPFlowKit", package: toolkitIdentity)]),
    ],
    swiftLanguageModes: [.v6]
)
