#!/usr/bin/env python3
"""Check the Manta simulator with an independent client: Joyent's Python SDK (manta==3.0.0).

The SDK signs with its own code (python `cryptography`, rsa-sha1 for RSA keys, ecdsa-shaNNN by
curve size), so a pass here means the simulator accepts what a real Manta client sends, and the
refusals show it rejects what a real Manta rejects.

    . DIR/manta.env
    "$DOGESTRY_TEST_MANTA_PYTHON" scripts/manta-sim/check_python_sdk.py

Reads DOGESTRY_TEST_MANTA_URL, _USER, _SUBUSER, _KEY_ID, _KEY and _KEYS_DIR. Every value can also
be given as an option (--url, --user, --subuser, --key-id, --key, --keys-dir). Prints one line per
step and "N passed, N failed"; exits 0 only when every step passed.
"""

import argparse
import base64
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

try:
    import manta
    from manta.errors import MantaAPIError
except ImportError:
    sys.stderr.write("check_python_sdk: Joyent's Python SDK is missing (pip install manta==3.0.0)\n")
    sys.exit(2)


def parse_args():
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default=env("DOGESTRY_TEST_MANTA_URL"))
    p.add_argument("--user", default=env("DOGESTRY_TEST_MANTA_USER"))
    p.add_argument("--subuser", default=env("DOGESTRY_TEST_MANTA_SUBUSER"))
    p.add_argument("--key-id", default=env("DOGESTRY_TEST_MANTA_KEY_ID"))
    p.add_argument("--key", default=env("DOGESTRY_TEST_MANTA_KEY"))
    p.add_argument("--keys-dir", default=env("DOGESTRY_TEST_MANTA_KEYS_DIR"))
    a = p.parse_args()
    for k in ("url", "user", "key_id", "key", "keys_dir"):
        if not getattr(a, k):
            p.error("--%s (or its DOGESTRY_TEST_MANTA_* variable) is required" % k.replace("_", "-"))
    return a


def manifest_entry(keys_dir, name):
    with open(os.path.join(keys_dir, "keys.json")) as f:
        for e in json.load(f)["keys"]:
            if e["file"] == name:
                return e
    raise KeyError(name)


def md5_hex(fp):
    # The SDK puts the fingerprint it is given into keyId as is; Manta wants bare "aa:bb:..".
    return fp[4:] if fp.startswith("MD5:") else fp


class Checker(object):
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def step(self, name, fn):
        try:
            detail = fn()
        except Exception as e:  # noqa: BLE001 - report every failure and go on
            self.failed += 1
            print("FAIL %s: %s: %s" % (name, type(e).__name__, e))
            return None
        self.passed += 1
        print("ok   %s%s" % (name, (" -- " + detail) if detail else ""))
        return detail


def get_bytes(cl, p):
    # get_object() decodes text to str; get_object2() returns bytes and checks Content-MD5.
    res, content = cl.get_object2(p)
    return content


def expect_api_error(fn, status, code):
    try:
        fn()
    except MantaAPIError as e:
        got_status = e.res.get("status")
        if str(got_status) != str(status) or getattr(e, "code", None) != code:
            raise AssertionError("expected %s %s, got %s %s" % (status, code, got_status, e))
        return "%s %s: %s" % (got_status, code, e.body.get("message") if isinstance(e.body, dict) else e.body)
    raise AssertionError("expected %s %s, but the call succeeded" % (status, code))


def main():
    a = parse_args()
    cache = tempfile.mkdtemp(prefix="manta-sdk-cache-")
    try:
        return run(a, cache)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def client_for(a, cache, key_path, fingerprint, subuser=None):
    with open(key_path, "rb") as f:
        priv = f.read()
    signer = manta.PrivateKeySigner(md5_hex(fingerprint), priv_key=priv)
    return manta.MantaClient(url=a.url, account=a.user, subuser=subuser, signer=signer,
                             cache_dir=os.path.join(cache, fingerprint.replace(":", "")))


