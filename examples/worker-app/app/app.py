"""A small web application for the worker-app example: Python's standard library only.

Started by the site host as IIS's HttpPlatformHandler would start it: `python3 app.py PORT`
(web.config passes %HTTP_PLATFORM_PORT%), working directory = this folder. It listens on
loopback only; the site host forwards requests to it with X-Forwarded-For/-Proto/-Host.
"""

import html
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STARTED = time.time()


class Handler(BaseHTTPRequestHandler):
    # Keep-alive, so the site host can reuse its connections to this worker.
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY the body waits for the
    # proxy's delayed ACK (about 40 ms per request).
    disable_nagle_algorithm = True
    server_version = "worker-app"

    def info(self):
        return {
            "path": self.path,
            "pid": os.getpid(),
            "uptime_seconds": round(time.time() - STARTED, 1),
            "greeting": os.environ.get("GREETING", "Hello"),
            "client": self.headers.get("X-Forwarded-For", self.client_address[0]),
            "scheme": self.headers.get("X-Forwarded-Proto", "http"),
            "host": self.headers.get("X-Forwarded-Host", self.headers.get("Host", "")),
        }

    def send(self, status, content_type, body):
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_GET(self):
        info = self.info()
        if self.path.startswith("/api"):
            self.send(200, "application/json", json.dumps(info) + "\n")
            return
        rows = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in info.items()
        )
        page = (
            "<!doctype html><html><head><meta charset='utf-8'><title>worker-app</title></head>"
            f"<body><h1>{html.escape(info['greeting'])}</h1><table>{rows}</table>"
            "<p>JSON: <a href='/api'>/api</a>. POST a body to /echo.</p></body></html>"
        )
        self.send(200, "text/html; charset=utf-8", page)

    do_HEAD = do_GET

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        # One line per request on stdout: `nomad alloc logs` shows it.
        print(f"{self.address_string()} {format % args}", flush=True)


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("HTTP_PLATFORM_PORT", "8080"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    # A graceful stop (SIGTERM, as the site host sends on stop and recycle): finish the
    # request in hand, then exit.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"worker-app listening on 127.0.0.1:{port} (pid {os.getpid()})", flush=True)
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
