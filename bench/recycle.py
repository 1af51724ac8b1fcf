#!/usr/bin/env python3
"""Recycles under load, our host vs `nginx -s reload`, and OnDemand first-request latency.

    python3 bench/recycle.py [--recycles 100] [--steady 5] [--gap 0.3] [--conns 32]
                             [--load-fraction 0.5] [--ondemand-runs 20]
                             [--server-cpus 0] [--client-cpus 1] [--no-pin] [--no-build]
                             [--out bench/results]

Set-up (as bench/proxy.sh): the backend is nginx with one worker process serving a 1 KiB file,
started by our host as the worker of a process application from the application folder's
web.config (`<httpPlatform processPath="sh" arguments="backend.sh %HTTP_PLATFORM_PORT%">`); a
second instance of the same backend is what nginx as reverse proxy forwards to (upstream
keepalive 64, HTTP/1.1, the same forwarded headers). The one difference to bench/proxy.sh: the
backend adds a response header `X-Backend-Port` (its port), so a probe can tell which worker
answered. Proxies and backends run on the server CPUs, wrk and this script on the client CPUs.

Part 1, recycles under load. Peak first: `wrk -t1 -c32 -d5s` against each proxy (no pacing).
Then, for each proxy in turn, wrk with bench/paced.lua sends LOAD = load-fraction × the lower of
the two peaks (the same rate for both) on `--conns` kept-alive connections, and counts every
response in 100 ms buckets (2xx and others) plus wrk's socket errors (connect, read, write,
timeout). After `--steady` seconds of steady load, `--recycles` recycles, each followed by
`--gap` seconds:
  - ours: `{"command":"recycle_pool","pool":"app"}` on the host's control socket (what
    `nomad_iis` and the Management API's recycle route send); duration = command → reply (the
    host replies once the new worker accepts connections and new requests go to it), and
    command → the first probe response (a new connection, GET every 2 ms) carrying the new
    worker's port;
  - nginx: the config is rewritten with a new `add_header X-Generation N`, then `nginx -s
    reload`; duration = command → `nginx -s reload` exits (it only signals the master), and
    command → the first probe response carrying generation N.
Memory: every 50 ms, RSS (and PSS) summed over the process tree: the site host and its workers
(backend included: a recycle starts a second backend) / the nginx proxy's master and workers
(its backend runs outside and is not counted). Extra memory = the highest sum during the
recycles − the median before them.

Part 2, OnDemand first-request latency, no load: the pool (start_mode OnDemand) is stopped
(`stop_pool`, until the worker is gone) and started again (`start_pool`, which starts no
worker); then the first request (new connection) is timed — it starts the worker and waits for
it — and then `5` warm requests, each on a new connection; repeated `--ondemand-runs` times.
Two workers: the nginx backend above, and Python's own `python3 -m http.server` through
`<httpPlatform>`.

Writes bench/results/recycle-latest.md (report) and bench/results/recycle-raw.json (all
figures: buckets, durations, memory samples).
"""

import argparse
import glob
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The backend nginx (bench/backend.sh), copied into each application folder.
BACKEND_SH = os.path.join(REPO, "bench", "backend.sh")

WEB_CONFIG = """<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <system.webServer>
    <handlers>
      <add name="httpPlatformHandler" path="*" verb="*" modules="httpPlatformHandler" resourceType="Unspecified" />
    </handlers>
    <httpPlatform processPath="{program}" arguments="{arguments}" startupTimeLimit="20" />
  </system.webServer>
</configuration>
"""

SITE_HCL = """application_pool {
  name       = "app"
  start_mode = "OnDemand"
}
application {
  path             = "app"
  application_pool = "app"
}
binding {
  type = "http"
  port = "http"
}
"""

NGINX_PROXY_CONF = """worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{
  worker_connections 4096;
}}
http {{
  access_log off;
  tcp_nodelay on;
  keepalive_requests 100000000;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  upstream backend {{
    server 127.0.0.1:{backend_port};
    keepalive 64;
    keepalive_requests 100000000;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
      add_header X-Generation {generation};
    }}
  }}
}}
"""

PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def median(values):
    return statistics.median(values) if values else float("nan")


def percentile(values, p):
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class Processes:
    """Everything started here, each in its own session; stopped group-wide on exit."""

    def __init__(self):
        self.groups = []

    def spawn(self, argv, **kwargs):
        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
        self.groups.append(proc)
        return proc

    def stop(self, proc, timeout=5.0):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if proc.poll() is None:
            proc.wait()
        if proc in self.groups:
            self.groups.remove(proc)

    def stop_all(self):
        for proc in list(reversed(self.groups)):
            self.stop(proc)


def get(port, path="/file.txt", timeout=10.0):
    """One GET on a new connection: (status, headers dict, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def wait_http(port, proc, limit=30.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server for port {port} exited ({proc.returncode})")
        try:
            status, _, _ = get(port, timeout=2.0)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing answers 200 on port {port}")


# --- process trees and memory ---


def children_map():
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def tree(root):
    children = children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def memory(pids):
    """(RSS bytes, PSS bytes, processes) summed over pids that still exist."""
    rss = pss = count = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                rss += int(f.read().split()[1]) * PAGE
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
                        break
            count += 1
        except (OSError, ValueError, IndexError):
            continue
    return rss, pss, count


class Sampler(threading.Thread):
    """Samples the memory of a process tree every `interval` seconds."""

    def __init__(self, root, interval=0.05):
        super().__init__(daemon=True)
        self.root = root
        self.interval = interval
        self.samples = []  # (monotonic, rss, pss, processes)
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            t = time.monotonic()
            rss, pss, count = memory(tree(self.root))
            self.samples.append((t, rss, pss, count))
            self.halt.wait(self.interval)


# --- our host ---


class Host:
    def __init__(self, procs, work, binary, server, name, program, arguments):
        self.dir = os.path.join(work, name)
        app = os.path.join(self.dir, "app")
        os.makedirs(app)
        os.makedirs(os.path.join(self.dir, "backends"))
        os.chmod(os.path.join(self.dir, "backends"), 0o1777)
        shutil.copy(os.path.join(work, "file.txt"), os.path.join(app, "file.txt"))
        shutil.copy(BACKEND_SH, os.path.join(app, "backend.sh"))
        with open(os.path.join(app, "web.config"), "w") as f:
            f.write(WEB_CONFIG.format(program=program, arguments=arguments))
        with open(os.path.join(self.dir, "site.hcl"), "w") as f:
            f.write(SITE_HCL)
        self.port = free_port()
        runtime = os.path.join(self.dir, "runtime")
        os.makedirs(runtime)
        self.proc = procs.spawn(
            server
            + [binary, "run", os.path.join(self.dir, "site.hcl"), "--port", f"http={self.port}",
               "--stdout", "/dev/null", "--runtime-dir", runtime],
            stdout=open(os.path.join(self.dir, "run.out"), "w"),
            stderr=open(os.path.join(self.dir, "run.err"), "w"),
        )
        deadline = time.monotonic() + 30
        self.socket = None
        while time.monotonic() < deadline and self.socket is None:
            found = glob.glob(os.path.join(runtime, "**", "control.sock"), recursive=True)
            if found:
                self.socket = found[0]
            elif self.proc.poll() is not None:
                with open(os.path.join(self.dir, "run.err")) as f:
                    raise RuntimeError(f"nomad_iis run exited: {f.read()}")
            else:
                time.sleep(0.05)
        if self.socket is None:
            raise RuntimeError("no control socket appeared")
        while True:
            try:
                self.pid = self.command({"command": "status"})["pid"]
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def command(self, command, timeout=120.0):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(self.socket)
            s.sendall(json.dumps(command).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        reply = json.loads(data)
        if reply.get("reply") != "ok":
            raise RuntimeError(f"host refused {command}: {reply}")
        return reply["status"]

    @staticmethod
    def workers(status):
        return [w for p in status["pools"] for w in p.get("workers", [])]


def nginx_proxy(procs, work, server, backend_port, workers):
    d = os.path.join(work, "nginx")
    os.makedirs(d)
    port = free_port()
    conf = os.path.join(d, "nginx.conf")

    def write(generation):
        text = NGINX_PROXY_CONF.format(workers=workers, dir=d, backend_port=backend_port,
                                       port=port, generation=generation)
        with open(conf + ".tmp", "w") as f:
            f.write(text)
        os.replace(conf + ".tmp", conf)

    write(0)
    proc = procs.spawn(server + ["nginx", "-e", f"{d}/error.log", "-p", d, "-c", conf,
                                 "-g", "daemon off;"],
                       stdout=subprocess.DEVNULL, stderr=open(f"{d}/out", "w"))
    wait_http(port, proc)
    reload_argv = ["nginx", "-e", f"{d}/error.log", "-p", d, "-c", conf, "-g", "daemon off;",
                   "-s", "reload"]
    return proc, port, write, reload_argv


# --- load ---


def run_wrk_plain(client, port, conns, seconds):
    out = subprocess.run(
        client + ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s",
                  f"http://127.0.0.1:{port}/file.txt"],
        capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise RuntimeError(f"no rate in wrk output:\n{out}")


class PacedLoad:
    """wrk with bench/paced.lua at `rate` req/s until stopped (SIGINT)."""

    def __init__(self, procs, client, port, conns, rate, work):
        self.origin = time.monotonic()
        self.out_path = os.path.join(work, f"wrk-{port}.out")
        self.stop_file = os.path.join(work, f"wrk-{port}.stop")
        self.proc = procs.spawn(
            client + ["wrk", "-t1", f"-c{conns}", "-d3600s", "--timeout", "5s", "-s",
                      os.path.join(REPO, "bench", "paced.lua"),
                      f"http://127.0.0.1:{port}/file.txt", "--", str(rate), repr(self.origin),
                      self.stop_file],
            stdout=open(self.out_path, "w"), stderr=subprocess.STDOUT)
        self.procs = procs

    def finish(self):
        # No new requests after the stop file appears; the outstanding ones get 6 s (more than
        # wrk's 5 s timeout) to be answered. Then wrk stops on SIGINT and prints its summary
        # (and our done()).
        with open(self.stop_file, "w"):
            pass
        time.sleep(6.5)
        os.kill(self.proc.pid, signal.SIGINT)
        self.proc.wait(30)
        self.procs.groups.remove(self.proc)
        buckets, errors, sent, text = {}, None, None, open(self.out_path).read()
        for line in text.splitlines():
            parts = line.split()
            if parts[:1] == ["bucket"]:
                buckets[int(parts[1])] = (int(parts[2]), int(parts[3]))
            elif parts[:1] == ["sent"]:
                sent = int(parts[1])
            elif parts[:1] == ["errors"]:
                errors = dict(zip(["connect", "read", "write", "status", "timeout", "requests"],
                                  map(int, parts[1:])))
        if errors is None or sent is None:
            raise RuntimeError(f"wrk printed no summary:\n{text}")
        errors["sent"] = sent
        return buckets, errors


def probe_until(port, check, limit=30.0):
    """GETs on new connections every 2 ms until check(headers) holds; monotonic time then."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            status, headers, _ = get(port, timeout=5.0)
            if status == 200 and check(headers):
                return time.monotonic()
        except OSError:
            pass
        time.sleep(0.002)
    raise RuntimeError("the new worker/generation never answered")


