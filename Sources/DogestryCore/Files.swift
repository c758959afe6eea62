import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Reads a file (or an inherited descriptor such as stdin) through a POSIX descriptor.
public final class FileSource: SeekableSource {
    public let path: String
    let fd: Int32
    let owns: Bool

    /// Opens `path` for reading; `what` names it in errors.
    public init(path: String, what: String? = nil) throws {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { throw DogestryError.io("cannot open \(what ?? path): \(errnoString())") }
        var st = stat()
        if fstat(fd, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR {
            close(fd)
            throw DogestryError.io("cannot read \(what ?? path): it is a directory")
        }
        self.fd = fd; self.owns = true
    }
    /// Opens `path` for reading only if it is a regular file: a FIFO, device, socket or directory
    /// is refused without blocking (it is opened non-blocking, checked with `fstat`, then read
    /// normally), and so is a symlink as the last component. `what` names it in errors.
    public convenience init(regularFile path: String, what: String) throws {
        try self.init(regularFile: path, in: AT_FDCWD, path: path, what: what)
    }

    /// The same for `name` relative to the open directory `directory` (`openat`), `path` naming
    /// it for messages: a caller walking a tree one component at a time opens its files so.
    public init(regularFile name: UnsafePointer<CChar>, in directory: Int32, path: String, what: String) throws {
        self.path = path
        let fd = openat(directory, name, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW)
        if fd < 0 {
            if errno == ELOOP { throw DogestryError.invalid("\(what) is a symbolic link, not a regular file") }
            throw DogestryError.io("cannot open \(what): \(errnoString())")
        }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw DogestryError.invalid("\(what) is not a regular file")
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        self.fd = fd; self.owns = true
    }

    /// Wraps an existing descriptor (not closed by this object).
    public init(descriptor: Int32, name: String) { self.fd = descriptor; self.path = name; self.owns = false }
    deinit { if owns { close(fd) } }

    public static func standardInput() -> FileSource { FileSource(descriptor: 0, name: "standard input") }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            if errno == EINTR { continue }
            throw DogestryError.io("cannot read \(path): \(errnoString())")
        }
    }

    /// Reads at an absolute offset (for ranged access).
    public func pread(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        while true {
            let n = Glibc.pread(fd, buffer.baseAddress, buffer.count, off_t(offset))
            if n >= 0 { return n }
            if errno == EINTR { continue }
            throw DogestryError.io("cannot read \(path): \(errnoString())")
        }
    }

    public func skipForward(_ count: Int64) throws -> Bool {
        guard let total = size() else { return false }
        let pos = lseek(fd, 0, SEEK_CUR)
        guard pos >= 0 else { return false }
        if Int64(pos) + count > total { throw DogestryError.corrupt("\(path) is truncated") }
        return lseek(fd, off_t(count), SEEK_CUR) >= 0
    }

    public func size() -> Int64? {
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return nil }
        return Int64(st.st_size)
    }
}

/// Writes a file through a POSIX descriptor. `close()` fsyncs (when asked) and closes.
public final class FileSink: ByteSink {
    public let path: String
    let fd: Int32
    let owns: Bool
    let sync: Bool
    var closed = false
    /// Bytes written, and how far writeback has been started (sync mode).
    private var written: Int64 = 0
    private var writebackStarted: Int64 = 0
    /// With `sync`, writeback of every this many bytes is started as soon as they are written, so
    /// the disk works while the data still streams and the fsync at `close` has little left to do.
    static let writebackChunk: Int64 = 8 << 20

    /// Creates `path` (failing if it exists when `exclusive`).
    public init(path: String, exclusive: Bool = true, sync: Bool = false, mode: mode_t = 0o644) throws {
        self.path = path
        let flags = O_WRONLY | O_CREAT | O_CLOEXEC | (exclusive ? O_EXCL : O_TRUNC)
        let fd = open(path, flags, mode)
        if fd < 0 { throw DogestryError.io("cannot create \(path): \(errnoString())") }
        self.fd = fd; self.owns = true; self.sync = sync
    }
    public init(descriptor: Int32, name: String) { self.fd = descriptor; self.path = name; self.owns = false; self.sync = false }
    deinit { if owns && !closed { Glibc.close(fd) } }

