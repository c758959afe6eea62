import DogestryCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A repository in a local directory (or any mounted filesystem).
///
/// Every write is a temporary file in `<root>/.dogestry-tmp`, fsync, then rename, so readers
/// never see partial objects and an interrupted push leaves only temporary files behind.
public final class LocalRemote: Remote {
    public let root: String
    public var displayURL: String { "file://" + root }
    static let stagingDirName = ".dogestry-tmp"
    var stagingDir: String { root + "/" + Self.stagingDirName }

    /// Opens an existing directory; throws a one-line error if it is missing or not a directory.
    public init(path: String) throws {
        var p = path
        if !p.hasPrefix("/") { p = FileManager.default.currentDirectoryPath + "/" + p }
        p = (p as NSString).standardizingPath
        guard FS.exists(p) else { throw DogestryError.notFound("remote directory \(p) does not exist") }
        guard FS.isDirectory(p) else { throw DogestryError.invalid("remote \(p) is not a directory") }
        self.root = p
        self.realRoot = FS.realPath(p) ?? p
    }

    /// The root with every symlink resolved: no object may lie outside it.
    let realRoot: String

    /// `key`'s path, refusing it when a symlink on the way (`repositories/` → `/elsewhere`)
    /// leads outside the root. A path that does not exist yet is checked through its nearest
    /// existing ancestor, so a write cannot leave the root either.
    func checkedPath(_ key: String) throws -> String {
        let p = try path(key)
        var probe = p
        while probe.count > root.count {
            if let real = FS.realPath(probe) {
                guard real == realRoot || real.hasPrefix(realRoot + "/") else {
                    throw DogestryError.invalid("\(key) on \(displayURL) is reached through a link that leads outside the remote")
                }
                break
            }
            probe = (probe as NSString).deletingLastPathComponent
        }
        return p
    }

    /// Validates a key and returns its absolute path.
    func path(_ key: String) throws -> String {
        let comps = key.split(separator: "/", omittingEmptySubsequences: false)
        guard !key.isEmpty, !key.hasPrefix("/"),
              comps.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." && !$0.hasPrefix(".dogestry") }),
              !key.utf8.contains(0) else {
            throw DogestryError.invalid("invalid object key \"\(key)\" for \(displayURL)")
        }
        return root + "/" + key
    }

    public func stat(_ key: String) throws -> RemoteObject? {
        let p = try checkedPath(key)
        guard let info = try FS.info(p) else { return nil }
        guard info.isFile || info.isDirectory else { throw DogestryError.invalid("\(key) on \(displayURL) is not a regular file") }
        guard info.isFile else { return nil }
        return RemoteObject(key: key, size: info.size, modified: info.modified)
    }

    public func open(_ key: String) throws -> ByteSource {
        let p = try checkedPath(key)
        guard FS.exists(p) else { throw DogestryError.notFound("\(key) not found on \(displayURL)") }
        return try FileSource(regularFile: p, what: "\(key) on \(displayURL)")
    }

    private func ensureParent(_ p: String) throws {
        try FS.makeDirectories((p as NSString).deletingLastPathComponent)
    }

    /// Renames a staged file into place; a concurrent `delete` may remove the freshly made
    /// parent directory (it prunes empty directories), so that case is retried.
    private func publish(_ staged: StagedFile, _ p: String) throws {
        for attempt in 0..<5 {
            try ensureParent(p)
            do { try staged.publish(at: p); return } catch {
                if attempt == 4 || FS.exists((p as NSString).deletingLastPathComponent) { throw error }
            }
        }
    }

    public func put(_ key: String, bytes: [UInt8]) throws {
        let p = try checkedPath(key)
        let staged = try makeStagedFile()
        let sink = try staged.sink(sync: true)
        try sink.write(bytes)
        try sink.close()
        try publish(staged, p)
    }

    public func put(_ key: String, file: StagedFile, size: Int64) throws {
        let p = try checkedPath(key)
        guard let actual = try FS.info(file.path), actual.isFile else {
            throw DogestryError.io("staged file for \(key) on \(root) is missing")
        }
        guard actual.size == size else {
            throw DogestryError.corrupt("staged file for \(key) on \(root) holds \(actual.size) bytes, expected \(size)")
        }
        if file.directory == stagingDir {
            // Staged here already: linking it into place publishes it.
            try publish(file, p)
            return
        }
        let staged = try makeStagedFile()
        let sink = try staged.sink(sync: true)
        try FileSource(path: file.path).copy(to: sink)
        try sink.close()
        try publish(staged, p)
    }

