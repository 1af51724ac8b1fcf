#!/usr/bin/env python3
"""Hostile clients against the site host and nginx, side by side in one run (RELIABILITY.md).

    python3 bench/attacks.py [--binary target/release/nomad_iis] [--only NAME ...] [--quick]

Starts one site host (`nomad_iis host` with a spec.json written here: one http binding, one static
application) and one nginx (Debian's, `apt-get install -y nginx-light` when missing; one worker,
plain HTTP/1.1 on one port and h2c with prior knowledge on another, as the host serves both on one
port), both serving the same folder: `small.html` (1 KiB) and `big.bin` (1 MiB). Then runs each
attack against both and prints a markdown table of what each server did.

Attacks (each measured by the server's RSS and open descriptors from /proc, and the time a fresh
client takes to GET small.html while the attack goes on):
  h2-unread   100 h2c connections x 200 streams GET /big.bin whose client never reads
  idle        10,000 keep-alive connections that made one request and went idle: bytes per
              connection, and RSS after they closed
  strict      RFC 9112 cases with raw bytes: the status line and whether the connection closed
  headers     header floods: 10,000 small headers; one 1 MiB header
  smuggling   Content-Length + Transfer-Encoding, two Content-Lengths, a bad chunk size
  traversal   a corpus of encodings of ../ and of hidden files: any 200 is a failure
  slowloris   500 connections sending one header byte every 2 s
  rapid-reset 20 h2c connections x 5,000 HEADERS each followed by RST_STREAM at once
  continuation 20 h2c connections sending one HEADERS without END_HEADERS and CONTINUATION frames
              without end (1 KiB each, 20 s)

Every process started here runs in its own session and is stopped at exit.
"""

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    # nginx cannot report the port it got; the host can (port 0, read back from its notice).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def threads(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("Threads:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def fds(pids):
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return total


def get_ms(port, path="/small.html", timeout=5.0):
    """Milliseconds for a fresh HTTP/1.1 GET of `path`, or None when it failed or timed out."""
    start = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        if not data.startswith(b"HTTP/1.1 200"):
            return None
        return (time.monotonic() - start) * 1000
    except OSError:
        return None


class Server:
    def __init__(self, name, process, pids, h1_port, h2_port):
        self.name, self.process, self.pids = name, process, pids
        self.h1_port, self.h2_port = h1_port, h2_port

    def stop(self):
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def start_host(binary, work, site, env=None):
    runtime = os.path.join(work, "runtime")
    os.makedirs(runtime)
    stderr = os.path.join(work, "host.stderr")
    duration = lambda s: {"secs": s, "nanos": 0}
    spec = {
        "alloc_id": "attack", "task_name": "web", "site_name": "nomad-attack-web",
        "runtime_dir": runtime, "task_dir": work, "stdout_path": "/dev/null", "stderr_path": stderr,
        "bindings": [{"kind": "http", "ip_address": "127.0.0.1", "port": 0}],
        "pools": [{
            "name": "default", "full_name": "nomad-attack-web-default", "start_mode": "OnDemand",
            "idle_timeout": duration(0), "periodic_restart": duration(0),
            "start_time_limit": duration(90), "shutdown_time_limit": duration(5),
            "disable_overlapped_recycle": False, "service_unavailable_response": "HttpLevel",
            "queue_length": 1000,
        }],
        "applications": [{"alias": "/", "path": site, "pool": "default", "virtual_directories": []}],
    }
    with open(os.path.join(runtime, "spec.json"), "w") as f:
        json.dump(spec, f)
    process = subprocess.Popen([binary, "host", "--runtime-dir", runtime], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True, env={**os.environ, **(env or {})})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with open(stderr) as f:
                text = f.read()
        except OSError:
            text = ""
        if "listening on " in text:
            port = int(text.split("listening on ")[1].split()[0].rsplit(":", 1)[1].rstrip(","))
            return Server("site host", process, [process.pid], port, port)
        if process.poll() is not None:
            raise RuntimeError(f"the host exited: {text}")
        time.sleep(0.01)
    raise RuntimeError("the host did not start")