    public static func standardOutput() -> FileSink { FileSink(descriptor: 1, name: "standard output") }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        var off = 0
        while off < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + off, bytes.count - off)
            if n < 0 {
                if errno == EINTR { continue }
                throw DogestryError.io("cannot write \(path): \(errnoString())")
            }
            off += n
        }
        written += Int64(bytes.count)
        if sync, written - writebackStarted >= Self.writebackChunk {
            _ = Self.syncFileRange?(fd, writebackStarted, written - writebackStarted, 2 /* SYNC_FILE_RANGE_WRITE */)
            writebackStarted = written
        }
    }

    /// glibc's sync_file_range(2) (not declared by Swift's Glibc module); nil where it is missing.
    static let syncFileRange: (@convention(c) (Int32, Int64, Int64, UInt32) -> Int32)? = {
        guard let h = dlopen(nil, RTLD_NOW), let f = dlsym(h, "sync_file_range") else { return nil }
        return unsafeBitCast(f, to: (@convention(c) (Int32, Int64, Int64, UInt32) -> Int32).self)
    }()

    public func close() throws {
        guard !closed else { return }
        closed = true
        guard owns else { return }
        if sync && fsync(fd) != 0 {
            let e = errnoString(); Glibc.close(fd)
            throw DogestryError.io("cannot sync \(path): \(e)")
        }
        if Glibc.close(fd) != 0 { throw DogestryError.io("cannot close \(path): \(errnoString())") }
    }
}

/// Small filesystem helpers.
public enum FS {
    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// mkdir -p.
    public static func makeDirectories(_ path: String) throws {
        if isDirectory(path) { return }
        let parent = (path as NSString).deletingLastPathComponent
        if !parent.isEmpty && parent != path { try makeDirectories(parent) }
        if mkdir(path, 0o755) != 0 && errno != EEXIST {
            throw DogestryError.io("cannot create directory \(path): \(errnoString())")
        }
    }

    /// rename(2), then fsync of the destination directory so the new name is durable.
    public static func renameDurably(_ from: String, _ to: String) throws {
        if rename(from, to) != 0 { throw DogestryError.io("cannot rename \(from) to \(to): \(errnoString())") }
        syncDirectory((to as NSString).deletingLastPathComponent)
    }

    public static func syncDirectory(_ dir: String) {
        let fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 { fsync(fd); close(fd) }
    }

    public static func remove(_ path: String) { unlink(path) }

    /// File facts from stat(2), following symlinks; nil if the path does not exist (other errors throw).
    public struct Info { public var isFile: Bool; public var isDirectory: Bool; public var size: Int64; public var modified: Date }
    public static func info(_ path: String, followLinks: Bool = true) throws -> Info? {
        var st = stat()
        if (followLinks ? stat(path, &st) : lstat(path, &st)) != 0 {
            if errno == ENOENT || errno == ENOTDIR { return nil }
            throw DogestryError.io("cannot stat \(path): \(errnoString())")
        }
        let fmt = st.st_mode & S_IFMT
        return Info(isFile: fmt == S_IFREG, isDirectory: fmt == S_IFDIR, size: Int64(st.st_size),
                    modified: Date(timeIntervalSince1970: TimeInterval(st.st_mtim.tv_sec) + TimeInterval(st.st_mtim.tv_nsec) / 1e9))
    }

    /// `path` with every symlink resolved; nil when it does not exist.
    public static func realPath(_ path: String) -> String? {
        guard let r = realpath(path, nil) else { return nil }
        defer { free(r) }
        return String(cString: r)
    }

    /// A unique temporary path inside `dir`.
    public static func tempPath(in dir: String, prefix: String = "tmp") -> String {
        var bytes = [UInt8](repeating: 0, count: 8)
        for i in 0..<8 { bytes[i] = UInt8.random(in: 0...255) }
        return dir + "/" + prefix + "-" + hexString(bytes)
    }

