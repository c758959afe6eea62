#!/usr/bin/env python3
"""Makes a small multi-layer image archive in the legacy `docker save` layout, with no engine.

usage: make_demo_archive.py OUT.tar [--tag NAME:TAG ...]

Default tags: demo/hello:1.0 and demo/hello:latest (one image, both tags).

Three layers of small real files from this machine, like the layers of a real image:
  1. "base"  part of /etc                      (at most ~400 KB, files of at most 64 KB)
  2. "docs"  part of /usr/share/doc            (at most ~1.5 MB)
  3. "app"   /usr/share/common-licenses subset + a generated /usr/local/bin/hello
Each layer also gets a small generated marker file, so a layer is never empty even on a
minimal machine where a source directory is missing.

The layout is what dockerd 20.10 `docker save` writes (see docs/ARCHIVES.md): entries in
lexical order of path: for every layer a `<v1id>/` directory holding VERSION, json and
layer.tar, the image config `<image id hex>.json` among them, then manifest.json and
repositories. The image config carries rootfs.diff_ids (sha256 of each layer.tar) and a
history entry per layer. Every tar header has mtime 0 and uid/gid 0, so the output only
changes when the source files do. Prints a JSON summary on standard output.
Standard library only.
"""
import hashlib, io, json, os, stat, sys, tarfile, tempfile

LAYERS = [
    # (name, [(root, max file size)], total cap in bytes, command shown in the history)
    ("base", [("/etc", 64 * 1024)], 400 * 1000, "COPY etc/ /etc/"),
    ("docs", [("/usr/share/doc", 256 * 1024)], 1500 * 1000, "COPY doc/ /usr/share/doc/"),
    ("app", [("/usr/share/common-licenses", 64 * 1024)], 200 * 1000, "COPY hello /usr/local/bin/hello"),
]

HELLO = b"""#!/bin/sh
# dogestry demo image
echo "hello from demo/hello"
"""

def norm(ti, mode=None):
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    ti.mtime = 0
    if mode is not None:
        ti.mode = mode
    return ti

def add_bytes(t, name, data, mode=0o644):
    ti = norm(tarfile.TarInfo(name), mode)
    ti.size = len(data)
    t.addfile(ti, io.BytesIO(data))

def add_dir(t, name, mode=0o755):
    ti = norm(tarfile.TarInfo(name), mode)
    ti.type = tarfile.DIRTYPE
    t.addfile(ti)

def build_layer(path, index, name, roots, cap):
    """Writes one layer tar to path; returns the number of content bytes in it."""
    total = 0
    seen_dirs = set()
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        def ensure_dirs(arc):
            parts = arc.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d and d not in seen_dirs:
                    seen_dirs.add(d)
                    add_dir(t, d)
        for root, max_file in roots:
            if not os.path.isdir(root):
                continue
            done = False
            for dirpath, dirs, files in os.walk(root):
                dirs.sort()
                for f in sorted(files):
                    p = os.path.join(dirpath, f)
                    try:
                        st = os.lstat(p)
                    except OSError:
                        continue
                    arc = p.lstrip("/")
                    if stat.S_ISLNK(st.st_mode):
                        ensure_dirs(arc)
                        ti = norm(tarfile.TarInfo(arc), 0o777)
                        ti.type = tarfile.SYMTYPE
                        ti.linkname = os.readlink(p)
                        t.addfile(ti)
                        continue
                    if not stat.S_ISREG(st.st_mode) or st.st_size > max_file or total + st.st_size > cap:
                        continue
                    try:
                        with open(p, "rb") as fh:
                            data = fh.read()
                    except OSError:
                        continue
                    ensure_dirs(arc)
                    add_bytes(t, arc, data, stat.S_IMODE(st.st_mode))
                    total += len(data)
                    if total >= cap * 0.95:
                        done = True
                        break
                if done:
                    break
        marker = ("etc/dogestry-demo/layer-%d-%s.txt" % (index + 1, name))
        ensure_dirs(marker)
        add_bytes(t, marker, ("dogestry demo layer %d (%s)\n" % (index + 1, name)).encode())
        if name == "app":
            ensure_dirs("usr/local/bin/hello")
            add_bytes(t, "usr/local/bin/hello", HELLO, 0o755)
            total += len(HELLO)
    return total

def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

