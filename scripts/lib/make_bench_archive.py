#!/usr/bin/env python3
"""Makes a `docker save`-style (legacy layout) archive with layers of real files, for benchmarks.

usage: make_bench_archive.py SIZE_MB OUT.tar [SOURCE_DIR ...]
       make_bench_archive.py [options] OUT.tar [SOURCE_DIR ...]

The first form (kept as it was) makes one layer of about SIZE_MB, tagged bench/big:latest.

options:
  --layers MB[,MB...]   sizes of the layers to make, bottom first (e.g. 100,100,100)
  --base-from ARCHIVE   start with the bottom layers of ARCHIVE (an archive this script made,
                        or any single-image `docker save` archive); the --layers are added on
                        top, so the new image shares those layers (same diffIDs) with it
  --base-layers N       how many bottom layers of --base-from to keep (default: all of them)
  --skip-mb MB          skip about MB of source files before taking any, so the new layers
                        hold other files than an image made without it (use it for a "v2")
  --tag NAME:TAG        the image's tag (repeatable; default bench/big:latest)
  --max-file-kb KB      take only files of at most KB kilobytes (a layer of many small files,
                        like node_modules or a Python tree; the summary says how many)

A layer is a tar of real files (binaries, libraries, text) taken from SOURCE_DIRs (default
/opt/swift/usr /usr/lib /usr/share) in sorted order until the size is reached, so it compresses
like a real image layer. Successive layers take successive files: no file is in two layers.
Everything streams: memory stays small whatever the size. Prints a JSON summary.
"""
import hashlib, io, json, os, shutil, sys, tarfile, tempfile

DEFAULT_SOURCES = ["/opt/swift/usr", "/usr/lib", "/usr/share"]

def usage(msg=None):
    if msg:
        sys.stderr.write("make_bench_archive.py: %s\n" % msg)
    sys.stderr.write(__doc__)
    sys.exit(2)

def parse(argv):
    o = {"layers": None, "base_from": None, "base_layers": None, "skip_mb": 0, "tags": [], "out": None, "sources": [],
         "max_file": None}
    args = list(argv)
    positional = []
    while args:
        a = args.pop(0)
        if a in ("-h", "--help"):
            print(__doc__); sys.exit(0)
        if a in ("--layers", "--base-from", "--base-layers", "--skip-mb", "--tag", "--max-file-kb"):
            if not args:
                usage("%s needs a value" % a)
            v = args.pop(0)
            try:
                if a == "--layers":
                    o["layers"] = [int(x) for x in v.split(",") if x != ""]
                elif a == "--base-from":
                    o["base_from"] = v
                elif a == "--base-layers":
                    o["base_layers"] = int(v)
                elif a == "--skip-mb":
                    o["skip_mb"] = int(v)
                elif a == "--max-file-kb":
                    o["max_file"] = int(v) * 1000
                else:
                    o["tags"].append(v)
            except ValueError:
                usage("bad value for %s: %r" % (a, v))
        elif a.startswith("--"):
            usage("unknown option %s" % a)
        else:
            positional.append(a)
    if o["layers"] is None:
        # legacy form: SIZE_MB OUT.tar [SOURCE_DIR ...]
        if len(positional) < 2 or o["base_from"]:
            usage()
        try:
            o["layers"] = [int(positional[0])]
        except ValueError:
            usage("SIZE_MB must be a number")
        positional = positional[1:]
    if not positional:
        usage("OUT.tar is missing")
    o["out"] = positional[0]
    o["sources"] = positional[1:] or DEFAULT_SOURCES
    o["tags"] = o["tags"] or ["bench/big:latest"]
    for t in o["tags"]:
        if ":" not in t.rsplit("/", 1)[-1]:
            usage("tag %r must be NAME:TAG" % t)
    if not o["layers"] and not o["base_from"]:
        usage("no layers to make")
    return o

def source_files(sources, max_size=None):
    """Regular files (no symlinks) under the sources, in sorted walk order, with their size
    (only those of at most max_size bytes when it is given)."""
    for src in sources:
        for root, dirs, files in os.walk(src):
            dirs.sort()
            for f in sorted(files):
                p = os.path.join(root, f)
                if os.path.islink(p) or not os.path.isfile(p):
                    continue
                try:
                    size = os.stat(p).st_size
                except OSError:
                    continue
                if max_size is None or size <= max_size:
                    yield p, size

def skip(files, nbytes):
    total = 0
    for p, size in files:
        total += size
        if total >= nbytes:
            return

