#!/usr/bin/env python3
"""Fixture helpers for dogestry's tests (pure python3 stdlib).

Subcommands:
  gen-context DIR [--seed N]
      Write the build contexts and Containerfiles of the test images (seeded, so the
      same bytes every time; permissions set explicitly, mtimes clamped by the build).
  convert IN.tar OUT.tar [--style docker25|containerd] [--gzip]
      Turn a legacy `docker save` archive into the archive Docker >= 25 writes:
      an OCI image layout (oci-layout, index.json, blobs/sha256/...) plus the Docker
      manifest.json (Config/Layers pointing at blobs/sha256/<hex>) and `repositories`.
      --style containerd writes what the containerd image store writes instead
      (containerd's archive exporter: no `repositories`, no legacy v1 JSON blobs,
      compact manifest.json, blobs mode 0444). --gzip stores layers gzip-compressed
      (media type ...tar+gzip, blob digest = digest of the gzip bytes; config
      diff_ids unchanged).
  bad IN.tar OUTDIR
      Write the malformed archives used by the negative tests, derived from IN.tar
      (a single-image legacy `docker save`).
  expected INSPECT.json OUT.json --version V [--archive NAME=REF,REF ...]
      Turn `docker image inspect` output into expected.json.
  listing ARCHIVE
      Print the entries of a tar in order (type, size, name[ -> target]).
"""
import argparse
import copy
import gzip
import hashlib
import io
import json
import os
import posixpath
import random
import stat
import sys
import tarfile

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ANN_IMAGE_NAME = "io.containerd.image.name"
ANN_REF_NAME = "org.opencontainers.image.ref.name"


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def compact(obj):
    # Go's encoding/json: no spaces, map keys sorted (we build dicts in struct order).
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# --------------------------------------------------------------------------- references

def normalize_ref(ref):
    """'dogestry-test/base:v1' -> ('docker.io/dogestry-test/base', 'v1') (Docker's rules)."""
    name, tag = ref, "latest"
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        name, tag = ref[:colon], ref[colon + 1:]
    first, _, rest = name.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        if not rest:
            name = "library/" + name
        name = "docker.io/" + name
    return name, tag


def familiar(name):
    if name.startswith("docker.io/"):
        name = name[len("docker.io/"):]
        if name.startswith("library/") and name.count("/") == 1:
            name = name[len("library/"):]
    return name


# --------------------------------------------------------------------------- reading

class Archive:
    """All members of a tar in order, with symlinks inside the archive resolvable."""

    def __init__(self, path):
        self.path = path
        self.members = []
        self.data = {}
        with tarfile.open(path, "r:") as t:
            for m in t:
                self.members.append(m)
                if m.isreg():
                    self.data[m.name] = t.extractfile(m).read()

    def read(self, name, depth=0):
        name = posixpath.normpath(name)
        if name in self.data:
            return self.data[name]
        for m in self.members:
            if posixpath.normpath(m.name) == name and m.issym() and depth < 10:
                target = posixpath.normpath(posixpath.join(posixpath.dirname(name), m.linkname))
                return self.read(target, depth + 1)
        raise KeyError("%s: no entry %r" % (self.path, name))


# --------------------------------------------------------------------------- writing

class TarOut:
    def __init__(self, path, uname="root", gname="root"):
        self.f = open(path, "wb")
        self.t = tarfile.open(fileobj=self.f, mode="w", format=tarfile.PAX_FORMAT)
        self.uname, self.gname = uname, gname

    def _info(self, name, typ, mode, mtime):
        ti = tarfile.TarInfo(name)
        ti.type = typ
        ti.mode = mode
        ti.mtime = mtime
        ti.uid = ti.gid = 0
        ti.uname, ti.gname = self.uname, self.gname
        return ti

    def dir(self, name, mode=0o755, mtime=0):
        self.t.addfile(self._info(name, tarfile.DIRTYPE, mode, mtime))

    def file(self, name, data, mode=0o644, mtime=0):
        ti = self._info(name, tarfile.REGTYPE, mode, mtime)
        ti.size = len(data)
        self.t.addfile(ti, io.BytesIO(data))

    def symlink(self, name, target, mode=0o777, mtime=0):
        ti = self._info(name, tarfile.SYMTYPE, mode, mtime)
        ti.linkname = target
        self.t.addfile(ti)

    def copy(self, member, data=None):
        ti = copy.copy(member)
        if member.isreg():
            ti.size = len(data)
            self.t.addfile(ti, io.BytesIO(data))
        else:
            self.t.addfile(ti)

    def close(self):
        self.t.close()
        self.f.close()


# --------------------------------------------------------------------------- gen-context

