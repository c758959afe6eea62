#!/usr/bin/env python3
"""Signs requests with botocore (an independent SigV4 implementation) for dogestry's signer tests.

Reads JSON from stdin: {"cases": [CASE, ...]} and prints a JSON list with one result per case.

CASE (header signing, botocore.auth.S3SigV4Auth):
  {"kind": "header", "method": "GET", "url": "https://host[:port]/encoded/path",
   "params": [[key, value], ...]          # decoded query parameters (botocore encodes them)
   "headers": [[name, value], ...], "body_hex": "...", "unsigned": false,
   "region": "...", "service": "s3", "access_key": "...", "secret_key": "...", "token": null,
   "timestamp": "20130524T000000Z"}
  -> {"authorization": ..., "x-amz-date": ..., "x-amz-content-sha256": ...,
      "x-amz-security-token": ..., "canonical_request": ...}

CASE (presigning, botocore.auth.S3SigV4QueryAuth):
  {"kind": "presign", "method": "GET", "url": "https://host/path?encoded=query", "expires": 3600,
   "region": ..., "service": ..., "access_key": ..., "secret_key": ..., "token": ..., "timestamp": ...}
  -> {"url": ..., "canonical_request": ...}
"""
import datetime
import json
import sys

import botocore.auth as auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials


def capturing(cls):
    class Capturing(cls):
        captured = None

        def string_to_sign(self, request, canonical_request):
            Capturing.captured = canonical_request
            return super().string_to_sign(request, canonical_request)

    return Capturing


def sign(case):
    ts = datetime.datetime.strptime(case["timestamp"], "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    auth.get_current_datetime = lambda: ts
    creds = Credentials(case["access_key"], case["secret_key"], case.get("token"))
    region, service = case["region"], case.get("service", "s3")
    if case["kind"] == "header":
        req = AWSRequest(method=case["method"], url=case["url"],
                         params=[tuple(p) for p in case.get("params", [])],
                         data=bytes.fromhex(case.get("body_hex", "")))
        for name, value in case.get("headers", []):
            req.headers[name] = value  # HTTPHeaders appends: repeated names stay repeated
        if case.get("unsigned"):
            req.context["client_config"] = Config(s3={"payload_signing_enabled": False})
        signer = capturing(auth.S3SigV4Auth)(creds, service, region)
        signer.add_auth(req)
        return {
            "authorization": req.headers["Authorization"],
            "x-amz-date": req.headers.get("X-Amz-Date"),
            "x-amz-content-sha256": req.headers.get("X-Amz-Content-SHA256"),
            "x-amz-security-token": req.headers.get("X-Amz-Security-Token"),
            "canonical_request": signer.captured,
        }
    if case["kind"] == "presign":
        req = AWSRequest(method=case["method"], url=case["url"])
        signer = capturing(auth.S3SigV4QueryAuth)(creds, service, region, expires=case["expires"])
        signer.add_auth(req)
        return {"url": req.url, "canonical_request": signer.captured}
    raise ValueError("unknown kind %r" % case["kind"])


def main():
    cases = json.load(sys.stdin)["cases"]
    json.dump([sign(c) for c in cases], sys.stdout)


if __name__ == "__main__":
    main()