def build_layer(path, size, files):
    """Writes a layer of about size bytes of files (an iterator shared by all layers); returns
    its bytes of file content and its number of files."""
    total = count = 0
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as layer:
        if total < size * 0.999:
            for p, fsize in files:
                if total + fsize > size:
                    continue
                try:
                    fh = open(p, "rb")
                except OSError:
                    continue
                with fh:
                    ti = layer.gettarinfo(p, arcname=p.lstrip("/"), fileobj=fh)
                    ti.uid = ti.gid = 0; ti.uname = ti.gname = ""; ti.mtime = 0
                    layer.addfile(ti, fh)
                total += ti.size
                count += 1
                if total >= size * 0.999:
                    break
    return total, count

def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

def main():
    o = parse(sys.argv[1:])
    out = os.path.abspath(o["out"])
    workdir = tempfile.mkdtemp(prefix="dogestry-bench-", dir=os.path.dirname(out))
    base = None
    try:
        file_counts = []  # files in each new layer
        layers = []  # [diff_id, source]: source is a local path or (base tar, member name)
        if o["base_from"]:
            base = tarfile.open(o["base_from"])
            m = json.load(base.extractfile("manifest.json"))
            if len(m) != 1:
                usage("--base-from %s holds %d images; want one" % (o["base_from"], len(m)))
            m = m[0]
            cfg = json.load(base.extractfile(m["Config"]))
            keep = len(m["Layers"]) if o["base_layers"] is None else o["base_layers"]
            if keep > len(m["Layers"]):
                usage("--base-layers %d: %s has only %d layers" % (keep, o["base_from"], len(m["Layers"])))
            for diff, member in list(zip(cfg["rootfs"]["diff_ids"], m["Layers"]))[:keep]:
                layers.append([diff, (base, member)])
        files = source_files(o["sources"], o["max_file"])
        if o["skip_mb"]:
            skip(files, o["skip_mb"] * 1000 * 1000)
        for i, mb in enumerate(o["layers"]):
            p = os.path.join(workdir, "layer%d.tar" % i)
            _, nfiles = build_layer(p, mb * 1000 * 1000, files)
            file_counts.append(nfiles)
            layers.append(["sha256:" + sha256_file(p), p])

        diff_ids = [d for d, _ in layers]
        config = json.dumps({
            "architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }, separators=(",", ":")).encode()
        cfg_hex = hashlib.sha256(config).hexdigest()
        layer_ids, parent = [], ""
        for d in diff_ids:
            # the first layer's ID is what the one-layer form always used
            layer_ids.append(hashlib.sha256(("bench" + parent + d).encode()).hexdigest())
            parent = layer_ids[-1]
        manifest = json.dumps([{"Config": cfg_hex + ".json", "RepoTags": o["tags"],
                                "Layers": [l + "/layer.tar" for l in layer_ids]}]).encode()
        repositories = {}
        for t in o["tags"]:
            name, tag = t.rsplit(":", 1)
            repositories.setdefault(name, {})[tag] = layer_ids[-1]

        tmp_out = out + ".tmp"
        with tarfile.open(tmp_out, "w", format=tarfile.USTAR_FORMAT) as t:
            def add_bytes(name, data):
                ti = tarfile.TarInfo(name); ti.size = len(data); ti.mtime = 0
                t.addfile(ti, io.BytesIO(data))
            add_bytes(cfg_hex + ".json", config)
            written = set()
            for lid, (diff, src) in zip(layer_ids, layers):
                if isinstance(src, tuple):
                    btar, member = src
                    bti = btar.getmember(member)
                    if bti.issym() or bti.islnk():  # dockerd links a layer saved twice
                        bti = btar.getmember(os.path.normpath(os.path.join(os.path.dirname(member), bti.linkname))
                                             if bti.issym() else bti.linkname)
                    ti = tarfile.TarInfo(lid + "/layer.tar"); ti.size = bti.size; ti.mtime = 0
                    t.addfile(ti, btar.extractfile(bti))
                else:
                    ti = t.gettarinfo(src, arcname=lid + "/layer.tar"); ti.mtime = 0
                    with open(src, "rb") as fh:
                        t.addfile(ti, fh)
            add_bytes("manifest.json", manifest)
            add_bytes("repositories", json.dumps(repositories).encode())
        os.replace(tmp_out, out)
    finally:
        if base is not None:
            base.close()
        shutil.rmtree(workdir, ignore_errors=True)
    summary = {"archive": out, "layer_bytes": os.path.getsize(out), "image_id": "sha256:" + cfg_hex,
               "tags": o["tags"], "diff_ids": diff_ids, "new_layer_files": file_counts}
    if len(diff_ids) == 1:
        summary["diff_id"] = diff_ids[0]
    print(json.dumps(summary))

if __name__ == "__main__":
    main()
