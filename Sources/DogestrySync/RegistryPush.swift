import DogestryCore
import DogestryRemotes
import Foundation

/// `push` into a remote that keeps blobs per image name (an OCI registry).
///
/// A registry cannot be asked which layers it holds by diffID, and a `docker save` archive names
/// its images only after their layers, so the images are first pushed into a staging dogestry
/// remote on local disk (under `[transfer] tempdir` / `TMPDIR`, removed afterwards), where layers
/// are compressed once, then a `Copier` sends the registry what it lacks: blobs first (a `HEAD`
/// each), manifests after them, tags last. An interrupted push leaves no tag in the registry.
public enum StagedRegistryPush {
    /// Runs `push` against `destination`, or, when it is a registry, against a staging remote
    /// and then copies what it pushed into `destination`. The report counts layers as the
    /// destination saw them (uploaded or already there).
    public static func run(into destination: ImageDestination, options: TransferOptions, progress: ProgressReporter,
                           threads: Int, push: (Pusher) throws -> PushReport) throws -> PushReport {
        if let repo = destination.repository {
            return try push(Pusher(repository: repo, options: options, progress: progress))
        }
        let dir = FS.tempPath(in: TempDirectory.path, prefix: "dogestry-push-stage")
        do { try FS.makeDirectories(dir) } catch let e as DogestryError {
            throw DogestryError.io("temporary directory ([transfer] tempdir or TMPDIR) unusable: \(e.message)")
        }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let stage = Repository(remote: try LocalRemote(path: dir))
        let staged = try push(Pusher(repository: stage, options: options, progress: progress))
        let copier = Copier(source: RepositoryImageStore(stage), destination: destination, progress: progress, threads: threads)
        var items: [CopyItem] = []
        for image in staged.images where !image.tags.isEmpty {
            let name = try ImageReference(parsing: image.tags[0]).name
            items.append(try copier.item(name: name, top: image.manifest, tags: image.tags))
        }
        let copied = try copier.copy(items)
        var report = staged
        let layers = copied.blobs.filter { $0.kind == .layer }
        report.layersUploaded = layers.filter { $0.state == .copied }.count
        report.layersMounted = layers.filter { $0.state == .mounted }.count
        report.layersPresent = layers.count - report.layersUploaded
        report.bytesUploaded = layers.filter { $0.state == .copied }.reduce(0) { $0 + $1.size }
        report.blobsWritten = copied.blobs.filter { $0.state == .copied }.count
        return report
    }
}
