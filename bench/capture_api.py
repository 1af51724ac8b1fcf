#!/usr/bin/env python3
"""Screenshots and process dumps through the Management API, end to end, median of N rounds.

    capture_api.py [--rounds N] [--binary PATH] [--ballast-mb 200]

Starts `nomad_iis run` on a one-application site whose worker is python3 (http.server behind
<httpPlatform>) holding --ballast-mb MB of touched memory, with the Management API on a free port,
and measures with curl, each request timed until the last byte:
  - screenshot, cold: the first screenshot of a fresh `nomad_iis run` (Chromium is launched by
    it), one run per round; next to it `chromium --headless --screenshot` of the same page, the
    one-shot command a script would use (a browser launched per shot);
  - screenshot, warm: further screenshots on the same run (the browser is reused);
  - procdump ?type=full (gcore's ELF core) and ?type=mini of the worker, with their sizes; next
    to the full dump, `gcore -o FILE PID` run directly on the same worker.
The worker's RSS is read from /proc before the dumps.

Prints markdown tables of medians (and min/max). Everything it starts is killed (group-wide) on
exit; its work folder is removed.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

KEY = "bench-key"

PAGE = """<!doctype html><html><head><title>bench</title></head>
<body style="font-family:sans-serif;background:#f4f4f4"><h1>Capture benchmark</h1>
<p>A paragraph of text to lay out and paint.</p>
<div style="height:2400px;background:linear-gradient(#fff,#39c)"></div></body></html>
"""

WEB_CONFIG = """<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <system.webServer>
    <handlers>
      <add name="httpPlatformHandler" path="*" verb="*" modules="httpPlatformHandler" resourceType="Unspecified" />
    </handlers>
    <httpPlatform processPath="python3"
                  arguments="-c &quot;import sys, http.server; ballast = bytes(range(256)) * ({mb} * 4096); http.server.test(HandlerClass=http.server.SimpleHTTPRequestHandler, port=int(sys.argv[1]), bind='127.0.0.1')&quot; %HTTP_PLATFORM_PORT%"
                  startupTimeLimit="60" />
  </system.webServer>