def run(a, cache):
    c = Checker()
    print("python-manta %s against %s as %s (key %s)" % (manta.__version__, a.url, a.user, a.key_id))
    cl = client_for(a, cache, a.key, a.key_id)
    top = "/%s/stor/python-sdk-%d" % (a.user, int(time.time() * 1000))
    d = top + "/a/b"
    content = b"dogestry python-sdk check\n" + os.urandom(64)

    c.step("mkdir -p %s" % d, lambda: cl.mkdirp(d))

    def put():
        cl.put_object(d + "/obj.bin", content=content, content_type="application/octet-stream")
        cl.put_object(d + "/second.txt", content=b"second", content_type="text/plain")
        cl.put_object(d + "/third.txt", content=b"third", content_type="text/plain", durability_level="3")  # the SDK sends it as is
    c.step("put_object x3", put)

    def get():
        got = get_bytes(cl, d + "/obj.bin")
        if got != content:
            raise AssertionError("content differs (%d bytes back, %d sent)" % (len(got), len(content)))
        return "%d bytes, md5 %s" % (len(got), base64.b64encode(hashlib.md5(got).digest()).decode())
    c.step("get_object", get)

    def get_again():  # httplib2's cache revalidates with If-None-Match; the simulator answers 304
        got = get_bytes(cl, d + "/obj.bin")
        if got != content:
            raise AssertionError("content differs")
    c.step("get_object again (cached, revalidated)", get_again)

    def ls():
        names = sorted(cl.ls(d).keys())
        if names != ["obj.bin", "second.txt", "third.txt"]:
            raise AssertionError(names)
        third = cl.ls(d)["third.txt"]
        if third.get("durability") != 3 or third.get("size") != 5 or third.get("type") != "object":
            raise AssertionError(third)
        return ", ".join(names)
    c.step("ls", ls)

    def page():
        res, ents = cl.list_directory2(d, limit=2)
        first = [e["name"] for e in ents]
        res2, ents2 = cl.list_directory2(d, limit=2, marker=first[-1])
        second = [e["name"] for e in ents2]
        if first != ["obj.bin", "second.txt"] or second != ["second.txt", "third.txt"]:
            raise AssertionError((first, second))
        if res.get("result-set-size") != "3":
            raise AssertionError("result-set-size %r" % res.get("result-set-size"))
        return "limit=2 -> %s; marker=%s (inclusive) -> %s; result-set-size %s" % (
            first, first[-1], second, res.get("result-set-size"))
    c.step("list_directory with limit/marker", page)

    def stat():
        t = cl.type(d)
        s = cl.stat(d + "/obj.bin")
        if t != "directory" or s.get("type") != "object":
            raise AssertionError((t, s))
    c.step("type/stat", stat)

    if a.subuser:
        def sub():
            sc = client_for(a, cache, a.key, a.key_id, subuser=a.subuser)
            if get_bytes(sc, d + "/second.txt") != b"second":
                raise AssertionError("content differs")
            return "/%s/%s/keys/%s" % (a.user, a.subuser, md5_hex(a.key_id))
        c.step("get_object as sub-user %s" % a.subuser, sub)

    ec256 = manifest_entry(a.keys_dir, "id_ecdsa_p256.pem")
    def ecdsa():
        ec = client_for(a, cache, ec256["path"], ec256["md5"])
        if get_bytes(ec, d + "/second.txt") != b"second":
            raise AssertionError("content differs")
        return "ecdsa-sha256 with a P-256 key"
    c.step("get_object signed with ECDSA P-256", ecdsa)

    def delete():
        for n in ("obj.bin", "second.txt", "third.txt"):
            cl.delete_object(d + "/" + n)
        for p in (d, top + "/a", top):
            cl.delete_directory(p)
        try:
            get_bytes(cl, d + "/obj.bin")
        except MantaAPIError as e:
            if e.code != "ResourceNotFound":
                raise
        else:
            raise AssertionError("object still there")
    c.step("delete objects and directories", delete)

    # Refusals.
    unreg = manifest_entry(a.keys_dir, "unregistered_rsa.pem")
    c.step("unregistered key is refused",
           lambda: expect_api_error(lambda: client_for(a, cache, unreg["path"], unreg["md5"]).ls("/%s/stor" % a.user),
                                    403, "KeyDoesNotExist"))
    c.step("registered key id signed with another key is refused",
           lambda: expect_api_error(lambda: client_for(a, cache, unreg["path"], a.key_id).ls("/%s/stor" % a.user),
                                    403, "InvalidSignature"))
    ec384 = manifest_entry(a.keys_dir, "id_ecdsa_p384.pem")
    c.step("P-384 key (the SDK signs ecdsa-sha384) is refused as muskie does",
           lambda: expect_api_error(lambda: client_for(a, cache, ec384["path"], ec384["md5"]).ls("/%s/stor" % a.user),
                                    400, "InvalidHeader"))
    c.step("delete of a non-empty directory is refused",
           lambda: expect_api_error(lambda: (cl.mkdirp(top + "/x"), cl.delete_directory(top)), 400, "DirectoryNotEmpty"))
    c.step("put into a missing directory is refused",
           lambda: expect_api_error(lambda: cl.put_object(top + "/nope/obj", content=b"x"), 404, "DirectoryDoesNotExist"))

    def cleanup():
        cl.delete_directory(top + "/x")
        cl.delete_directory(top)
    c.step("cleanup", cleanup)

    print("%d passed, %d failed" % (c.passed, c.failed))
    return 0 if c.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