def recycle_phase(args, kind, port, load_rate, procs, client, work, tree_root, do_recycle):
    load = PacedLoad(procs, client, port, args.conns, load_rate, work)
    sampler = Sampler(tree_root)
    sampler.start()
    time.sleep(args.steady)
    steady_end = time.monotonic()
    events = []
    for i in range(1, args.recycles + 1):
        t_cmd = time.monotonic()
        t_answer, check = do_recycle(i)
        t_serve = probe_until(port, check)
        events.append((t_cmd, t_answer, t_serve))
        time.sleep(args.gap)
    recycles_end = time.monotonic()
    time.sleep(1.0)
    sampler.halt.set()
    sampler.join()
    buckets, errors = load.finish()
    origin = load.origin
    return {
        "kind": kind,
        "origin": origin,
        "steady_end": steady_end - origin,
        "recycles_end": recycles_end - origin,
        "events": [[a - origin, b - origin, c - origin] for a, b, c in events],
        "buckets": {str(k): v for k, v in sorted(buckets.items())},
        "errors": errors,
        "memory": [[t - origin, rss, pss, n] for t, rss, pss, n in sampler.samples],
    }


def analyse(run, rate):
    buckets = {int(k): v for k, v in run["buckets"].items()}
    failed_in_buckets = sum(v[1] for v in buckets.values())
    answered = sum(v[0] + v[1] for v in buckets.values())
    e = run["errors"]
    socket_errors = e["connect"] + e["read"] + e["write"] + e["timeout"]
    unanswered = e["sent"] - answered
    # Steady: whole buckets from 1 s after the start to the end of the steady phase.
    steady_end_bucket = int(run["steady_end"] * 10)
    steady = [buckets.get(b, (0, 0))[0] * 10 for b in range(10, steady_end_bucket)]
    # Around each recycle: the buckets from the command to 300 ms after the new worker served.
    mins, means, overall = [], [], []
    for t_cmd, _t_answer, t_serve in run["events"]:
        first, last = int(t_cmd * 10), int((t_serve + 0.3) * 10)
        window = [buckets.get(b, (0, 0))[0] * 10 for b in range(first, last + 1)]
        mins.append(min(window))
        means.append(statistics.mean(window))
        overall.extend(window)
    answers = [(a - c) * 1000 for c, a, _ in run["events"]]
    serves = [(s - c) * 1000 for c, _, s in run["events"]]
    mem = run["memory"]
    before = [m for m in mem if m[0] < run["steady_end"]]
    during = [m for m in mem if run["steady_end"] <= m[0] <= run["recycles_end"]]
    rss_before = median([m[1] for m in before])
    pss_before = median([m[2] for m in before])
    return {
        "rate": rate,
        "failed_responses": failed_in_buckets,
        "unanswered": unanswered,
        "answered": answered,
        "socket_errors": socket_errors,
        "errors": e,
        "requests": e["requests"],
        "steady_median": median(steady),
        "steady_min": min(steady) if steady else float("nan"),
        "window_min_median": median(mins),
        "window_min_lowest": min(mins) if mins else float("nan"),
        "window_mean_median": median(means),
        "answer_median": median(answers),
        "answer_p90": percentile(answers, 90),
        "serve_median": median(serves),
        "serve_p90": percentile(serves, 90),
        "rss_before": rss_before,
        "rss_max": max((m[1] for m in during), default=float("nan")),
        "pss_before": pss_before,
        "pss_max": max((m[2] for m in during), default=float("nan")),
        "processes_before": median([m[3] for m in before]),
        "processes_max": max((m[3] for m in during), default=0),
    }