def main(argv):
    args = list(argv)
    tags = []
    out = None
    while args:
        a = args.pop(0)
        if a == "--tag":
            if not args:
                sys.exit("make_demo_archive.py: --tag needs NAME:TAG")
            tags.append(args.pop(0))
        elif a in ("-h", "--help"):
            print(__doc__)
            return 0
        elif out is None:
            out = a
        else:
            sys.exit("usage: make_demo_archive.py OUT.tar [--tag NAME:TAG ...]")
    if out is None:
        sys.exit("usage: make_demo_archive.py OUT.tar [--tag NAME:TAG ...]")
    tags = tags or ["demo/hello:1.0", "demo/hello:latest"]
    for tag in tags:
        if ":" not in tag.rsplit("/", 1)[-1]:
            sys.exit("make_demo_archive.py: tag %r must be NAME:TAG" % tag)

    out = os.path.abspath(out)
    workdir = tempfile.mkdtemp(prefix="dogestry-demo-", dir=os.path.dirname(out))
    try:
        layers = []  # (v1 id, diff id hex, path, content bytes, history command)
        parent = ""
        for i, (name, roots, cap, cmd) in enumerate(LAYERS):
            p = os.path.join(workdir, "layer%d.tar" % i)
            content = build_layer(p, i, name, roots, cap)
            diff = sha256_file(p)
            # Like dockerd's v1 IDs: a chain over the parent ID and this layer's diffID.
            v1 = hashlib.sha256(("%s\n%s\n" % (parent, "sha256:" + diff)).encode()).hexdigest()
            layers.append((v1, diff, p, content, cmd))
            parent = v1

        created = "2026-01-01T00:00:00Z"
        img_config = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                      "Cmd": ["/usr/local/bin/hello"], "Labels": {"org.dogestry.demo": "1"}}
        config = json.dumps({
            "architecture": "amd64", "os": "linux", "created": created,
            "config": img_config,
            "history": [{"created": created, "created_by": cmd} for (_, _, _, _, cmd) in layers],
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + d for (_, d, _, _, _) in layers]},
        }, separators=(",", ":"), sort_keys=True).encode()
        cfg_hex = hashlib.sha256(config).hexdigest()

        entries = []  # (path, kind, payload): kind "dir", "bytes" or "file"
        prev = None
        for n, (v1, diff, p, _, _) in enumerate(layers):
            v1json = {"id": v1, "created": created, "container_config": {"Cmd": None}, "os": "linux"}
            if prev:
                v1json["parent"] = prev
            if n == len(layers) - 1:
                v1json["config"] = img_config
                v1json["architecture"] = "amd64"
            entries.append((v1 + "/", "dir", None))
            entries.append((v1 + "/VERSION", "bytes", b"1.0"))
            entries.append((v1 + "/json", "bytes", json.dumps(v1json, separators=(",", ":"), sort_keys=True).encode()))
            entries.append((v1 + "/layer.tar", "file", p))
            prev = v1
        entries.append((cfg_hex + ".json", "bytes", config))
        manifest = [{"Config": cfg_hex + ".json", "RepoTags": tags,
                     "Layers": [v1 + "/layer.tar" for (v1, _, _, _, _) in layers]}]
        repositories = {}
        for tag in tags:
            name, t = tag.rsplit(":", 1)
            repositories.setdefault(name, {})[t] = layers[-1][0]
        entries.sort(key=lambda e: e[0])
        entries.append(("manifest.json", "bytes", json.dumps(manifest, separators=(",", ":")).encode()))
        entries.append(("repositories", "bytes", json.dumps(repositories, separators=(",", ":"), sort_keys=True).encode() + b"\n"))

        tmp_out = out + ".tmp"
        with tarfile.open(tmp_out, "w", format=tarfile.USTAR_FORMAT) as t:
            for path, kind, payload in entries:
                if kind == "dir":
                    add_dir(t, path.rstrip("/"))
                elif kind == "bytes":
                    add_bytes(t, path, payload)
                else:
                    ti = norm(tarfile.TarInfo(path), 0o644)
                    ti.size = os.path.getsize(payload)
                    with open(payload, "rb") as fh:
                        t.addfile(ti, fh)
        os.replace(tmp_out, out)
        summary = {
            "archive": out, "bytes": os.path.getsize(out), "image_id": "sha256:" + cfg_hex, "tags": tags,
            "layers": [{"diff_id": "sha256:" + d, "tar_bytes": os.path.getsize(p), "content_bytes": c}
                       for (_, d, p, c, _) in layers],
        }
    finally:
        for f in os.listdir(workdir):
            os.remove(os.path.join(workdir, f))
        os.rmdir(workdir)
    print(json.dumps(summary))
    return 0

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
