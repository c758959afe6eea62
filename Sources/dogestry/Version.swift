import CBuildInfo

/// What `dogestry --version` prints.
enum DogestryVersion {
    /// The release this tree is (docs/FORMAT.md versions the repository format separately).
    static let version = "0.9.0"
    /// The git commit of a packaged build (scripts/package); nil for a plain `swift build`.
    static var commit: String? {
        let c = String(cString: dogestry_build_commit())
        return c.isEmpty ? nil : c
    }
    static var description: String { "dogestry \(version)" + (commit.map { " (commit \($0))" } ?? "") }
}
