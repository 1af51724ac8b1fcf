#!/usr/bin/env python3
"""Start-up time of a site: from starting it to its first 200 response, median of N rounds.

    startup.py [--rounds N] [--binary PATH] [--work DIR] standalone
    startup.py [--rounds N] [--binary PATH] [--work DIR] host
    startup.py [--rounds N] [--work DIR] command -- CMD [ARG...]

standalone: spawns `nomad_iis run CONFIG --port http=PORT --stdout /dev/null --runtime-dir DIR`
    for a one-application site (a 1 KiB file) and times from the spawn to the first 200 for
    /file.txt. This covers reading the job file, planning, writing the spec, spawning the site host,
    its start-up (spec, log writers, pools, bind, control socket) and the first request.

host: what the driver's StartTask does after decoding the task config: writes the site host's
    spec.json (taken once from a standalone run, with a fresh port and runtime folder each round)
    and spawns `nomad_iis host --runtime-dir DIR`; times from that spawn to the first 200. This
    leaves out only the driver's own decoding and the gRPC round trip.

command: the same for any command that starts the site. In its arguments `{port}` is replaced by a
    free port and `{site}` by a folder holding file.txt; it must serve http://127.0.0.1:{port}/file.txt
    and stop (all of it) on SIGINT. Time 0 is its spawn, unless it prints a line
    `start_task_ns=<nanoseconds since the Unix epoch>` on stdout: then time 0 is that moment. This
    is how the plugin path is measured: a client that plays the Nomad client (launches `nomad_iis`
    with the go-plugin cookie, SetConfig, then StartTask) prints the time it sends StartTask.

Prints one markdown paragraph with the median, minimum and maximum in milliseconds. Every process
started runs in its own session and is killed (group-wide) before the next round and on any exit.
"""

import argparse
import glob
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

POLL_INTERVAL_S = 0.0005
CONFIG = """application {
  path = "site"
}
binding {
  type = "http"
  port = "http"
}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers_200(port):
    """Whether GET /file.txt on 127.0.0.1:port answers 200 now (False while nothing listens)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET /file.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            head = b""
            while b"\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    return False
                head += chunk
            return head.startswith(b"HTTP/1.1 200 ")
    except OSError:
        return False


def stop(process):
    """SIGINT to the command, then TERM and KILL to its whole process group."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    if process.poll() is None:
        process.wait()


def one_round(argv, port, timeout_s):
    """Milliseconds from time 0 to the first 200."""
    marks = []
    started_ns = time.time_ns()
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        text=True,
    )

    def read_marks():
        for line in process.stdout:
            if line.startswith("start_task_ns="):
                marks.append(int(line.split("=", 1)[1]))

    reader = threading.Thread(target=read_marks, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not answers_200(port):
            if process.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited with {process.returncode} before answering")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no 200 within {timeout_s} s")
            time.sleep(POLL_INTERVAL_S)
        answered_ns = time.time_ns()
    finally:
        stop(process)
        reader.join(timeout=5)
    zero = marks[0] if marks else started_ns
    return (answered_ns - zero) / 1e6


def host_spec(binary, config, runtime, timeout_s):
    """The spec.json `nomad_iis run` writes for the config, taken from one run."""
    port = free_port()
    process = subprocess.Popen(
        [binary, "run", config, "--port", f"http={port}", "--stdout", "/dev/null",
         "--runtime-dir", runtime],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while not answers_200(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("nomad_iis run did not start the site for its spec")
            time.sleep(0.01)
        paths = glob.glob(os.path.join(runtime, f"nomad_iis-run-{process.pid}", "*", "spec.json"))
        if not paths:
            raise RuntimeError("nomad_iis run wrote no spec.json")
        with open(paths[0]) as f:
            return json.load(f)
    finally:
        stop(process)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--binary", default="target/release/nomad_iis")
    parser.add_argument("--work", help="folder for the site and runtime folders (default: a temp folder)")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("mode", choices=["standalone", "host", "command"])
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()

    own_work = args.work is None
    work = args.work or tempfile.mkdtemp(prefix="nomad_iis-startup.")
    try:
        site = os.path.join(work, "site")
        runtime = os.path.join(work, "runtime")
        os.makedirs(site, exist_ok=True)
        os.makedirs(runtime, exist_ok=True)
        with open(os.path.join(site, "file.txt"), "wb") as f:
            f.write(b"x" * 1024)
        config = os.path.join(work, "site.hcl")
        with open(config, "w") as f:
            f.write(CONFIG)

        binary = os.path.abspath(args.binary)
        spec = host_spec(binary, config, runtime, args.timeout) if args.mode == "host" else None
        samples = []
        for round_number in range(args.rounds):
            port = free_port()
            if args.mode == "host":
                folder = os.path.join(runtime, f"host-{round_number}")
                os.makedirs(folder)
                spec["runtime_dir"] = folder
                for binding in spec["bindings"]:
                    binding["port"] = port
                with open(os.path.join(folder, "spec.json"), "w") as f:
                    json.dump(spec, f)
                argv = [binary, "host", "--runtime-dir", folder]
                what = "spawn of `nomad_iis host` with its spec.json written (what StartTask does) → first 200"
            elif args.mode == "standalone":
                argv = [binary, "run", config, "--port", f"http={port}",
                        "--stdout", "/dev/null", "--runtime-dir", runtime]
                what = "spawn of `nomad_iis run` (standalone) → first 200"
            else:
                command = [a for a in args.command if a != "--"]
                if not command:
                    parser.error("command mode needs a command after --")
                argv = [a.replace("{port}", str(port)).replace("{site}", site) for a in command]
                what = f"`{' '.join(command)}` → first 200"
            samples.append(one_round(argv, port, args.timeout))

        samples.sort()
        print(
            f"Start-up, {what}, {len(samples)} rounds: median **{statistics.median(samples):.1f} ms** "
            f"(min {samples[0]:.1f}, max {samples[-1]:.1f}); polled every {POLL_INTERVAL_S * 1000:.1f} ms "
            f"with a fresh connection."
        )
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    # A SIGTERM unwinds like an exception, so the `finally` blocks stop what was started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        main()
    except RuntimeError as e:
        print(f"startup.py: {e}", file=sys.stderr)
        sys.exit(1)
