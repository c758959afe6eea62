// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "dogestry",
    products: [
        .executable(name: "dogestry", targets: ["dogestry"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // The HTTP server of `dogestry serve` (README, "Why SwiftNIO").
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.30.0"),
    ],
    targets: [
        // C libraries, found through pkg-config.
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CLZ4", pkgConfig: "liblz4", providers: [.apt(["liblz4-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // Intel's ISA-L inflates gzip 2-3x faster than zlib (README, "Why ISA-L for gunzip").
        .systemLibrary(name: "CIsal", pkgConfig: "libisal", providers: [.apt(["libisal-dev"])]),
        .systemLibrary(name: "CLzma", pkgConfig: "liblzma", providers: [.apt(["liblzma-dev"])]),
        // Debian's libbz2-dev ships no pkg-config file: the module map links -lbz2 itself.
        .systemLibrary(name: "CBzip2", providers: [.apt(["libbz2-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),

        /// Digests, streams, tar, compression, image model, archives, repository format.
        .target(name: "DogestryCore", dependencies: ["CZstd", "CLZ4", "CZlib", "CIsal", "CLzma", "CBzip2", "COpenSSL"]),
        /// libcurl-based HTTP client shared by the engine client and the network remotes.
        .target(name: "DogestryHTTP", dependencies: ["DogestryCore", "CCurl"]),
        /// The `Remote` protocol and its implementations.
        .target(name: "DogestryRemotes", dependencies: ["DogestryCore", "DogestryHTTP", "COpenSSL"]),
        /// Docker Engine API client.
        .target(name: "DogestryEngine", dependencies: ["DogestryCore", "DogestryHTTP"]),
        /// Push, pull and maintenance logic; configuration.
        .target(name: "DogestrySync", dependencies: ["DogestryCore", "DogestryHTTP", "DogestryRemotes", "DogestryEngine"]),
        /// `dogestry serve`: the pull side of the OCI Distribution API over any remote (SwiftNIO).
        .target(name: "DogestryServe", dependencies: [
            "DogestryCore", "DogestryHTTP", "DogestryRemotes",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ]),
        /// The commit a release was built from (scripts/package writes it in as commit.inc).
        .target(name: "CBuildInfo"),
        /// The thin command-line front end.
        .executableTarget(name: "dogestry", dependencies: [
            "DogestrySync", "DogestryServe", "CBuildInfo",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        /// What several test targets share (loopback ports, child processes, the fault proxy).
        .target(name: "DogestryTestSupport", dependencies: ["DogestryCore", "DogestryHTTP"], path: "Tests/DogestryTestSupport"),
        .testTarget(name: "DogestryCoreTests", dependencies: ["DogestryCore"]),
        .testTarget(name: "DogestryRemotesTests", dependencies: ["DogestryRemotes", "DogestrySync", "DogestryTestSupport"]),
        .testTarget(name: "DogestryIntegrationTests", dependencies: ["DogestrySync", "DogestryEngine", "DogestryServe", "DogestryTestSupport"]),
        .testTarget(name: "DogestryEngineTests", dependencies: ["DogestryEngine", "DogestryTestSupport"]),
        .testTarget(name: "DogestryServeTests", dependencies: ["DogestryServe", "DogestrySync"]),
    ],
    swiftLanguageModes: [.v6]
)