def gen_context(outdir, seed):
    rnd = random.Random(seed)
    words = ["dogestry", "layer", "image", "docker", "podman", "manifest", "digest", "tar",
             "blob", "config", "registry", "remote", "push", "pull", "sha256", "chain"]

    def rbytes(n):
        return rnd.randbytes(n)

    def text(n):
        out, size = [], 0
        while size < n:
            w = rnd.choice(words) + (" " if rnd.random() < 0.9 else "\n")
            out.append(w)
            size += len(w)
        return "".join(out)[:n].encode()

    def put(rel, data, mode=0o644):
        p = os.path.join(outdir, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, mode)

    # base, layer 1: base files
    put("base1/etc/dogestry-release", b"NAME=dogestry-test\nVERSION=1\n")
    for i in range(4):
        put("base1/usr/lib/dogestry/blob%d.bin" % i, rbytes(40_000))
    put("base1/usr/share/doc/dogestry/README", text(40_000))
    put("base1/usr/bin/dogestry-hello", b"#!/bin/sh\necho hello\n", 0o755)
    # base, layer 2: the awkward entries
    sp = "base2/srv/special"
    os.makedirs(os.path.join(outdir, sp, "emptydir"), exist_ok=True)
    os.symlink("../../etc/dogestry-release", os.path.join(outdir, sp, "release-link"))
    put(sp + "/" + ("L" * 146) + ".txt", b"a file whose name is 150 characters long\n")
    deep = sp + "/" + "/".join(["deep-directory-%02d" % i for i in range(8)]) + "/file-with-long-path.txt"
    put(deep, b"this path is longer than 100 bytes but fits ustar's prefix+name split\n")
    put(sp + "/unicod\u00e9-\u00fcml\u00e4ut.txt", "non-ASCII file name\n".encode())
    put(sp + "/middle.bin", rbytes(60_000))
    put(sp + "/middle.txt", text(30_000))
    put(sp + "/empty-file", b"")
    put(sp + "/exec.sh", b"#!/bin/sh\nexit 0\n", 0o755)
    # base, layer 3: top
    put("base3/opt/base/top.bin", rbytes(50_000))
    put("base3/opt/base/top.txt", text(10_000))
    # app v1 / v2 top layers
    put("app1/app/bin/app", rbytes(90_000), 0o755)
    put("app1/app/VERSION", b"1\n")
    put("app1/app/notes.txt", text(20_000))
    put("app2/app/bin/app", rbytes(100_000), 0o755)
    put("app2/app/VERSION", b"2\n")
    put("app2/app/notes.txt", text(25_000))
    # multi: a single-layer image
    put("multi/multi/data.bin", rbytes(50_000))
    put("multi/multi/data.txt", text(15_000))
    for d, _, _ in os.walk(outdir):
        os.chmod(d, 0o755)

    cf = {
        "Containerfile.base": "FROM scratch\nCOPY base1/ /\nCOPY base2/ /\nCOPY base3/ /\n",
        "Containerfile.app1": "FROM docker.io/dogestry-test/base:v1\nCOPY app1/ /\n",
        "Containerfile.app2": "FROM docker.io/dogestry-test/base:v1\nCOPY app2/ /\n",
        "Containerfile.multi": "FROM scratch\nCOPY multi/ /\n",
    }
    for name, body in cf.items():
        put(name, body.encode())


# --------------------------------------------------------------------------- convert

