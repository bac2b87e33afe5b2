import XCTest

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@testable import PPFileIO

private struct FillFailed: Error {}

final class FileOutputTests: XCTestCase {
    private var folder = ""
    override func setUp() { folder = makeTemporaryFolder() }
    override func tearDown() { FileOutput.removeTree(folder) }

    func testWriteFileIsAtomicAndLeavesNoTemporary() throws {
        let path = "\(folder)/out.bin"
        try FileOutput.writeFile(path, bytes: [1, 2, 3])
        XCTAssertEqual(try readWholeFile(path), [1, 2, 3])
        try FileOutput.writeFile(path, bytes: [9])       // replaces
        XCTAssertEqual(try readWholeFile(path), [9])
        XCTAssertEqual(listFolder(folder), ["out.bin"])
        var st = stat()
        XCTAssertEqual(stat(path, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o644)
    }

    /// The flush to disk is scoped: on inside `withValue(true)`, off again after it (the default), and a
    /// flushed write lands like any other (the fsync path runs; a failing fsync would throw).
    func testFlushToDiskIsScoped() throws {
        XCTAssertFalse(FileOutput.flushToDisk)
        let path = "\(folder)/flushed.bin"
        try FileOutput.$flushToDisk.withValue(true) {
            XCTAssertTrue(FileOutput.flushToDisk)
            try FileOutput.writeFile(path, bytes: [4, 5])
        }
        XCTAssertFalse(FileOutput.flushToDisk)
        XCTAssertEqual(try readWholeFile(path), [4, 5])
        XCTAssertEqual(listFolder(folder), ["flushed.bin"])
    }

    /// What a killed run left (temporaries of a process that no longer exists) is removed by the next
    /// write of the same output; a running process's temporaries are kept.
    func testStaleTemporariesOfDeadProcessesAreRemoved() throws {
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/true"), nil]
        defer { free(argv[0]) }
        XCTAssertEqual(posix_spawn(&pid, "/bin/true", nil, nil, argv, nil), 0)
        var status: Int32 = 0
        XCTAssertEqual(waitpid(pid, &status, 0), pid)                 // now certainly dead
        let dead = "\(folder)/.model.tmp-\(pid)-AbC123"
        XCTAssertEqual(mkdir(dead, 0o755), 0)
        try FileOutput.writeFile("\(dead)/model.safetensors", bytes: [1])
        let deadFile = "\(folder)/.out.bin.tmp-\(pid)-XyZ789"
        try FileOutput.writeFile(deadFile, bytes: [2])
        let alive = "\(folder)/.model.tmp-\(getpid())-Keep01"
        XCTAssertEqual(mkdir(alive, 0o755), 0)
        try FileOutput.writeFolder("\(folder)/model") { try FileOutput.writeFile("\($0)/x", bytes: [3]) }
        try FileOutput.writeFile("\(folder)/out.bin", bytes: [4])
        XCTAssertEqual(Set(listFolder(folder)), [".model.tmp-\(getpid())-Keep01", "model", "out.bin"])
    }

    func testUncommittedFileLeavesNothing() throws {
        let path = "\(folder)/never.bin"
        var pending: FileOutput.PendingFile? = try FileOutput.PendingFile(path: path)
        try pending!.write("partial")
        XCTAssertEqual(listFolder(folder).count, 1)   // only the temporary exists meanwhile
        XCTAssertTrue(listFolder(folder).first?.hasPrefix(".never.bin.tmp-") ?? false)
        pending = nil                                 // deinit abandons it
        XCTAssertEqual(listFolder(folder), [])
        // An explicit abandon() keeps a previous file intact.
        try FileOutput.writeFile(path, bytes: [7])
        let f = try FileOutput.PendingFile(path: path)
        try f.write([8, 8])
        f.abandon()
        XCTAssertEqual(try readWholeFile(path), [7])
        XCTAssertEqual(listFolder(folder), ["never.bin"])
    }

    func testWriteFolderCreatesAndReplaces() throws {
        let out = "\(folder)/model"
        try FileOutput.writeFolder(out) { tmp in
            XCTAssertNotEqual(tmp, out)
            try FileOutput.writeFile("\(tmp)/a.txt", bytes: Array("one".utf8))
            try FileOutput.writeFile("\(tmp)/old-only.txt", bytes: [0])
        }
        XCTAssertEqual(listFolder(out), ["a.txt", "old-only.txt"])
        try FileOutput.writeFolder(out) { tmp in
            // The previous folder is still complete while the new one is filled.
            XCTAssertEqual(listFolder(out), ["a.txt", "old-only.txt"])
            try FileOutput.writeFile("\(tmp)/a.txt", bytes: Array("two".utf8))
        }
        XCTAssertEqual(listFolder(out), ["a.txt"])
        XCTAssertEqual(try readWholeFile("\(out)/a.txt"), Array("two".utf8))
        XCTAssertEqual(listFolder(folder), ["model"])   // no temporary or ".old" folder left
    }

    func testThrowingFillKeepsPreviousFolder() throws {
        let out = "\(folder)/model"
        try FileOutput.writeFolder(out) { tmp in try FileOutput.writeFile("\(tmp)/a.txt", bytes: [1]) }
        XCTAssertThrowsError(try FileOutput.writeFolder(out) { tmp in
            try FileOutput.writeFile("\(tmp)/a.txt", bytes: [2])
            mkdir("\(tmp)/sub", 0o755)
            try FileOutput.writeFile("\(tmp)/sub/b.txt", bytes: [3])
            throw FillFailed()
        }) { XCTAssertTrue($0 is FillFailed) }
        XCTAssertEqual(try readWholeFile("\(out)/a.txt"), [1])
        XCTAssertEqual(listFolder(out), ["a.txt"])
        XCTAssertEqual(listFolder(folder), ["model"])
        // A throwing first write leaves no folder at all.
        XCTAssertThrowsError(try FileOutput.writeFolder("\(folder)/fresh") { _ in throw FillFailed() })
        XCTAssertEqual(listFolder(folder), ["model"])
    }

    func testWriteFolderRefusesToReplaceAFile() throws {
        let path = "\(folder)/plain"
        try FileOutput.writeFile(path, bytes: [5])
        XCTAssertThrowsError(try FileOutput.writeFolder(path) { tmp in try FileOutput.writeFile("\(tmp)/x", bytes: [1]) }) {
            XCTAssertEqual(($0 as? PPError)?.kind, .io)
        }
        XCTAssertEqual(try readWholeFile(path), [5])
        XCTAssertEqual(listFolder(folder), ["plain"])
    }

    func testPathHelpers() {
        XCTAssertEqual(FileOutput.directory(of: "a/b/c.bin"), "a/b")
        XCTAssertEqual(FileOutput.directory(of: "c.bin"), ".")
        XCTAssertEqual(FileOutput.directory(of: "/c.bin"), "/")
        XCTAssertEqual(FileOutput.baseName(of: "a/b/c.bin"), "c.bin")
        XCTAssertEqual(FileOutput.baseName(of: "a/b/"), "b")
        XCTAssertEqual(FileOutput.baseName(of: "c"), "c")
    }
}
