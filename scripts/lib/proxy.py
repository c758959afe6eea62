#!/usr/bin/env python3
"""dogestry's one test and benchmark proxy: counts requests and bytes, and injects faults.

  proxy.py http UPSTREAM_URL [PORT] [--tls CERT KEY]
      A loopback HTTP/1.1 proxy to UPSTREAM_URL (e.g. http://127.0.0.1:18336), speaking HTTPS
      to its clients with --tls (an https:// upstream is reached over TLS without checking its
      certificate: a loopback test server). Requests are
      forwarded as they are, the Host header included, so SigV4 and Manta signatures still check.
      Prints its port on the first line of standard output.
      Control (never forwarded, never counted):
        GET /__stats   -> {"requests","bytesSent","bytesReceived","byMethod","faults","stalling",
                           "authorization","presigned"}
                          (stalling: connections held by a stall fault right now; authorization:
                          requests by the scheme of their Authorization header, "none" without one;
                          presigned: requests whose query carries a signature, X-Amz-Signature or
                          Signature; byStatus: responses by status code)
        GET /__reset   -> zeroes the counts and clears the faults
        GET /__fault?kind=reset|stall|close&after=BYTES&times=N&match=SUBSTRING&seconds=S
            arms a fault for the next N responses whose request line contains SUBSTRING (and is
            not HEAD): after BYTES bytes of response body, `reset` closes the connection with a
            TCP RST, `close` with a plain FIN (a truncated body), `stall` stops sending for S
            seconds (at most 120) and then closes.
        (Every fault takes &skip=K: the first K matching requests pass untouched.)
        GET /__fault?kind=status&code=N&retry_after=S&error=CODE&match=SUBSTRING&times=N
            answers the next N matching requests (HEAD too) itself with status N (a registry
            error body {"errors":[{"code":CODE}]}, `Retry-After: S` when given), the request
            body read and dropped: 429, 503, 403 as a registry or its CDN sends them.
        GET /__fault?kind=delay&seconds=S&match=SUBSTRING&times=N
            holds the next N matching requests S seconds (at most 120) before forwarding them as
            they were sent (a bearer token in them may expire meanwhile).
        GET /__fault?kind=strip-mount&match=SUBSTRING&times=N
            forwards a cross-repository mount (`?mount=D&from=R`) as a plain upload start, as
            a registry that declines mounts answers it (202 and an upload).
        GET /__fault?kind=param&name=K&value=V&match=SUBSTRING&times=N
            sets query parameter K=V on the next N matching requests (`n=2` makes a registry
            paginate its listings).
  proxy.py unix LISTEN_SOCKET TARGET_SOCKET LOG_FILE
      A unix-socket proxy to an engine socket that appends every byte clients send to LOG_FILE.

Every loop is bounded by its connection; the process runs until it is killed.
"""
import http.client
import http.server
import json
import os
import socket
import struct
import sys
import threading
import time
import urllib.parse