def convert(src, dst, style, use_gzip):
    arc = Archive(src)
    items = json.loads(arc.read("manifest.json"))
    items.sort(key=lambda it: (it.get("RepoTags") or [""])[0])

    blobs = {}          # hex -> bytes
    blob_mtime = {}     # hex -> mtime
    index_descs = []
    docker_manifest = []
    repositories = {}

    def add_blob(data, mtime=0):
        h = sha256(data)
        blobs[h] = data
        blob_mtime.setdefault(h, mtime)
        return h

    gz_cache = {}
    for it in items:
        config = arc.read(it["Config"])
        cfg = json.loads(config)
        diff_ids = cfg["rootfs"]["diff_ids"]
        if len(diff_ids) != len(it["Layers"]):
            raise SystemExit("%s: %s has %d layers but %d diff_ids" % (src, it["Config"], len(it["Layers"]), len(diff_ids)))
        created = 0  # our fixtures are built with --timestamp 0
        cfg_hex = add_blob(config, created)
        layer_descs, layer_paths = [], []
        for i, lp in enumerate(it["Layers"]):
            raw = arc.read(lp)
            if "sha256:" + sha256(raw) != diff_ids[i]:
                raise SystemExit("%s: layer %s does not match diff_id %s" % (src, lp, diff_ids[i]))
            if style == "docker25":
                # Docker 25 also writes each legacy v1 layer JSON as an (unreferenced) blob.
                v1json = posixpath.join(posixpath.dirname(lp), "json")
                try:
                    add_blob(arc.read(v1json), created)
                except KeyError:
                    pass
            if use_gzip:
                if diff_ids[i] not in gz_cache:
                    gz_cache[diff_ids[i]] = gzip.compress(raw, compresslevel=6, mtime=0)
                data, mt = gz_cache[diff_ids[i]], MT_OCI_LAYER_GZIP
            else:
                data, mt = raw, MT_OCI_LAYER
            h = add_blob(data, created)
            layer_descs.append({"mediaType": mt, "digest": "sha256:" + h, "size": len(data)})
            layer_paths.append("blobs/sha256/" + h)

        manifest = compact({
            "schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST,
            "config": {"mediaType": MT_OCI_CONFIG, "digest": "sha256:" + cfg_hex, "size": len(config)},
            "layers": layer_descs,
        })
        m_hex = add_blob(manifest, 0)
        repo_tags = []
        for tagref in it.get("RepoTags") or []:
            name, tag = normalize_ref(tagref)
            repo_tags.append(familiar(name) + ":" + tag)
            index_descs.append({
                "mediaType": MT_OCI_MANIFEST, "digest": "sha256:" + m_hex, "size": len(manifest),
                "annotations": {ANN_IMAGE_NAME: name + ":" + tag, ANN_REF_NAME: tag},
            })
            repositories.setdefault(familiar(name), {})[tag] = diff_ids[-1].split(":", 1)[1]
        if not it.get("RepoTags"):
            index_descs.append({"mediaType": MT_OCI_MANIFEST, "digest": "sha256:" + m_hex, "size": len(manifest)})
        entry = {"Config": "blobs/sha256/" + cfg_hex, "RepoTags": repo_tags or None, "Layers": layer_paths}
        if style == "docker25" and it.get("Parent"):
            entry["Parent"] = it["Parent"]
        docker_manifest.append(entry)

    index = compact({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": index_descs})
    out = TarOut(dst, *(("root", "root") if style == "docker25" else ("", "")))
    if style == "docker25":
        # moby's archive.Tar walks its temp dir in lexical order:
        # blobs/, blobs/sha256/, blobs/sha256/<hex>..., index.json, manifest.json, oci-layout, repositories
        out.dir("blobs/")
        out.dir("blobs/sha256/")
        for h in sorted(blobs):
            out.file("blobs/sha256/" + h, blobs[h], 0o644, blob_mtime[h])
        out.file("index.json", index)
        out.file("manifest.json", json.dumps(docker_manifest, separators=(",", ":")).encode() + b"\n")
        out.file("oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        out.file("repositories", compact({k: dict(sorted(v.items())) for k, v in sorted(repositories.items())}) + b"\n")
    else:
        # containerd's archive exporter sorts its records by name; blobs and oci-layout are 0444.
        out.dir("blobs/")
        out.dir("blobs/sha256/")
        for h in sorted(blobs):
            out.file("blobs/sha256/" + h, blobs[h], 0o444)
        out.file("index.json", index)
        out.file("manifest.json", json.dumps(docker_manifest, separators=(",", ":")).encode())
        out.file("oci-layout", b'{"imageLayoutVersion":"1.0.0"}', 0o444)
    out.close()


# --------------------------------------------------------------------------- bad archives

def bad(src, outdir):
    os.makedirs(outdir, exist_ok=True)
    arc = Archive(src)
    items = json.loads(arc.read("manifest.json"))
    if len(items) != 1:
        raise SystemExit("bad: expected a single-image archive, got %d images" % len(items))
    item = items[0]
    first_layer, top_layer = item["Layers"][0], item["Layers"][-1]
    notes = {}

    def rewrite(name, note, replace=None, drop=(), prepend=()):
        """Copy src member by member; replace: {entry: bytes or callable(TarOut, member)}."""
        replace = replace or {}
        out = TarOut(os.path.join(outdir, name))
        for kind, ename, payload in prepend:
            out.file(ename, payload)
        for m in arc.members:
            if m.name in drop:
                continue
            r = replace.get(m.name)
            if callable(r):
                r(out, m)
            elif r is not None:
                out.copy(m, r)
            elif m.isreg():
                out.copy(m, arc.data[m.name])
            else:
                out.copy(m)
        out.close()
        notes[name] = note

    # truncated.tar: cut in the middle of the first layer's data
    with tarfile.open(src, "r:") as t:
        cut = None
        for m in t:
            if m.name == first_layer:
                cut = m.offset_data + m.size // 2
                break
    with open(src, "rb") as f:
        data = f.read(cut)
    with open(os.path.join(outdir, "truncated.tar"), "wb") as f:
        f.write(data)
    notes["truncated.tar"] = "docker-app-v1.tar cut at byte %d, in the middle of %s" % (cut, first_layer)

    # not-a-tar.tar: seeded random bytes
    with open(os.path.join(outdir, "not-a-tar.tar"), "wb") as f:
        f.write(random.Random(4242).randbytes(8192))
    notes["not-a-tar.tar"] = "8192 random bytes"

    rewrite("dotdot.tar", "an entry '../evil' first, then the valid docker-app-v1.tar entries",
            prepend=[("file", "../evil", b"evil\n")])
    rewrite("absolute.tar", "an entry '/tmp/evil' first, then the valid docker-app-v1.tar entries",
            prepend=[("file", "/tmp/evil", b"evil\n")])

    def as_symlink(out, m):
        out.symlink(m.name, "../../etc/passwd", mtime=int(m.mtime))
    rewrite("symlink-escape.tar", "manifest's first layer path %s is a symlink to ../../etc/passwd" % first_layer,
            replace={first_layer: as_symlink})

    rewrite("missing-layer.tar", "the entry %s named by manifest.json is absent" % top_layer, drop={top_layer})

    short = [dict(item, Layers=item["Layers"][:-1])]
    rewrite("layer-count.tar", "manifest.json lists %d layers, config rootfs.diff_ids has %d"
            % (len(item["Layers"]) - 1, len(item["Layers"])),
            replace={"manifest.json": json.dumps(short, separators=(",", ":")).encode() + b"\n"})

    rewrite("bad-json.tar", "manifest.json is not JSON",
            replace={"manifest.json": b"[{\"Config\": this is not json\n"})

    # wrong-diffid.tar: flip one byte of a regular file's data inside the top layer (still a valid tar)
    layer = bytearray(arc.read(top_layer))
    with tarfile.open(fileobj=io.BytesIO(bytes(layer)), mode="r:") as lt:
        victim = next(m for m in lt if m.isreg() and m.size > 0)
    layer[victim.offset_data] ^= 0xFF
    rewrite("wrong-diffid.tar", "one byte of %s inside %s flipped: its sha256 no longer matches the diff_id"
            % (victim.name, top_layer), replace={top_layer: bytes(layer)})
    return notes


# --------------------------------------------------------------------------- expected.json

def expected(inspect_path, out_path, version, archives, bad_notes_path):
    with open(inspect_path) as f:
        inspected = json.load(f)
    images = {}
    for img in inspected:
        for tag in sorted(img.get("RepoTags") or []):
            images[tag] = {
                "id": img["Id"],
                "diffIDs": img["RootFS"]["Layers"],
                "repoTags": sorted(img.get("RepoTags") or []),
            }
    arcs = {}
    for spec in archives:
        name, _, refs = spec.partition("=")
        arcs[name] = [r for r in refs.split(",") if r]
    doc = {"version": version, "images": dict(sorted(images.items())), "archives": arcs}
    if bad_notes_path:
        with open(bad_notes_path) as f:
            doc["bad"] = json.load(f)
    with open(out_path, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=False)
        f.write("\n")


def listing(path):
    with tarfile.open(path, "r:") as t:
        for m in t:
            kind = {tarfile.DIRTYPE: "d", tarfile.SYMTYPE: "l", tarfile.LNKTYPE: "h"}.get(m.type, "-")
            tail = " -> " + m.linkname if m.issym() or m.islnk() else ""
            print("%s %10d %s%s" % (kind, m.size, m.name, tail))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("gen-context"); p.add_argument("dir"); p.add_argument("--seed", type=int, default=20240601)
    p = sub.add_parser("convert"); p.add_argument("src"); p.add_argument("dst")
    p.add_argument("--style", choices=["docker25", "containerd"], default="docker25")
    p.add_argument("--gzip", action="store_true")
    p = sub.add_parser("bad"); p.add_argument("src"); p.add_argument("outdir")
    p.add_argument("--notes", help="write a JSON of case -> description here")
    p = sub.add_parser("expected"); p.add_argument("inspect"); p.add_argument("out")
    p.add_argument("--version", required=True); p.add_argument("--archive", action="append", default=[])
    p.add_argument("--bad-notes")
    p = sub.add_parser("listing"); p.add_argument("archive")
    a = ap.parse_args()
    if a.cmd == "gen-context":
        gen_context(a.dir, a.seed)
    elif a.cmd == "convert":
        convert(a.src, a.dst, a.style, a.gzip)
    elif a.cmd == "bad":
        notes = bad(a.src, a.outdir)
        if a.notes:
            with open(a.notes, "w") as f:
                json.dump(notes, f, indent=2)
    elif a.cmd == "expected":
        expected(a.inspect, a.out, a.version, a.archive, a.bad_notes)
    elif a.cmd == "listing":
        listing(a.archive)


if __name__ == "__main__":
    main()
