import DogestryCore
import Foundation

/// A remote held in memory, for tests of the sync logic and of the conformance suite itself:
/// it behaves as every remote must (atomic puts, key validation, listing by prefix, times) and
/// runs in microseconds. Staged files live in the temporary directory.
public final class MemoryRemote: Remote, @unchecked Sendable {
    private let lock = NSLock()
    private var objects: [String: (bytes: [UInt8], modified: Date)] = [:]
    public let displayURL: String

    public init(name: String = "memory") { displayURL = "memory://" + name }

    func validate(_ key: String) throws {
        let comps = key.split(separator: "/", omittingEmptySubsequences: false)
        guard !key.isEmpty, !key.hasPrefix("/"), !key.utf8.contains(0),
              comps.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." }) else {
            throw DogestryError.invalid("invalid object key \"\(key)\" for \(displayURL)")
        }
    }

    public func stat(_ key: String) throws -> RemoteObject? {
        try validate(key)
        lock.lock(); defer { lock.unlock() }
        return objects[key].map { RemoteObject(key: key, size: Int64($0.bytes.count), modified: $0.modified) }
    }

    public func open(_ key: String) throws -> ByteSource {
        try validate(key)
        lock.lock(); defer { lock.unlock() }
        guard let o = objects[key] else { throw DogestryError.notFound("\(key) not found on \(displayURL)") }
        return MemorySource(o.bytes)
    }

    public func put(_ key: String, bytes: [UInt8]) throws {
        try validate(key)
        lock.lock(); objects[key] = (bytes, Date()); lock.unlock()
    }

    public func put(_ key: String, file: StagedFile, size: Int64) throws {
        try validate(key)
        let bytes = try FileSource(path: file.path, what: "staged file for \(key)").readAll(limit: Int(max(0, size)) + 1, what: "staged file for \(key)")
        guard bytes.count == size else {
            throw DogestryError.corrupt("staged file for \(key) on \(displayURL) holds \(bytes.count) bytes, expected \(size)")
        }
        try put(key, bytes: bytes)
    }

    public func delete(_ key: String) throws {
        try validate(key)
        lock.lock(); objects[key] = nil; lock.unlock()
    }

    public func list(prefix: String, _ each: (RemoteObject) throws -> Void) throws {
        lock.lock()
        let found = objects.filter { $0.key.hasPrefix(prefix) }
            .map { RemoteObject(key: $0.key, size: Int64($0.value.bytes.count), modified: $0.value.modified) }
        lock.unlock()
        for o in found { try each(o) }
    }

    public func makeStagedFile() throws -> StagedFile { try TempDirectory.staged(prefix: "dogestry-memory") }

    public func check() throws -> String {
        lock.lock(); defer { lock.unlock() }
        return "\(displayURL): in memory, \(objects.count) objects"
    }
}
