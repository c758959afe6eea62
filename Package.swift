// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "dogestry",
    products: [
        .executable(name: "dogestry", targets: ["dogestry"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // C libraries, found through pkg-config.
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CLZ4", pkgConfig: "liblz4", providers: [.apt(["liblz4-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CLzma", pkgConfig: "liblzma", providers: [.apt(["liblzma-dev"])]),
        // Debian's libbz2-dev ships no pkg-config file: the module map links -lbz2 itself.
        .systemLibrary(name: "CBzip2", providers: [.apt(["libbz2-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),

        /// Digests, streams, tar, compression, image model, archives, repository format.
        .target(name: "DogestryCore", dependencies: ["CZstd", "CLZ4", "CZlib", "CLzma", "CBzip2", "COpenSSL"]),
        /// libcurl-based HTTP client shared by the engine client and the network remotes.
        .target(name: "DogestryHTTP", dependencies: ["DogestryCore", "CCurl"]),
        /// The `Remote` protocol and its implementations.
        .target(name: "DogestryRemotes", dependencies: ["DogestryCore", "DogestryHTTP", "COpenSSL"]),
        /// Docker Engine API client.
        .target(name: "DogestryEngine", dependencies: ["DogestryCore", "DogestryHTTP"]),
        /// Push, pull and maintenance logic; configuration.
        .target(name: "DogestrySync", dependencies: ["DogestryCore", "DogestryHTTP", "DogestryRemotes", "DogestryEngine"]),
        /// The thin command-line front end.
        .executableTarget(name: "dogestry", dependencies: [
            "DogestrySync",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        .testTarget(name: "DogestryCoreTests", dependencies: ["DogestryCore"]),
        .testTarget(name: "DogestryRemotesTests", dependencies: ["DogestryRemotes", "DogestrySync"]),
        .testTarget(name: "DogestryIntegrationTests", dependencies: ["DogestrySync", "DogestryEngine"]),
        .testTarget(name: "DogestryEngineTests", dependencies: ["DogestryEngine"]),
    ],
    swiftLanguageModes: [.v6]
)