def start_nginx(work, site):
    if shutil.which("nginx") is None:
        subprocess.run(["apt-get", "install", "-y", "nginx-light"], check=True)
    folder = os.path.join(work, "nginx")
    os.makedirs(folder)
    h1, h2 = free_port(), free_port()
    with open(os.path.join(folder, "nginx.conf"), "w") as f:
        f.write(f"""
worker_processes 1;
worker_rlimit_nofile {resource.getrlimit(resource.RLIMIT_NOFILE)[1]};
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{ worker_connections 20000; }}
http {{
  access_log off;
  sendfile on;
  keepalive_requests 100000;
  server {{ listen 127.0.0.1:{h1}; root {site}; }}
  server {{ listen 127.0.0.1:{h2} http2; root {site}; }}
}}
""")
    process = subprocess.Popen(["nginx", "-p", folder, "-c", os.path.join(folder, "nginx.conf"),
                                "-g", "daemon off;"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 30
    while get_ms(h1) is None:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("nginx did not start")
        time.sleep(0.05)
    children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True)
    pids = [process.pid] + [int(p) for p in children.stdout.split()]
    return Server("nginx 1.22", process, pids, h1, h2)


# --- a minimal HTTP/2 client: frames and literal HPACK, enough to misbehave -----------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def hpack_literal(index, value):
    """A literal header field without indexing, name from the static table."""
    value = value.encode()
    assert index < 15 and len(value) < 127
    return bytes([index]) + bytes([len(value)]) + value


def request_block(path):
    # :method GET (2), :scheme http (6), :path (4) literal, :authority (1) literal.
    return b"\x82\x86" + hpack_literal(4, path) + hpack_literal(1, "localhost")


def h2_connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    # A small receive buffer, like a slow phone: the server's data backs up sooner.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(PREFACE + frame(4, 0, 0))
    return s


def sample_while(server, seconds, stop_when=None):
    """Max RSS, max fds and worst GET latency over `seconds`, sampling every 0.5 s."""
    peak_rss = peak_fds = 0
    worst = 0.0
    failed = 0
    server.peak_threads = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        server.peak_threads = max(server.peak_threads, threads(server.pids))
        peak_rss = max(peak_rss, rss_kib(server.pids))
        peak_fds = max(peak_fds, fds(server.pids))
        ms = get_ms(server.h1_port, timeout=2.0)
        if ms is None:
            failed += 1
        else:
            worst = max(worst, ms)
        time.sleep(0.5)
    return peak_rss, peak_fds, worst, failed


def fmt_mib(kib):
    return f"{kib / 1024:.0f} MiB"


def attack_h2_unread(server, quick):
    connections, streams = (20, 200) if quick else (100, 200)
    before = rss_kib(server.pids)
    sockets = []
    for _ in range(connections):
        s = h2_connect(server.h2_port)
        frames = b"".join(frame(1, 0x5, 2 * i + 1, request_block("/big.bin")) for i in range(streams))
        s.sendall(frames)
        sockets.append(s)
    peak_rss, peak_fds, worst, failed = sample_while(server, 10 if quick else 20)
    for s in sockets:
        s.close()
    time.sleep(2)
    after = rss_kib(server.pids)
    return (f"RSS {fmt_mib(before)} → peak {fmt_mib(peak_rss)} → {fmt_mib(after)} after; "
            f"peak fds {peak_fds}, threads {server.peak_threads}; GET small.html worst {worst:.0f} ms, "
            f"{failed} failed")


IDLE_SETTLE_SECONDS = 4


def settle_idle(seconds):
    global IDLE_SETTLE_SECONDS
    IDLE_SETTLE_SECONDS = seconds


def attack_idle(server, quick):
    count = 1000 if quick else 10_000
    base = rss_kib(server.pids)
    sockets = []
    request = b"GET /small.html HTTP/1.1\r\nHost: localhost\r\n\r\n"
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", server.h1_port), timeout=10)
        s.sendall(request)
        sockets.append(s)
    for s in sockets:
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(4096)
    # Longer than the host's 2 s park grace: what is measured is connections at rest, not ones
    # that just answered.
    time.sleep(IDLE_SETTLE_SECONDS)
    loaded = rss_kib(server.pids)
    for s in sockets:
        s.close()
    time.sleep(3)
    after = rss_kib(server.pids)
    per = (loaded - base) * 1024 / count
    return (f"{count} idle: {per:.0f} B/connection (RSS {fmt_mib(base)} → {fmt_mib(loaded)}); "
            f"after close {fmt_mib(after)}")


def raw(port, data, timeout=3.0):
    """Status line of the answer and whether the server closed the connection after it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            pass
        answer = b""
        closed = False
        s.settimeout(timeout)
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    closed = True
                    break
                answer += chunk
                if b"\r\n\r\n" in answer:
                    s.settimeout(0.5)
        except socket.timeout:
            pass
        except OSError:
            closed = True
    line = answer.split(b"\r\n", 1)[0].decode(errors="replace") or "(no answer)"
    return f"{line}{', closed' if closed else ''}"


STRICT = [
    ("no Host", b"GET /small.html HTTP/1.1\r\n\r\n"),
    ("two Hosts", b"GET /small.html HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    ("Host with a space", b"GET /small.html HTTP/1.1\r\nHost: a b\r\n\r\n"),
    ("CONNECT", b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n"),
    ("10,000-char method", b"A" * 10_000 + b" / HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("9,000-char target", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("Content-Length 2^64-1", b"POST /small.html HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n"),
]

HEADERS = [
    ("10,000 headers", b"GET /small.html HTTP/1.1\r\nHost: a\r\n" + b"X-A: b\r\n" * 10_000 + b"\r\n"),
    ("1 MiB header", b"GET /small.html HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * (1 << 20) + b"\r\n\r\n"),
]

SMUGGLING = [
    ("CL + TE", b"POST /small.html HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("two CLs", b"POST /small.html HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd"),
    ("bad chunk size", b"POST /small.html HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n"),
    ("TE: chunked, identity", b"POST /small.html HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
]

TRAVERSAL = [
    "/../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E/secret.txt", "/..%2fsecret.txt",
    "/..%2Fsecret.txt", "/%2e%2e%2fsecret.txt", "/..%5csecret.txt", "/..\\secret.txt",
    "/.%2e/secret.txt", "/%2e./secret.txt", "/a/../../secret.txt", "/a/%2e%2e/%2e%2e/secret.txt",
    "/%252e%252e/secret.txt", "/..;/secret.txt", "/%c0%ae%c0%ae/secret.txt",
    "/%e0%80%ae%e0%80%ae/secret.txt", "/..%00/secret.txt", "/%00../secret.txt",
    "//../secret.txt", "/./../secret.txt", "/web.config", "/WEB.CONFIG", "/web.config.",
    "/bin/app.dll", "/BIN/app.dll", "/%62in/app.dll", "/App_Data/db.mdf", "/app_data/db.mdf",
    "/App%5FData/db.mdf", "/Global.asax", "/Views/Index.cshtml",
]


def attack_requests(cases):
    def run(server):
        return "; ".join(f"{name}: {raw(server.h1_port, data)}" for name, data in cases)
    return run


def attack_traversal(server, quick):
    served = []
    for path in TRAVERSAL:
        line = raw(server.h1_port, f"GET {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode("latin-1"))
        if " 200 " in line:
            served.append(path)
    return f"{len(TRAVERSAL)} paths, served with 200: {', '.join(served) or 'none'}"


def attack_slowloris(server, quick):
    count = 100 if quick else 500
    sockets = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", server.h1_port), timeout=10)
        s.sendall(b"GET /small.html HTTP/1.1\r\nHost: a\r\n")
        sockets.append(s)
    stop = threading.Event()

    def trickle():
        while not stop.is_set():
            for s in sockets:
                try:
                    s.sendall(b"X")
                except OSError:
                    pass
            stop.wait(2)

    thread = threading.Thread(target=trickle)
    thread.start()
    seconds = 10 if quick else 40
    peak_rss, peak_fds, worst, failed = sample_while(server, seconds)
    stop.set()
    thread.join()
    alive = 0
    for s in sockets:
        try:
            s.sendall(b"X")
            s.setblocking(False)
            if s.recv(1) == b"":
                continue
            alive += 1
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
        s.close()
    return (f"{count} trickling for {seconds} s: {alive} still open; peak fds {peak_fds}; "
            f"GET small.html worst {worst:.0f} ms, {failed} failed")


def attack_rapid_reset(server, quick):
    connections, per = (5, 2000) if quick else (20, 5000)
    before = rss_kib(server.pids)
    start = time.monotonic()
    sockets = []
    for _ in range(connections):
        s = h2_connect(server.h2_port)
        batch = b"".join(
            frame(1, 0x5, 2 * i + 1, request_block("/small.html")) + frame(3, 0, 2 * i + 1, struct.pack(">I", 8))
            for i in range(per))
        try:
            s.sendall(batch)
        except OSError:
            pass
        sockets.append(s)
    peak_rss, peak_fds, worst, failed = sample_while(server, 5)
    for s in sockets:
        s.close()
    return (f"{connections}x{per} HEADERS+RST in {time.monotonic() - start:.1f} s; RSS {fmt_mib(before)} → "
            f"peak {fmt_mib(peak_rss)}; GET small.html worst {worst:.0f} ms, {failed} failed")


def attack_continuation(server, quick):
    connections = 5 if quick else 20
    seconds = 5 if quick else 20
    before = rss_kib(server.pids)
    sockets = [h2_connect(server.h2_port) for _ in range(connections)]
    for s in sockets:
        s.sendall(frame(1, 0x1, 1, request_block("/small.html")))  # HEADERS: END_STREAM, no END_HEADERS
    stop = threading.Event()
    sent = [0]

    def flood():
        junk = frame(9, 0, 1, b"\x00\x03x-a\x03" + b"b" * 1000)  # CONTINUATION, literal fields
        while not stop.is_set():
            for s in sockets:
                try:
                    s.sendall(junk)
                    sent[0] += len(junk)
                except OSError:
                    pass

    thread = threading.Thread(target=flood)
    thread.start()
    peak_rss, peak_fds, worst, failed = sample_while(server, seconds)
    stop.set()
    thread.join()
    for s in sockets:
        s.close()
    return (f"{sent[0] / 1e6:.0f} MB of CONTINUATION; RSS {fmt_mib(before)} → peak {fmt_mib(peak_rss)}; "
            f"GET small.html worst {worst:.0f} ms, {failed} failed")


ATTACKS = {
    "h2-unread": attack_h2_unread,
    "idle": attack_idle,
    "strict": lambda server, quick: attack_requests(STRICT)(server),
    "headers": lambda server, quick: attack_requests(HEADERS)(server),
    "smuggling": lambda server, quick: attack_requests(SMUGGLING)(server),
    "traversal": attack_traversal,
    "slowloris": attack_slowloris,
    "rapid-reset": attack_rapid_reset,
    "continuation": attack_continuation,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", default=os.path.join(ROOT, "target/release/nomad_iis"))
    parser.add_argument("--only", nargs="*", choices=list(ATTACKS), help="attacks to run (default all)")
    parser.add_argument("--quick", action="store_true", help="smaller attacks (a smoke test)")
    parser.add_argument("--host-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for the site host (e.g. MALLOC_ARENA_MAX=2)")
    parser.add_argument("--idle-settle", type=float, default=IDLE_SETTLE_SECONDS, metavar="SECONDS",
                        help="idle attack: how long connections rest before RSS is read (default 4)")
    parser.add_argument("--no-nginx", action="store_true", help="attack the site host only")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    work = tempfile.mkdtemp(prefix="nomad_iis-attacks.")
    # nginx's workers run as nobody when started by root: they must be able to read the site.
    os.chmod(work, 0o755)
    site = os.path.join(work, "site")
    for folder in ["site/bin", "site/App_Data", "site/Views"]:
        os.makedirs(os.path.join(work, folder))
    with open(os.path.join(site, "small.html"), "wb") as f:
        f.write(b"x" * 1024)
    with open(os.path.join(site, "big.bin"), "wb") as f:
        f.write(os.urandom(1 << 20))
    for name in ["bin/app.dll", "App_Data/db.mdf", "Global.asax", "Views/Index.cshtml"]:
        with open(os.path.join(site, name), "w") as f:
            f.write("secret")
    # The host reads web.config at start and refuses one that is not XML.
    with open(os.path.join(site, "web.config"), "w") as f:
        f.write("<configuration><!-- secret --></configuration>")
    with open(os.path.join(work, "secret.txt"), "w") as f:
        f.write("secret")

    servers = []
    try:
        settle_idle(args.idle_settle)
        env = dict(item.split("=", 1) for item in args.host_env)
        servers.append(start_host(args.binary, work, site, env))
        if env:
            servers[0].name += " (" + " ".join(args.host_env) + ")"
        if not args.no_nginx:
            servers.append(start_nginx(work, site))
        rows = []
        for name in args.only or list(ATTACKS):
            row = [name]
            for server in servers:
                print(f"{name} against {server.name}...", file=sys.stderr, flush=True)
                try:
                    row.append(ATTACKS[name](server, args.quick))
                except Exception as e:  # a failed attack is a finding, not a crash of the run
                    row.append(f"attack failed: {e!r}")
                time.sleep(1)
            rows.append(row)
        print(f"Command: `python3 bench/attacks.py {' '.join(sys.argv[1:])}`, "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs\n")
        print("| attack | " + " | ".join(s.name for s in servers) + " |")
        print("|---" * (len(servers) + 1) + "|")
        for row in rows:
            print("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