def ondemand(host, runs, warm):
    first, warm_times = [], []
    for _ in range(runs):
        host.command({"command": "stop_pool", "pool": "app"})
        deadline = time.monotonic() + 30
        while True:
            status = host.command({"command": "status"})
            pool = status["pools"][0]
            if str(pool["state"]).lower() == "stopped" and not Host.workers(status):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the pool did not stop: {pool}")
            time.sleep(0.01)
        status = host.command({"command": "start_pool", "pool": "app"})
        if Host.workers(status):
            raise RuntimeError("start_pool of an OnDemand pool started a worker")
        t = time.perf_counter()
        code, _, _ = get(host.port)
        first.append((time.perf_counter() - t) * 1000)
        if code != 200:
            raise RuntimeError(f"first request answered {code}")
        for _ in range(warm):
            t = time.perf_counter()
            code, _, _ = get(host.port)
            warm_times.append((time.perf_counter() - t) * 1000)
            if code != 200:
                raise RuntimeError(f"warm request answered {code}")
    return first, warm_times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recycles", type=int, default=100)
    parser.add_argument("--steady", type=float, default=5.0)
    parser.add_argument("--gap", type=float, default=0.3)
    parser.add_argument("--conns", type=int, default=32)
    parser.add_argument("--load-fraction", type=float, default=0.5)
    parser.add_argument("--ondemand-runs", type=int, default=20)
    parser.add_argument("--server-cpus", default="0")
    parser.add_argument("--client-cpus", default="1")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--only", choices=["recycle", "ondemand"], default=None)
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    args = parser.parse_args()

    for tool, package in [("wrk", "wrk"), ("nginx", "nginx-light"), ("taskset", "util-linux")]:
        if shutil.which(tool) is None:
            sudo = [] if os.geteuid() == 0 else ["sudo"]
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            subprocess.run(sudo + ["apt-get", "update", "-q"], check=True, env=env)
            subprocess.run(sudo + ["apt-get", "install", "-y", "-q", package], check=True, env=env)
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "nomad_iis"], cwd=REPO,
                       check=True)
    binary = os.path.join(REPO, "target", "release", "nomad_iis")
    if not os.access(binary, os.X_OK):
        sys.exit(f"{binary} is missing; build it or drop --no-build")

    server, client = [], []
    if not args.no_pin:
        server = ["taskset", "-c", args.server_cpus]
        client = ["taskset", "-c", args.client_cpus]
        os.sched_setaffinity(0, {int(c) for c in args.client_cpus.split(",")})
    server_threads = len(os.sched_getaffinity(0)) if args.no_pin else len(
        args.server_cpus.split(","))

    command_line = "python3 bench/recycle.py " + " ".join(sys.argv[1:])
    load_before = open("/proc/loadavg").read().split()[:3]
    procs = Processes()
    work = tempfile.mkdtemp(prefix="nomad_iis-recycle.")
    os.chmod(work, 0o755)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raw = {"command": command_line}
    try:
        with open(os.path.join(work, "file.txt"), "w") as f:
            f.write(os.urandom(768).hex()[:1024])
        os.chmod(os.path.join(work, "file.txt"), 0o644)

        if args.only in (None, "recycle"):
            ours = Host(procs, work, binary, server, "o", "sh",
                        "backend.sh %HTTP_PLATFORM_PORT% --port-header")
            wait_http(ours.port, ours.proc)
            # The direct backend nginx proxies to (same script, its own folder).
            direct_dir = os.path.join(work, "direct")
            os.makedirs(os.path.join(direct_dir, "app"))
            os.makedirs(os.path.join(direct_dir, "backends"))
            shutil.copy(os.path.join(work, "file.txt"), os.path.join(direct_dir, "app"))
            shutil.copy(BACKEND_SH, os.path.join(direct_dir, "app", "backend.sh"))
            backend_port = free_port()
            direct = procs.spawn(server + ["sh", os.path.join(direct_dir, "app", "backend.sh"),
                                           str(backend_port), "--port-header"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_http(backend_port, direct)
            nginx, nginx_port, write_conf, reload_argv = nginx_proxy(
                procs, work, server, backend_port, server_threads)

            # Peak (no pacing), two runs each, the better one.
            for port in (ours.port, nginx_port):
                run_wrk_plain(client, port, args.conns, 2)
            peak_ours = max(run_wrk_plain(client, ours.port, args.conns, 5) for _ in range(2))
            peak_nginx = max(run_wrk_plain(client, nginx_port, args.conns, 5) for _ in range(2))
            rate = int(args.load_fraction * min(peak_ours, peak_nginx))
            print(f"peak req/s: ours {peak_ours:.0f}, nginx {peak_nginx:.0f}; load {rate} req/s",
                  file=sys.stderr)
            raw.update(peak_ours=peak_ours, peak_nginx=peak_nginx, rate=rate)

            def recycle_ours(_i):
                status = ours.command({"command": "recycle_pool", "pool": "app"})
                t = time.monotonic()
                ports = {str(w["port"]) for w in Host.workers(status)}
                if len(ports) != 1:
                    raise RuntimeError(f"after a recycle the workers are {ports}")
                new = ports.pop()
                return t, lambda h: h.get("x-backend-port") == new

            def recycle_nginx(i):
                write_conf(i)
                subprocess.run(client + reload_argv, check=True, stderr=subprocess.DEVNULL)
                t = time.monotonic()
                return t, lambda h: h.get("x-generation") == str(i)

            ours_pids_before = [w["pid"] for w in Host.workers(ours.command({"command": "status"}))]
            raw["ours"] = recycle_phase(args, "ours", ours.port, rate, procs, client, work,
                                        ours.pid, recycle_ours)
            status = ours.command({"command": "status"})
            raw["ours"]["recycles_counted"] = status["pools"][0]["recycles"]
            raw["ours"]["worker_pids"] = [ours_pids_before,
                                          [w["pid"] for w in Host.workers(status)]]
            raw["nginx"] = recycle_phase(args, "nginx", nginx_port, rate, procs, client, work,
                                         nginx.pid, recycle_nginx)
            for p in (ours.proc, nginx, direct):
                procs.stop(p)

        if args.only in (None, "ondemand"):
            raw["ondemand"] = {}
            for name, program, arguments in [
                ("nginx backend", "sh", "backend.sh %HTTP_PLATFORM_PORT% --port-header"),
                ("python3 -m http.server", "python3",
                 "-m http.server %HTTP_PLATFORM_PORT% --bind 127.0.0.1"),
            ]:
                host = Host(procs, work, binary, server, "d-" + program[:2], program,
                            arguments)
                wait_http(host.port, host.proc)
                first, warm = ondemand(host, args.ondemand_runs, 5)
                raw["ondemand"][name] = {"first_ms": first, "warm_ms": warm}
                procs.stop(host.proc)
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    load_after = open("/proc/loadavg").read().split()[:3]
    raw["load"] = [load_before, load_after]
    raw["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "recycle-raw.json"), "w") as f:
        json.dump(raw, f)
    report = render(raw, args, server_threads)
    with open(os.path.join(args.out, "recycle-latest.md"), "w") as f:
        f.write(report)
    print(report)


def render(raw, args, server_threads):
    mib = 1024 * 1024
    lines = [f"Command: `{raw['command']}`", ""]
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    nginx_version = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    lines.append(
        f"Machine: {os.cpu_count()} CPUs ({cpu}), {raw['date']}; {nginx_version}. "
        + ("Nothing pinned. " if args.no_pin else
           f"Proxies and backends on CPU {args.server_cpus} ({server_threads} nginx proxy "
           f"worker(s)), wrk -t1 and this script on CPU {args.client_cpus}. ")
        + f"Load average before / after: {' '.join(raw['load'][0])} / {' '.join(raw['load'][1])}.")
    lines.append("")
    if "ours" in raw:
        rate = raw["rate"]
        lines.append(
            f"Peak (wrk -c{args.conns}, unpaced, best of 2 × 5 s): ours {raw['peak_ours']:.0f} "
            f"req/s, nginx {raw['peak_nginx']:.0f} req/s. Load during the recycles: {rate} req/s "
            f"({args.load_fraction:g} × the lower peak) on {args.conns} kept-alive connections, "
            f"the same for both; {args.steady:g} s steady, then {args.recycles} recycles "
            f"{args.gap:g} s apart.")
        lines.append("")
        a = {k: analyse(raw[k], rate) for k in ("ours", "nginx")}
        lines.append("| measure | ours (recycle_pool) | nginx (`nginx -s reload`) |")
        lines.append("|--|--:|--:|")

        def row(label, fmt):
            lines.append(f"| {label} | {fmt(a['ours'])} | {fmt(a['nginx'])} |")

        row("requests sent / answered", lambda x: f"{x['errors']['sent']} / {x['answered']}")
        row("**failed requests** (non-2xx answers + sent and never answered)",
            lambda x: f"**{x['failed_responses'] + x['unanswered']}**")
        row("of which non-2xx / never answered",
            lambda x: f"{x['failed_responses']} / {x['unanswered']}")
        row("wrk socket errors connect / read / write / timeout",
            lambda x: f"{x['errors']['connect']} / {x['errors']['read']} / "
                      f"{x['errors']['write']} / {x['errors']['timeout']}")
        row("steady req/s (median of 100 ms buckets)", lambda x: f"{x['steady_median']:.0f}")
        row("around a recycle: lowest 100 ms bucket, median over recycles (req/s)",
            lambda x: f"{x['window_min_median']:.0f} ({x['window_min_median'] / x['steady_median']:.0%})")
        row("around a recycle: lowest bucket of all recycles (req/s)",
            lambda x: f"{x['window_min_lowest']:.0f} ({x['window_min_lowest'] / x['steady_median']:.0%})")
        row("around a recycle: mean req/s, median over recycles",
            lambda x: f"{x['window_mean_median']:.0f} ({x['window_mean_median'] / x['steady_median']:.0%})")
        row("command → answer, median / p90 (ms)",
            lambda x: f"{x['answer_median']:.1f} / {x['answer_p90']:.1f}")
        row("command → new worker / generation serves, median / p90 (ms)",
            lambda x: f"{x['serve_median']:.1f} / {x['serve_p90']:.1f}")
        row("RSS before → highest during recycles (MiB)",
            lambda x: f"{x['rss_before'] / mib:.1f} → {x['rss_max'] / mib:.1f} "
                      f"(+{(x['rss_max'] - x['rss_before']) / mib:.1f})")
        row("PSS before → highest during recycles (MiB)",
            lambda x: f"{x['pss_before'] / mib:.1f} → {x['pss_max'] / mib:.1f} "
                      f"(+{(x['pss_max'] - x['pss_before']) / mib:.1f})")
        row("processes before → most during",
            lambda x: f"{x['processes_before']:.0f} → {x['processes_max']}")
        lines.append("")
        o = raw["ours"]
        lines.append(
            f"Ours: the pool counted {o['recycles_counted']} recycles; worker pid before "
            f"{o['worker_pids'][0]}, after {o['worker_pids'][1]}. Memory: ours = the site host "
            "and its workers (a recycle runs a second backend for the overlap); nginx = the "
            "proxy's master and workers (its backend is not in the tree). A window = the 100 ms "
            "buckets from the command to 300 ms after the new worker/generation served.")
        lines.append("")
    if "ondemand" in raw:
        lines.append(
            f"OnDemand first request ({args.ondemand_runs} runs; pool stopped until its worker "
            "is gone, started, then GET on a new connection) vs warm requests (5 per run, each "
            "on a new connection):")
        lines.append("")
        lines.append("| worker | first request median / p90 (ms) | warm median (ms) | ratio |")
        lines.append("|--|--:|--:|--:|")
        for name, v in raw["ondemand"].items():
            f_med, w_med = median(v["first_ms"]), median(v["warm_ms"])
            lines.append(f"| {name} | {f_med:.1f} / {percentile(v['first_ms'], 90):.1f} | "
                         f"{w_med:.2f} | {f_med / w_med:.0f}× |")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
