#!/usr/bin/env python3
"""A test token server for a registry's `auth.token` (the Docker Hub / GHCR style of auth).

  token_server.py --port N --key TOKEN.key --cert TOKEN.crt --issuer ISS --service SVC \
                  --user USER --password PASS [--ttl SECONDS] [--tls-cert CRT --tls-key KEY] \
                  [--exp-leeway SECONDS] [--log FILE] [--host 127.0.0.1]

  GET  /token?service=SVC&scope=repository:NAME:pull,push[&scope=...][&offline_token=true]
      HTTP basic credentials USER:PASS -> 200 {"token","access_token","expires_in","issued_at"}
          granting every action asked for (any scope type, e.g. registry:catalog:*)
      no credentials                   -> 200 with an anonymous token granting nothing (empty
          access list), as Docker Hub does for a private repository
      wrong credentials                -> 401 {"errors":[{"code":"UNAUTHORIZED",...}]}
      a service other than SVC         -> 400
  POST /token (form: grant_type=password&username&password&service&scope[&access_type=offline],
      or grant_type=refresh_token&refresh_token&service&scope) -> the same, OAuth2 style;
      a refresh token is handed out with offline_token=true (GET) or access_type=offline (POST).
  GET  /healthz -> 200 "ok"

The JWT is RS256-signed with --key; its header carries x5c = [base64 DER of --cert], which a
registry checks against its rootcertbundle. Claims: iss, sub (the user, "" when anonymous),
aud (the service), exp (now + ttl - exp-leeway), nbf, iat, jti, access [{type, name, actions}].
distribution 2.8 accepts a token until 60 s after its exp (a fixed clock-skew leeway, measured
here); --exp-leeway 60 cancels it, so that the registry refuses the token (401) once
issued_at + expires_in has passed (within 1 s after) — what a test of token expiry and refresh needs. The exp claim is
then earlier than expires_in says, even before iat for a ttl under 60 s: clients must treat the
token as opaque and go by expires_in, as the distribution token spec says.
Serves HTTPS when --tls-cert/--tls-key are given, plain HTTP otherwise. Binds 127.0.0.1.
Logs one line per request (method, path, service, scopes, user, outcome) to --log or stderr —
never a password or a token. Stops on SIGTERM.
"""
import argparse
import base64
import datetime
import http.server
import json
import math
import os
import secrets
import signal
import ssl
import sys
import threading
import time
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def parse_scope(s):
    """'repository:host:5000/ns/app:pull,push' -> ('repository', 'host:5000/ns/app', ['pull','push'])."""
    first, last = s.find(":"), s.rfind(":")
    if first < 0 or last == first:
        return None
    kind, name, actions = s[:first], s[first + 1:last], s[last + 1:]
    if not kind or not name:
        return None
    return kind, name, [a for a in actions.split(",") if a]


class TokenServer:
    def __init__(self, args):
        self.args = args
        with open(args.key, "rb") as f:
            self.key = serialization.load_pem_private_key(f.read(), password=None)
        with open(args.cert, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        self.x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")]
        self.log_file = open(args.log, "a", buffering=1) if args.log else sys.stderr
        self.log_lock = threading.Lock()
        self.refresh_tokens = {}  # opaque refresh token -> user
        self.refresh_lock = threading.Lock()

    def log(self, line):
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with self.log_lock:
            self.log_file.write(f"{stamp} {line}\n")
            self.log_file.flush()

    def jwt(self, user, access, now):
        """A token issued at NOW (float seconds). JWT times are whole seconds: iat/nbf round down,
        exp rounds up, so the token is good for at least ttl seconds from NOW (and < 1 s more)."""
        header = {"typ": "JWT", "alg": "RS256", "x5c": self.x5c}
        claims = {
            "iss": self.args.issuer,
            "sub": user or "",
            "aud": self.args.service,
            "exp": math.ceil(now) + self.args.ttl - self.args.exp_leeway,
            "nbf": math.floor(now),
            "iat": math.floor(now),
            "jti": secrets.token_hex(16),
            "access": access,
        }
        signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         b64url(json.dumps(claims, separators=(",", ":")).encode()))
        sig = self.key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + b64url(sig)

    def grant(self, user, scopes):
        """The access list for USER (None: anonymous, who gets nothing)."""
        if user is None:
            return []
        access = {}  # (type, name) -> actions, in the order asked; repeated scopes merge
        for s in scopes:
            parsed = parse_scope(s)
            if parsed:
                kind, name, actions = parsed
                have = access.setdefault((kind, name), [])
                have.extend(a for a in actions if a not in have)
        return [{"type": k, "name": n, "actions": a} for (k, n), a in access.items()]

    def new_refresh_token(self, user):
        tok = secrets.token_urlsafe(24)
        with self.refresh_lock:
            self.refresh_tokens[tok] = user
        return tok

    def user_of_refresh_token(self, tok):
        with self.refresh_lock:
            return self.refresh_tokens.get(tok)


