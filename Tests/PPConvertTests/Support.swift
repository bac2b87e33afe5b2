// The shared helpers (Paths, assertPPError, fileBytes, ...) for every file of this target.
@_exported import PPTestSupport