    public func delete(_ key: String) throws {
        let p = try checkedPath(key)
        if unlink(p) != 0 && errno != ENOENT {
            // A "directory" of other keys, or a path below an object, is not an object: nothing to delete.
            if errno == EISDIR || errno == ENOTDIR { return }
            throw DogestryError.io("cannot delete \(p): \(errnoString())")
        }
        // Remove directories left empty (refs of deleted repositories), never the root.
        var dir = (p as NSString).deletingLastPathComponent
        while dir.count > root.count && rmdir(dir) == 0 { dir = (dir as NSString).deletingLastPathComponent }
    }

    public func list(prefix: String, _ each: (RemoteObject) throws -> Void) throws {
        let baseKey = prefix.contains("/") ? String(prefix[..<prefix.lastIndex(of: "/")!]) : ""
        // The directory part must be a valid key: "../" must not walk out of the root.
        if !baseKey.isEmpty { _ = try checkedPath(baseKey) }
        let baseDir = baseKey.isEmpty ? root : root + "/" + baseKey
        guard FS.isDirectory(baseDir) else { return }
        try walk(baseDir, keyPrefix: baseKey.isEmpty ? "" : baseKey + "/") { obj in
            if obj.key.hasPrefix(prefix) { try each(obj) }
        }
    }

    /// The entries of `dir` other than `.` and `..` (none when it does not exist).
    static func entries(of dir: String) throws -> [String] {
        guard let d = opendir(dir) else {
            if errno == ENOENT { return [] }
            throw DogestryError.io("cannot list \(dir): \(errnoString())")
        }
        defer { closedir(d) }
        var names: [String] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    private func walk(_ dir: String, keyPrefix: String, _ each: (RemoteObject) throws -> Void) throws {
        for name in try Self.entries(of: dir) where !name.hasPrefix(".dogestry") {
            let full = dir + "/" + name
            guard let info = try FS.info(full, followLinks: false) else { continue }   // symlinks are not objects
            if info.isDirectory {
                try walk(full, keyPrefix: keyPrefix + name + "/", each)
            } else if info.isFile {
                try each(RemoteObject(key: keyPrefix + name, size: info.size, modified: info.modified))
            }
        }
    }

    public func makeStagedFile() throws -> StagedFile {
        if !FS.isDirectory(stagingDir) {
            if mkdir(stagingDir, 0o755) != 0 && errno != EEXIST {
                throw DogestryError.io("remote \(root) is not writable: \(errnoString())")
            }
        }
        if access(stagingDir, W_OK) != 0 {
            throw DogestryError.io("remote \(root) is not writable: \(errnoString())")
        }
        return try StagedFile(in: stagingDir, prefix: "blob", durable: true)
    }

    public func check() throws -> String {
        let staged = try makeStagedFile()
        let sink = try staged.sink(sync: false)
        try sink.write([0])
        try sink.close()
        staged.discard()
        return "local directory \(root) (readable and writable)"
    }
}

/// Files left in `<root>/.dogestry-tmp` (a push killed while compressing, a crash before a
/// rename) are the local remote's incomplete uploads. A live push keeps writing (or has just
/// renamed) its staging file, so its mtime stays young; prune only takes files older than its grace.
extension LocalRemote: UploadSweeping {
    public func listIncompleteUploads(_ each: (IncompleteUpload) throws -> Void) throws {
        for name in try Self.entries(of: stagingDir).sorted() {
            guard let info = try FS.info(stagingDir + "/" + name, followLinks: false), info.isFile else { continue }
            try each(IncompleteUpload(key: Self.stagingDirName + "/" + name, id: name, initiated: info.modified, size: info.size))
        }
    }

    public func abortIncompleteUpload(_ upload: IncompleteUpload) throws {
        guard !upload.id.isEmpty, !upload.id.contains("/"), upload.id != ".", upload.id != ".." else {
            throw DogestryError.invalid("invalid staging file name \"\(upload.id)\" for \(displayURL)")
        }
        let p = stagingDir + "/" + upload.id
        if unlink(p) != 0 && errno != ENOENT { throw DogestryError.io("cannot remove \(p): \(errnoString())") }
    }
}