def make_handler(srv):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "dogestry-test-token-server"
        timeout = 30

        def log_message(self, fmt, *a):  # the default logs the raw request line; we log our own
            pass

        def reply(self, status, body, extra_headers=()):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in extra_headers:
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def record(self, service, scopes, user, outcome):
            who = "anonymous" if user is None else user
            path = urllib.parse.urlsplit(self.path).path
            srv.log(f"{self.command} {path} service={service!r} scope={' '.join(scopes)!r} "
                    f"user={who!r} outcome={outcome}")

        def basic_credentials(self):
            """(user, password) from an Authorization: Basic header; None if absent or unreadable."""
            h = self.headers.get("Authorization", "")
            if not h.lower().startswith("basic "):
                return None
            try:
                raw = base64.b64decode(h[6:].strip(), validate=True).decode("utf-8")
            except Exception:
                return ("", "")
            user, _, password = raw.partition(":")
            return (user, password)

        def issue(self, service, scopes, user, want_refresh, oauth):
            if service and service != srv.args.service:
                self.record(service, scopes, user, "400 unknown service")
                self.reply(400, {"errors": [{"code": "DENIED", "message": f"unknown service {service!r}"}]}
                           if not oauth else {"error": "invalid_request",
                                              "error_description": f"unknown service {service!r}"})
                return
            now = time.time()
            access = srv.grant(user, scopes)
            token = srv.jwt(user, access, now)
            body = {"token": token, "access_token": token, "expires_in": srv.args.ttl,
                    "issued_at": datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
                    .strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
            if oauth:
                body["scope"] = " ".join(scopes)
            if want_refresh and user is not None:
                body["refresh_token"] = srv.new_refresh_token(user)
            granted = ";".join(f"{a['type']}:{a['name']}:{','.join(a['actions'])}" for a in access) or "nothing"
            self.record(service, scopes, user, f"200 granted={granted}")
            self.reply(200, body)

        def unauthorized(self, service, scopes, user, why, oauth):
            self.record(service, scopes, user, f"401 {why}")
            body = ({"error": "invalid_grant", "error_description": why} if oauth else
                    {"errors": [{"code": "UNAUTHORIZED", "message": why}]})
            self.reply(401, body, [("WWW-Authenticate", 'Basic realm="dogestry-test-token-server"')])

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/healthz":
                data = b"ok\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            if url.path != "/token":
                self.record("", [], None, "404")
                self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": "not found"}]})
                return
            q = urllib.parse.parse_qs(url.query)
            service = q.get("service", [""])[0]
            scopes = [s for v in q.get("scope", []) for s in v.split(" ") if s]
            want_refresh = q.get("offline_token", [""])[0].lower() == "true"
            creds = self.basic_credentials()
            if creds is None:
                self.issue(service, scopes, None, False, oauth=False)
            elif creds == (srv.args.user, srv.args.password):
                self.issue(service, scopes, creds[0], want_refresh, oauth=False)
            else:
                self.unauthorized(service, scopes, creds[0], "incorrect username or password", oauth=False)

        def do_POST(self):
            url = urllib.parse.urlsplit(self.path)
            if url.path != "/token":
                self.record("", [], None, "404")
                self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": "not found"}]})
                return
            try:
                n = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                n = -1
            if n < 0 or n > 1 << 20:
                self.record("", [], None, "400 bad length")
                self.reply(400, {"error": "invalid_request", "error_description": "bad Content-Length"})
                return
            form = urllib.parse.parse_qs(self.rfile.read(n).decode("utf-8", "replace"))
            f = lambda k: form.get(k, [""])[0]
            service = f("service")
            scopes = [s for v in form.get("scope", []) for s in v.split(" ") if s]
            want_refresh = f("access_type") == "offline"
            grant_type = f("grant_type")
            if grant_type == "password":
                user = f("username")
                if not user:
                    self.record(service, scopes, None, "400 no username")
                    self.reply(400, {"error": "invalid_request", "error_description": "username missing"})
                elif (user, f("password")) == (srv.args.user, srv.args.password):
                    self.issue(service, scopes, user, want_refresh, oauth=True)
                else:
                    self.unauthorized(service, scopes, user, "incorrect username or password", oauth=True)
            elif grant_type == "refresh_token":
                user = srv.user_of_refresh_token(f("refresh_token"))
                if user is None:
                    self.unauthorized(service, scopes, None, "unknown refresh token", oauth=True)
                else:
                    self.issue(service, scopes, user, False, oauth=True)
            else:
                self.record(service, scopes, None, f"400 unsupported grant_type {grant_type!r}")
                self.reply(400, {"error": "unsupported_grant_type"})

    return Handler


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--key", required=True, help="PEM RSA private key that signs the JWTs")
    p.add_argument("--cert", required=True, help="PEM certificate of --key (sent as x5c)")
    p.add_argument("--issuer", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--ttl", type=int, default=300, help="token lifetime in seconds (default 300)")
    p.add_argument("--exp-leeway", type=int, default=0,
                   help="subtract this from the exp claim to cancel a registry's leeway (default 0)")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--log", help="request log file (appended; default stderr)")
    args = p.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")

    srv = TokenServer(args)

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):  # one line, not a traceback
            srv.log(f"connection error from {client_address[0]}:{client_address[1]}: {sys.exc_info()[1]!r}")

    httpd = Server((args.host, args.port), make_handler(srv))
    scheme = "http"
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        # Handshake in the request's thread (first read), not in accept(): a stuck client
        # cannot block the server.
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
        scheme = "https"
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    srv.log(f"listening on {scheme}://{args.host}:{httpd.server_address[1]}/token "
            f"service={args.service!r} issuer={args.issuer!r} ttl={args.ttl}s exp-leeway={args.exp_leeway}s")
    httpd.serve_forever()


if __name__ == "__main__":
    main()
