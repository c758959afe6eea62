#!/usr/bin/env python3
"""Multi-platform images shaped as other tools make them, pushed to a registry by an independent
client (this script speaks the Distribution API itself; python3 stdlib only).

  registry_fixtures.py push REGISTRY_URL REPO TAG --style buildx|dockerlist [--seed S]
      REGISTRY_URL is http://HOST:PORT (a plain-HTTP registry, no auth).
      buildx:     an OCI image index as `docker buildx build --platform … --provenance` writes
                  it: linux/amd64, linux/arm64/v8, linux/arm/v7, linux/arm/v6 images (gzip
                  layers, a shared base layer), each followed by its attestation manifest
                  (platform unknown/unknown, annotations vnd.docker.reference.digest and
                  vnd.docker.reference.type=attestation-manifest, an in-toto JSON layer).
      dockerlist: a Docker manifest list of schema-2 manifests (docker media types) for
                  linux/amd64, linux/arm64 (no variant) and linux/arm/v7.
      Prints JSON: {"index": DIGEST, "indexMediaType", "images": [{"platform", "digest",
      "config", "attestation": bool}]}. Manifests are indented as buildx and docker write them
      (not canonical), so a copy that re-encodes anything changes their digests.
"""
import argparse
import gzip
import hashlib
import io
import json
import random
import sys
import tarfile
import urllib.request

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
IN_TOTO = "application/vnd.in-toto+json"


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def layer_tar(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gz(b):
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as g:
        g.write(b)
    return out.getvalue()


class Pusher:
    def __init__(self, base, repo):
        self.base = base.rstrip("/")
        self.repo = repo

    def req(self, method, path, body=None, headers=None):
        url = path if path.startswith("http") else self.base + path
        r = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(r, timeout=60) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def blob(self, data):
        d = sha(data)
        st, _, _ = self.req("HEAD", "/v2/%s/blobs/%s" % (self.repo, d))
        if st == 200:
            return d
        st, h, body = self.req("POST", "/v2/%s/blobs/uploads/" % self.repo, b"")
        if st != 202:
            raise SystemExit("upload start: %d %s" % (st, body[:200]))
        loc = h["Location"]
        loc += ("&" if "?" in loc else "?") + "digest=" + d
        st, _, body = self.req("PUT", loc, data, {"Content-Type": "application/octet-stream"})
        if st != 201:
            raise SystemExit("upload: %d %s" % (st, body[:200]))
        return d

    def manifest(self, ref, data, media_type):
        st, h, body = self.req("PUT", "/v2/%s/manifests/%s" % (self.repo, ref), data, {"Content-Type": media_type})
        if st != 201:
            raise SystemExit("manifest %s: %d %s" % (ref, st, body[:300]))
        return sha(data)


def dumps(obj):
    return json.dumps(obj, indent=2).encode()


def build(style, seed, push):
    rnd = random.Random(seed)
    docker = style == "dockerlist"
    platforms = ([("linux", "amd64", None), ("linux", "arm64", None), ("linux", "arm", "v7")] if docker else
                 [("linux", "amd64", None), ("linux", "arm64", "v8"), ("linux", "arm", "v7"), ("linux", "arm", "v6")])
    base = layer_tar([("etc/base.txt", bytes(rnd.getrandbits(8) for _ in range(20000)))])
    entries, images = [], []
    for os_, arch, variant in platforms:
        plat = "/".join(p for p in (os_, arch, variant) if p)
        top = layer_tar([("app/%s.txt" % arch, ("%s %s %d\n" % (plat, style, seed)).encode() * 300)])
        layers = [base, top]
        blobs = [gz(l) for l in layers]
        cfg = {"architecture": arch, "os": os_, "config": {"Cmd": ["/bin/true"]},
               "rootfs": {"type": "layers", "diff_ids": [sha(l) for l in layers]}}
        if variant:
            cfg["variant"] = variant
        cb = dumps(cfg)
        m = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
             "config": {"mediaType": DOCKER_CONFIG if docker else OCI_CONFIG, "digest": push.blob(cb), "size": len(cb)},
             "layers": [{"mediaType": DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP, "digest": push.blob(b), "size": len(b)} for b in blobs]}
        mb = dumps(m)
        md = push.manifest(sha(mb), mb, m["mediaType"])
        platform = {"architecture": arch, "os": os_}
        if variant:
            platform["variant"] = variant
        entries.append({"mediaType": m["mediaType"], "digest": md, "size": len(mb), "platform": platform})
        images.append({"platform": plat, "digest": md, "config": sha(cb), "attestation": False})
        if docker:
            continue
        # The attestation manifest buildx adds after each image (SLSA provenance as in-toto JSON).
        stmt = dumps({"_type": "https://in-toto.io/Statement/v0.1", "predicateType": "https://slsa.dev/provenance/v0.2",
                      "subject": [{"name": "pkg:docker/test@" + plat, "digest": {"sha256": md.split(":")[1]}}],
                      "predicate": {"builder": {"id": ""}, "buildType": "https://mobyproject.org/buildkit@v1"}})
        acfg = dumps({"architecture": "unknown", "os": "unknown", "config": {},
                      "rootfs": {"type": "layers", "diff_ids": [sha(stmt)]}})
        am = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
              "config": {"mediaType": OCI_CONFIG, "digest": push.blob(acfg), "size": len(acfg)},
              "layers": [{"mediaType": IN_TOTO, "digest": push.blob(stmt), "size": len(stmt),
                          "annotations": {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"}}]}
        amb = dumps(am)
        amd = push.manifest(sha(amb), amb, OCI_MANIFEST)
        entries.append({"mediaType": OCI_MANIFEST, "digest": amd, "size": len(amb),
                        "annotations": {"vnd.docker.reference.digest": md, "vnd.docker.reference.type": "attestation-manifest"},
                        "platform": {"architecture": "unknown", "os": "unknown"}})
        images.append({"platform": "unknown/unknown", "digest": amd, "config": sha(acfg), "attestation": True})
    index = {"schemaVersion": 2, "mediaType": DOCKER_LIST if docker else OCI_INDEX, "manifests": entries}
    return index, images


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("push")
    p.add_argument("registry")
    p.add_argument("repo")
    p.add_argument("tag")
    p.add_argument("--style", choices=["buildx", "dockerlist"], required=True)
    p.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    push = Pusher(a.registry, a.repo)
    index, images = build(a.style, a.seed, push)
    ib = dumps(index)
    d = push.manifest(a.tag, ib, index["mediaType"])
    json.dump({"index": d, "indexMediaType": index["mediaType"], "images": images}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
