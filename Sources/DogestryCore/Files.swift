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
    public init(regularFile path: String, what: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW)
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
    }

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
