#!/usr/bin/env python3
"""Loopback stand-ins for the AWS credential endpoints dogestry's credential chain talks to.

  aws_standins.py imds      [options]   EC2 instance metadata service, IMDSv2 only:
      PUT /latest/api/token (needs X-aws-ec2-metadata-token-ttl-seconds) issues a token;
      GET /latest/meta-data/iam/security-credentials/[ROLE] answers only with that token
      (X-aws-ec2-metadata-token), 401 otherwise.
  aws_standins.py container [options]   ECS/EKS container credentials endpoint:
      GET PATH answers only when the Authorization header equals --auth-token (if given).

Options: --port N (0: any free port), --role NAME, --path PATH, --auth-token TOKEN,
  --access-key ID, --secret-key KEY, --expires-in SECONDS (omit: no Expiration field),
  --no-role (IMDS: 404 on the role listing).
Prints the port on the first line of stdout once listening. GET /__stats returns counters as
JSON: {"token_puts", "role_lists", "credential_gets", "rejected"}. Every credential answer has a
fresh session token "token-N" (N counts the answers), so a client's refresh is visible.
Binds 127.0.0.1 only; stops on SIGTERM.
"""
import argparse
import datetime
import json
import secrets
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROLE_PREFIX = "/latest/meta-data/iam/security-credentials/"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["imds", "container"])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--role", default="dogestry-role")
    ap.add_argument("--path", default="/v2/credentials/dogestry")
    ap.add_argument("--auth-token")
    ap.add_argument("--access-key", default="ASIASTANDIN")
    ap.add_argument("--secret-key", default="standin-secret")
    ap.add_argument("--expires-in", type=int)
    ap.add_argument("--no-role", action="store_true")
    args = ap.parse_args()

    lock = threading.Lock()
    stats = {"token_puts": 0, "role_lists": 0, "credential_gets": 0, "rejected": 0}
    tokens = set()

    def bump(k):
        with lock:
            stats[k] += 1
            return stats[k]

    def creds_body():
        n = bump("credential_gets")
        body = {"AccessKeyId": args.access_key, "SecretAccessKey": args.secret_key, "Token": "token-%d" % n}
        if args.mode == "imds":
            body.update({"Code": "Success", "Type": "AWS-HMAC",
                         "LastUpdated": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")})
        else:
            body["RoleArn"] = "arn:aws:iam::123456789012:role/" + args.role
        if args.expires_in is not None:
            exp = datetime.datetime.utcnow() + datetime.timedelta(seconds=args.expires_in)
            body["Expiration"] = exp.strftime("%Y-%m-%dT%H:%M:%SZ")
        return json.dumps(body).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def reply(self, status, body=b"", ctype="text/plain"):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def drain(self):
            n = int(self.headers.get("Content-Length") or 0)
            if n:
                self.rfile.read(n)

        def do_PUT(self):
            self.drain()
            if args.mode != "imds" or self.path != "/latest/api/token":
                return self.reply(404)
            ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
            if ttl is None or not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                bump("rejected")
                return self.reply(400, b"missing or invalid X-aws-ec2-metadata-token-ttl-seconds")
            tok = secrets.token_urlsafe(24)
            with lock:
                tokens.add(tok)
            bump("token_puts")
            self.reply(200, tok.encode())

        def do_GET(self):
            self.drain()
            if self.path == "/__stats":
                with lock:
                    return self.reply(200, json.dumps(stats).encode(), "application/json")
            if args.mode == "imds":
                if not self.path.startswith(ROLE_PREFIX):
                    return self.reply(404)
                tok = self.headers.get("X-aws-ec2-metadata-token")
                with lock:
                    ok = tok in tokens
                if not ok:
                    bump("rejected")
                    return self.reply(401)
                rest = self.path[len(ROLE_PREFIX):]
                if rest == "":
                    bump("role_lists")
                    if args.no_role:
                        return self.reply(404)
                    return self.reply(200, args.role.encode())
                if rest != args.role:
                    return self.reply(404)
                return self.reply(200, creds_body(), "application/json")
            # container
            if self.path != args.path:
                return self.reply(404)
            if args.auth_token is not None and self.headers.get("Authorization") != args.auth_token:
                bump("rejected")
                return self.reply(401, b'{"message":"unauthorized"}', "application/json")
            return self.reply(200, creds_body(), "application/json")

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *a: (server.server_close(), sys.exit(0)))
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
