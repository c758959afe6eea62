#!/usr/bin/env python3
"""Makes a `docker save`-style (legacy layout) archive with one layer of about SIZE_MB of real files.

usage: make_bench_archive.py SIZE_MB OUT.tar [SOURCE_DIR ...]

The layer is a tar of real files (binaries, libraries, text) taken from SOURCE_DIRs (default
/opt/swift/usr /usr/lib /usr/share) in sorted order until the size is reached, so it compresses
like a real image layer. Everything streams: memory stays small whatever the size.
"""
import hashlib, json, os, sys, tarfile, tempfile

def main():
    size = int(sys.argv[1]) * 1000 * 1000
    out = sys.argv[2]
    sources = sys.argv[3:] or ["/opt/swift/usr", "/usr/lib", "/usr/share"]
    workdir = tempfile.mkdtemp(prefix="dogestry-bench-", dir=os.path.dirname(os.path.abspath(out)))
    layer_path = os.path.join(workdir, "layer.tar")
    total = 0
    with tarfile.open(layer_path, "w", format=tarfile.PAX_FORMAT) as layer:
        for src in sources:
            for root, dirs, files in os.walk(src):
                dirs.sort()
                for f in sorted(files):
                    p = os.path.join(root, f)
                    if os.path.islink(p) or not os.path.isfile(p):
                        continue
                    st = os.stat(p)
                    if total + st.st_size > size:
                        continue
                    ti = layer.gettarinfo(p, arcname=p.lstrip("/"))
                    ti.uid = ti.gid = 0; ti.uname = ti.gname = ""; ti.mtime = 0
                    with open(p, "rb") as fh:
                        layer.addfile(ti, fh)
                    total += st.st_size
                    if total >= size * 0.999:
                        break
                if total >= size * 0.999:
                    break
    h = hashlib.sha256()
    with open(layer_path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    diffid = "sha256:" + h.hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diffid]},
    }, separators=(",", ":")).encode()
    cfg_hex = hashlib.sha256(config).hexdigest()
    layer_id = hashlib.sha256(("bench" + diffid).encode()).hexdigest()
    manifest = json.dumps([{"Config": cfg_hex + ".json", "RepoTags": ["bench/big:latest"],
                            "Layers": [layer_id + "/layer.tar"]}]).encode()
    import io
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as t:
        def add_bytes(name, data):
            ti = tarfile.TarInfo(name); ti.size = len(data); ti.mtime = 0
            t.addfile(ti, io.BytesIO(data))
        add_bytes(cfg_hex + ".json", config)
        ti = t.gettarinfo(layer_path, arcname=layer_id + "/layer.tar"); ti.mtime = 0
        with open(layer_path, "rb") as fh:
            t.addfile(ti, fh)
        add_bytes("manifest.json", manifest)
        add_bytes("repositories", json.dumps({"bench/big": {"latest": layer_id}}).encode())
    os.remove(layer_path); os.rmdir(workdir)
    print(json.dumps({"archive": out, "layer_bytes": os.path.getsize(out), "diff_id": diffid, "image_id": "sha256:" + cfg_hex}))

if __name__ == "__main__":
    main()
