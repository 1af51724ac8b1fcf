"""A worker program for the host's tests: an HTTP/1.1 server on $PORT (or the first argument
that is a number) with routes that show what the host gives a worker and how it behaves.

Modes (argv[1]): serve (default), crash (exit 3 at once), never-listen (run without binding),
stubborn (serve, ignore SIGTERM), slow-start (sleep 1.5 s, then serve).

Routes: /pid, /env (JSON of the environment), /headers (JSON of request headers), /path (the
request path), /echo (POST: body length and sha256), /big?n=N (N bytes streamed), /slow?s=S
(answer after S seconds), /crash (exit mid-request), /ws (WebSocket echo), anything else: 200
with the path.
"""

import base64
import hashlib
import json
import os
import signal
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

mode = sys.argv[1] if len(sys.argv) > 1 else "serve"
print(f"worker {os.getpid()} starting in mode {mode}", flush=True)
print(f"worker {os.getpid()} says hello on stderr", file=sys.stderr, flush=True)

if mode == "crash":
    sys.exit(3)
if mode == "never-listen":
    while True:
        time.sleep(60)
if mode == "stubborn":
    signal.signal(signal.SIGTERM, lambda *_: print("ignoring SIGTERM", flush=True))
if mode == "slow-start":
    time.sleep(1.5)

port = int(os.environ["PORT"])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def reply(self, body, status=200, content_type="text/plain"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path.endswith("/pid"):
            self.reply(str(os.getpid()))
        elif url.path.endswith("/env"):
            self.reply(json.dumps(dict(os.environ)), content_type="application/json")
        elif url.path.endswith("/headers"):
            self.reply(json.dumps({k.lower(): v for k, v in self.headers.items()}),
                       content_type="application/json")
        elif url.path.endswith("/path"):
            self.reply(self.path)
        elif url.path.endswith("/big"):
            n = int(query.get("n", ["0"])[0])
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            chunk = b"x" * 65536
            while n > 0:
                self.wfile.write(chunk[: min(n, len(chunk))])
                n -= min(n, len(chunk))
        elif url.path.endswith("/slow"):
            time.sleep(float(query.get("s", ["1"])[0]))
            self.reply("slow done")
        elif url.path.endswith("/crash"):
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"partial")
            self.wfile.flush()
            os._exit(7)
        elif url.path.endswith("/ws"):
            self.websocket()
        else:
            self.reply(f"worker {os.getpid()} path {self.path}")

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        digest = hashlib.sha256()
        remaining = length
        while remaining > 0:
            data = self.rfile.read(min(remaining, 65536))
            if not data:
                break
            digest.update(data)
            remaining -= len(data)
        self.reply(f"{length - remaining} {digest.hexdigest()} {os.getpid()}")

    def websocket(self):
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(
            hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        ).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            opcode = head[0] & 0x0F
            length = head[1] & 0x7F
            if length == 126:
                length = int.from_bytes(self.rfile.read(2), "big")
            elif length == 127:
                length = int.from_bytes(self.rfile.read(8), "big")
            mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(length)))
            if opcode == 8:
                self.wfile.write(bytes([0x88, 0]))
                self.wfile.flush()
                return
            frame = bytes([0x80 | opcode])
            if len(payload) < 126:
                frame += bytes([len(payload)])
            else:
                frame += bytes([126]) + len(payload).to_bytes(2, "big")
            self.wfile.write(frame + payload)
            self.wfile.flush()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # The host picked the port a moment ago: a TIME_WAIT left by its probe must not stop us.
    allow_reuse_address = True


Server(("127.0.0.1", port), Handler).serve_forever()
