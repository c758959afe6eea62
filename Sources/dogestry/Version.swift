/// What `dogestry --version` prints.
enum DogestryVersion {
    /// The release this tree is (docs/FORMAT.md versions the repository format separately).
    static let version = "0.9.0"
    static var description: String { "dogestry \(version)" }
}