    /// Writes a whole file atomically: temp file in the same directory, fsync, rename.
    public static func writeAtomically(_ path: String, bytes: [UInt8]) throws {
        let dir = (path as NSString).deletingLastPathComponent
        let tmp = tempPath(in: dir, prefix: ".tmp")
        let sink = try FileSink(path: tmp, sync: true)
        do { try sink.write(bytes); try sink.close(); try renameDurably(tmp, path) } catch { remove(tmp); throw error }
    }
}

/// A file with no name in `directory` until `publish(at:)` links it into place: Linux's
/// `O_TMPFILE`, so an interrupted or killed process leaves nothing behind. Where the file system
/// cannot make unnamed files, a named one (`.PREFIX-PID-RANDOM`) is used instead, removed on
/// `discard`, and swept by later runs once its process is gone (`AnonymousFile.sweep`).
public final class AnonymousFile {
    public let directory: String
    let fd: Int32
    /// The fallback file's name, when the file has one.
    let named: String?
    private var done = false

    /// `O_TMPFILE` as Linux defines it (`__O_TMPFILE | O_DIRECTORY`; Glibc's macro is not imported).
    static let oTmpFile: Int32 = 0o20000000 | O_DIRECTORY

    public init(in directory: String, prefix: String, mode: mode_t = 0o644) throws {
        self.directory = directory
        var fd = open(directory, Self.oTmpFile | O_RDWR | O_CLOEXEC, mode)
        if fd >= 0 {
            named = nil
        } else if errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL {
            let p = directory + "/." + prefix + "-\(getpid())-" + String(UInt64.random(in: 0...UInt64.max), radix: 16)
            fd = open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode)
            named = p
        } else {
            named = nil
        }
        if fd < 0 { throw DogestryError.io("cannot create a temporary file in \(directory): \(errnoString())") }
        self.fd = fd
        fchmod(fd, mode)
    }

    deinit { discard() }

    /// A path that opens the file.
    public var path: String { named ?? "/proc/self/fd/\(fd)" }

    /// fsyncs the file, links it at `target` (replacing it) and fsyncs the directory.
    public func publish(at target: String) throws {
        if fsync(fd) != 0 { throw DogestryError.io("cannot sync the temporary file for \(target): \(errnoString())") }
        if let n = named {
            try FS.renameDurably(n, target)
        } else {
            // linkat cannot replace: link under a fresh name beside the target, then rename over it.
            let dir = (target as NSString).deletingLastPathComponent
            let tmp = dir + "/." + (target as NSString).lastPathComponent + ".link-\(getpid())-" + String(UInt64.random(in: 0...UInt64.max), radix: 16)
            if linkat(AT_FDCWD, "/proc/self/fd/\(fd)", AT_FDCWD, tmp, AT_SYMLINK_FOLLOW) != 0 {
                throw DogestryError.io("cannot create \(target): \(errnoString())")
            }
            do { try FS.renameDurably(tmp, target) } catch { unlink(tmp); throw error }
        }
        done = true
        close(fd)
    }

    /// Closes (and, for a named fallback, removes) the file.
    public func discard() {
        guard !done else { return }
        done = true
        close(fd)
        if let n = named { unlink(n) }
    }

    /// Removes `.PREFIX-PID-…` files in `directory` whose process is gone (named fallbacks and
    /// links of runs that were killed).
    public static func sweep(_ directory: String, prefix: String) {
        guard let d = opendir(directory) else { return }
        var dead: [String] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            guard name.hasPrefix("." + prefix) else { continue }
            let parts = name.split(separator: "-")
            guard parts.count >= 3, let pid = Int32(parts[parts.count - 2]), pid > 0, pid != getpid() else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { dead.append(directory + "/" + name) }
        }
        closedir(d)
        for p in dead { unlink(p) }
    }
}