def http_proxy(upstream, port=0, tls=None):
    up = urllib.parse.urlsplit(upstream)
    lock = threading.Lock()

    def zero():
        return {"requests": 0, "bytesSent": 0, "bytesReceived": 0, "byMethod": {}, "faults": 0, "stalling": 0,
                "authorization": {}, "presigned": 0, "byStatus": {}}

    body_faults = ("reset", "stall", "close")

    state = {"stats": zero(), "rules": []}

    def take_fault(request_line, method):
        with lock:
            for r in state["rules"]:
                if r["times"] > 0 and r["match"] in request_line and (method != "HEAD" or r["kind"] not in body_faults):
                    if r["skip"] > 0:
                        r["skip"] -= 1
                        continue
                    r["times"] -= 1
                    state["stats"]["faults"] += 1
                    return dict(r)
        return None

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            # The TLS handshake runs here, on the connection's own thread: a client that connects
            # and stalls never holds up the accept loop.
            if tls:
                self.request.settimeout(30)
                self.request.do_handshake()
                self.request.settimeout(None)
            super().setup()

        def log_message(self, *a):
            pass

        def reply(self, obj):
            out = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def control(self):
            u = urllib.parse.urlsplit(self.path)
            if u.path == "/__reset":
                with lock:
                    state["stats"] = zero()
                    state["rules"] = []
            elif u.path == "/__fault":
                q = dict(urllib.parse.parse_qsl(u.query))
                rule = {"kind": q.get("kind", "reset"), "after": int(q.get("after", "0")),
                        "times": int(q.get("times", "1")), "match": q.get("match", ""), "skip": int(q.get("skip", "0")),
                        "seconds": min(float(q.get("seconds", "5")), 120.0),
                        "code": int(q.get("code", "503")), "retry_after": q.get("retry_after"),
                        "error": q.get("error", "UNAVAILABLE"), "name": q.get("name", ""), "value": q.get("value", "")}
                if rule["kind"] not in body_faults + ("status", "strip-mount", "param", "delay"):
                    self.send_error(400, "unknown fault kind")
                    return
                with lock:
                    state["rules"].append(rule)
            with lock:
                self.reply(state["stats"])

        def abort(self, fault):
            if fault["kind"] == "stall":
                self.wfile.flush()
                with lock:
                    state["stats"]["stalling"] += 1
                time.sleep(fault["seconds"])
                with lock:
                    state["stats"]["stalling"] -= 1
            elif fault["kind"] == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            try:
                self.connection.close()
            except OSError:
                pass

        def count(self, sent, received, status=None):
            with lock:
                s = state["stats"]
                if status is not None:
                    s["byStatus"][str(status)] = s["byStatus"].get(str(status), 0) + 1
                s["requests"] += 1
                s["bytesSent"] += sent
                s["bytesReceived"] += received
                s["byMethod"][self.command] = s["byMethod"].get(self.command, 0) + 1
                a = self.headers.get("Authorization")
                scheme = a.split(" ", 1)[0] if a else "none"
                s["authorization"][scheme] = s["authorization"].get(scheme, 0) + 1
                q = urllib.parse.urlsplit(self.path).query
                if "X-Amz-Signature=" in q or "Signature=" in q:
                    s["presigned"] += 1

        def answer(self, fault, n):
            # Read and drop the request body, then answer as a registry (or its CDN) would.
            left = n
            while left > 0:
                d = self.rfile.read(min(left, 1 << 20))
                if not d:
                    break
                left -= len(d)
            body = json.dumps({"errors": [{"code": fault["error"], "message": "injected by the test proxy"}]}).encode()
            self.send_response(fault["code"])
            self.send_header("Content-Type", "application/json")
            if fault["retry_after"] is not None:
                self.send_header("Retry-After", fault["retry_after"])
            self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.count(n - left, 0, fault["code"])

        def handle_any(self):
            if self.path.split("?")[0] in ("/__stats", "/__reset", "/__fault"):
                return self.control()
            fault = take_fault(self.requestline, self.command)
            n = int(self.headers.get("Content-Length") or 0)
            if fault is not None and fault["kind"] == "status":
                return self.answer(fault, n)
            if fault is not None and fault["kind"] == "delay":
                time.sleep(fault["seconds"])
                fault = None
            path = self.path
            if fault is not None and fault["kind"] in ("strip-mount", "param"):
                u = urllib.parse.urlsplit(path)
                q = urllib.parse.parse_qsl(u.query, keep_blank_values=True)
                if fault["kind"] == "strip-mount":
                    q = [(k, v) for k, v in q if k not in ("mount", "from")]
                else:
                    q = [(k, v) for k, v in q if k != fault["name"]] + [(fault["name"], fault["value"])]
                path = urllib.parse.urlunsplit(("", "", u.path, urllib.parse.urlencode(q), ""))
                fault = None
            if up.scheme == "https":
                import ssl
                c = http.client.HTTPSConnection(up.hostname, up.port, timeout=300, context=ssl._create_unverified_context())
            else:
                c = http.client.HTTPConnection(up.hostname, up.port, timeout=300)
            c.putrequest(self.command, path, skip_host=True, skip_accept_encoding=True)
            for k, v in self.headers.items():
                c.putheader(k, v)
            c.endheaders()
            left = n
            while left > 0:
                d = self.rfile.read(min(left, 1 << 20))
                if not d:
                    break
                c.send(d)
                left -= len(d)
            r = c.getresponse()
            self.send_response(r.status)
            for k, v in r.getheaders():
                if k.lower() in ("transfer-encoding", "connection", "server", "date"):
                    continue
                self.send_header(k, v)
            got = 0
            aborted = False
            if self.command != "HEAD" and r.getheader("Content-Length") is None:
                body = r.read()
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                got = len(body)
            else:
                self.end_headers()
                while self.command != "HEAD":
                    want = 1 << 16
                    if fault is not None:
                        want = min(want, max(0, fault["after"] - got)) or 1
                    d = r.read(want)
                    if not d:
                        break
                    if fault is not None and got + len(d) > fault["after"]:
                        keep = fault["after"] - got
                        if keep > 0:
                            self.wfile.write(d[:keep])
                            got += keep
                        aborted = True
                        break
                    self.wfile.write(d)
                    got += len(d)
            c.close()
            self.count(n - left, got, r.status)
            if aborted:
                self.abort(fault)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = handle_any

    s = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
    s.daemon_threads = True
    if tls:
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tls[0], tls[1])
        s.socket = ctx.wrap_socket(s.socket, server_side=True, do_handshake_on_connect=False)
    print(s.server_address[1], flush=True)
    s.serve_forever()


def unix_proxy(listen, target, log):
    lock = threading.Lock()
    logf = open(log, "ab", buffering=0)

    def pump(src, dst, logged):
        try:
            while True:
                d = src.recv(65536)
                if not d:
                    break
                if logged:
                    with lock:
                        logf.write(d)
                dst.sendall(d)
        except OSError:
            pass
        finally:
            for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
                try:
                    s.shutdown(how)
                except OSError:
                    pass

    def serve(c):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(target)
        except OSError:
            c.close()
            return
        a = threading.Thread(target=pump, args=(c, s, True), daemon=True)
        b = threading.Thread(target=pump, args=(s, c, False), daemon=True)
        a.start()
        b.start()
        a.join()
        b.join()
        c.close()
        s.close()

    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(listen + ".tmp")
    os.rename(listen + ".tmp", listen)
    srv.listen(64)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "http":
        args = sys.argv[2:]
        tls = None
        if "--tls" in args:
            i = args.index("--tls")
            tls = (args[i + 1], args[i + 2])
            del args[i:i + 3]
        http_proxy(args[0], int(args[1]) if len(args) > 1 else 0, tls)
    elif len(sys.argv) == 5 and sys.argv[1] == "unix":
        unix_proxy(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)
