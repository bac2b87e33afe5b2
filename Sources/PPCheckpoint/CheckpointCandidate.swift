import PPFileIO
import PPTensor
import PPTorchFormat

#if canImport(Glibc)
import Glibc
#endif

/// Whether a path in a folder of models is worth loading, for commands that walk folders (`migrate`).
/// Decided by content with the loader's own signatures (zip, safetensors header, pickle); a name with a
/// weights extension also counts, so a `0050000.pt` full of garbage is reported as broken rather than
/// passed over. Everything else (README.txt, a zip of images, a folder of logs) is not a checkpoint.
public enum CheckpointCandidate: Equatable, Sendable {
    case checkpoint(why: String)
    case notCheckpoint(why: String)

    /// Extensions of weights files, as the folder loader looks for them.
    public static let weightsExtensions = [".safetensors", ".pt", ".pth", ".bin", ".ckpt"]

    public static func classify(_ path: String) -> CheckpointCandidate {
        var st = stat()
        guard stat(path, &st) == 0 else { return .checkpoint(why: "unreadable") }   // the loader names the problem
        if (st.st_mode & S_IFMT) == S_IFDIR {
            guard let tree = try? DirectoryTree(path: path) else { return .checkpoint(why: "unreadable folder") }
            return tree.files.contains(where: isWeightsName)
                ? .checkpoint(why: "a folder with weights files")
                : .notCheckpoint(why: "a folder without weights files")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else { return .notCheckpoint(why: "not a regular file") }
        let namedLikeWeights = isWeightsName(FileOutput.baseName(of: path))
        guard st.st_size > 0, let storage = try? ByteStorage(mappingFile: path) else {
            return namedLikeWeights ? .checkpoint(why: "named like weights") : .notCheckpoint(why: "an empty file")
        }
        return storage.withBytes { bytes -> CheckpointCandidate in
            if ZipArchive.looksLikeZip(bytes) {
                // A zip that does not open is a damaged checkpoint as far as anyone can tell.
                guard let archive = try? ZipArchive(storage: storage, origin: path) else { return .checkpoint(why: "a zip signature") }
                if CheckpointLoader.isTorchArchive(archive) { return .checkpoint(why: "a torch.save archive") }
                return archive.entries.contains(where: { isWeightsName($0.name) })
                    ? .checkpoint(why: "a zip with weights files")
                    : .notCheckpoint(why: "a zip archive without weights files")
            }
            if bytes.count >= 9 && CheckpointLoader.looksLikeSafetensors(bytes) { return .checkpoint(why: "a safetensors header") }
            if bytes.count >= 2 && bytes[0] == 0x80 && bytes[1] <= 5 { return .checkpoint(why: "a pickle") }
            return namedLikeWeights ? .checkpoint(why: "named like weights") : .notCheckpoint(why: "no zip, safetensors or pickle signature")
        }
    }

    /// Weights files and sharded indexes (`model.safetensors.index.json` ends in neither).
    static func isWeightsName(_ name: String) -> Bool {
        weightsExtensions.contains { name.hasSuffix($0) } || name.hasSuffix(".safetensors.index.json")
    }
}
