import DogestryCore

/// containerd's `hosts.toml` (its registry `config_path`) that sends pulls of one registry's
/// images to a `dogestry serve` mirror first.
public enum HostsToml {
    /// The file for `registry` (`docker.io`, `ghcr.io`, `registry.example.com:5000`) with
    /// `mirror` (`http://127.0.0.1:5000`) as its first host.
    public static func render(registry: String, mirror: String, clientCertificate: Bool = false) throws -> String {
        let host = registry.lowercased()
        guard !host.contains("/"), host == "docker.io" || isHost(host) else {
            throw DogestryError.invalid("invalid registry \(host): expected a host name with an optional port (docker.io, ghcr.io, registry.example.com:5000)")
        }
        let upstream = host == "docker.io" ? "https://registry-1.docker.io" : "https://\(host)"
        var lines = [
            "# /etc/containerd/certs.d/\(host)/hosts.toml",
            "# (containerd's config_path; docs/SERVE.md). Pulls of \(host)/… try dogestry serve first,",
            "# then \(upstream) if the mirror does not have the image.",
            "server = \"\(upstream)\"",
            "",
            "[host.\"\(mirror)\"]",
            "  capabilities = [\"pull\", \"resolve\"]",
        ]
        if mirror.hasPrefix("https://") {
            lines.append("  # ca = \"/etc/dogestry/serve-ca.crt\"   # the CA of serve's --tls-cert, unless the system trusts it")
        }
        if clientCertificate {
            lines.append("  client = [[\"/etc/dogestry/node.crt\", \"/etc/dogestry/node.key\"]]   # a certificate serve's --tls-client-ca signed")
        }
        return lines.joined(separator: "\n")
    }

    static func isHost(_ h: String) -> Bool {
        ImageReference.isValidName(h + "/x") && (h.contains(".") || h.contains(":") || h == "localhost")
    }
}