</configuration>
"""


def free_port():
    # The API port is handed to `nomad_iis run`, which binds it at once.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(cmd):
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1000


class Run:
    """One `nomad_iis run` of the site, with the API."""

    def __init__(self, binary, work, config):
        self.api_port = free_port()
        env = dict(os.environ, BENCH_API_KEY=KEY, TMPDIR=work)
        self.proc = subprocess.Popen(
            [binary, "run", config, "--runtime-dir", os.path.join(work, "rt"),
             "--stdout", "/dev/null", f"--management-api-port={self.api_port}",
             "--management-api-key-env=BENCH_API_KEY", "--procdump-accept-eula=true"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
            start_new_session=True)
        self.alloc = None
        self.site = None
        for line in self.proc.stdout:
            words = line.split()
            if line.strip().startswith("alloc "):
                self.alloc = words[1]
            if "http://" in line and self.site is None and "Management API" not in line:
                self.site = next(w for w in words if w.startswith("http://"))
            if line.startswith("Press Ctrl-C"):
                break
        if self.alloc is None or self.site is None:
            self.stop()
            sys.exit("nomad_iis run printed no alloc or site line")
        self.api = f"http://127.0.0.1:{self.api_port}/api/v1/allocs/{self.alloc}"

    def get(self, route, out):
        return timed(["curl", "-sS", "--fail", "-o", out, "-H", f"X-Api-Key: {KEY}",
                      f"{self.api}/{route}"])

    def worker_pid(self):
        out = subprocess.run(
            ["curl", "-sS", "--fail", "-H", f"X-Api-Key: {KEY}", f"{self.api}/site/status"],
            check=True, capture_output=True, text=True).stdout
        pids = json.loads(out)["applicationPools"][0]["workerPids"]
        return pids[0] if pids else None

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
            self.proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def row(name, values, unit="ms"):
    return (f"| {name} | **{statistics.median(values):.0f} {unit}** | "
            f"{min(values):.0f} | {max(values):.0f} |")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--binary", default="target/release/nomad_iis")
    parser.add_argument("--ballast-mb", type=int, default=200)
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    for tool, found in (("curl", shutil.which("curl")), ("chromium", chromium),
                        ("gcore (gdb)", shutil.which("gcore"))):
        if found is None:
            sys.exit(f"{tool} is needed (see scripts/test.sh)")
    work = tempfile.mkdtemp(prefix="capture-api-bench-")
    runs = []
    try:
        site = os.path.join(work, "site")
        os.makedirs(site)
        with open(os.path.join(site, "index.html"), "w") as f:
            f.write(PAGE)
        with open(os.path.join(site, "web.config"), "w") as f:
            f.write(WEB_CONFIG.format(mb=args.ballast_mb))
        config = os.path.join(work, "site.hcl")
        with open(config, "w") as f:
            f.write('application { path = "site" }\nbinding {\n  type = "http"\n  port = "http"\n}\n')
        png = os.path.join(work, "shot.png")

        cold, oneshot = [], []
        for _ in range(args.rounds):
            run = Run(args.binary, work, config)
            runs.append(run)
            # Start the worker first, so the cold figure is the browser's, not python's.
            subprocess.run(["curl", "-sS", "--fail", "-o", "/dev/null", run.site], check=True)
            cold.append(run.get("screenshot", png))
            profile = tempfile.mkdtemp(dir=work)
            oneshot.append(timed(
                [chromium, "--headless", "--no-sandbox", "--disable-gpu",
                 f"--user-data-dir={profile}", "--window-size=1920,1080", "--hide-scrollbars",
                 f"--screenshot={png}", run.site]))
            shutil.rmtree(profile, ignore_errors=True)
            run.stop()
            runs.remove(run)

        run = Run(args.binary, work, config)
        runs.append(run)
        subprocess.run(["curl", "-sS", "--fail", "-o", "/dev/null", run.site], check=True)
        run.get("screenshot", png)
        warm = [run.get("screenshot", png) for _ in range(args.rounds)]

        pid = run.worker_pid()
        rss = rss_mb(pid)
        dump = os.path.join(work, "dump.dmp")
        full, full_size, mini, mini_size, direct = [], [], [], [], []
        for _ in range(args.rounds):
            full.append(run.get("procdump?type=full", dump))
            full_size.append(os.path.getsize(dump) / 1e6)
            os.remove(dump)
            mini.append(run.get("procdump?type=mini", dump))
            mini_size.append(os.path.getsize(dump) / 1e6)
            os.remove(dump)
            prefix = os.path.join(work, "direct")
            direct.append(timed(["gcore", "-o", prefix, str(pid)]))
            os.remove(f"{prefix}.{pid}")

        print(f"{args.rounds} rounds; worker python3 pid {pid}, VmRSS {rss:.0f} MB\n")
        print("| measure | median | min | max |")
        print("|---|--:|--:|--:|")
        print(row("screenshot, cold (API, browser launched)", cold))
        print(row("`chromium --headless --screenshot`, one shot", oneshot))
        print(row("screenshot, warm (API, browser reused)", warm))
        print(row("procdump ?type=full (API, streamed)", full))
        print(row("`gcore` directly, to a file", direct))
        print(row("procdump ?type=mini (API, streamed)", mini))
        print(row("full dump size", full_size, "MB"))
        print(f"| mini dump size | **{statistics.median(mini_size) * 1000:.0f} kB** | "
              f"{min(mini_size) * 1000:.0f} | {max(mini_size) * 1000:.0f} |")
        print(f"\nratios of medians: cold/warm {statistics.median(cold) / statistics.median(warm):.1f}x, "
              f"cold API / one-shot chromium {statistics.median(cold) / statistics.median(oneshot):.2f}x, "
              f"full API / gcore {statistics.median(full) / statistics.median(direct):.2f}x, "
              f"full / mini time {statistics.median(full) / statistics.median(mini):.1f}x")
    finally:
        for run in runs:
            run.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
