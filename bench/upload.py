#!/usr/bin/env python3
"""Management API upload of a ~50 MB zip against `unzip` of the same file, median of N rounds.

    upload.py [--rounds N] [--binary PATH] [--work DIR] [--size-mb 50]

Builds an application archive of about --size-mb MB (incompressible files of 256 KiB plus
small text files, as a published web app has), starts `nomad_iis run` on a one-application
site with the Management API on a free port and an API key from the environment, then each
round:
  - upload: `curl -T app.zip` to PUT /api/v1/allocs/{alloc}/upload, timed until the response:
    the body streamed to disk, validated, extracted into the staging folder, the pool stopped,
    the folders swapped, the pool started;
  - unzip: `unzip -q app.zip -d FRESH_DIR`, timed the same way, on the same disk.
Both read the archive from the page cache (it is read once before the first round).

Prints one markdown table row per measure with the median, minimum and maximum in ms.
Everything it starts is killed (group-wide) on exit; its work folder is removed.
"""

import argparse
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_archive(path, size_mb):
    rng = random.Random(7)
    target = size_mb * 1_000_000
    written = 0
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        index = 0
        while written < target:
            blob = rng.randbytes(256 * 1024)
            zf.writestr(f"bin/lib{index:04}.dll", blob)
            text = ("<p>line %d of a page</p>\n" % index) * 200
            zf.writestr(f"wwwroot/page{index:04}.html", text)
            written += len(blob)
            index += 1
        zf.writestr("index.html", "<h1>uploaded</h1>")
    return os.path.getsize(path)


def timed(cmd, **kwargs):
    start = time.perf_counter()
    subprocess.run(cmd, check=True, **kwargs)
    return (time.perf_counter() - start) * 1000


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--binary", default="target/release/nomad_iis")
    parser.add_argument("--work", default=None)
    parser.add_argument("--size-mb", type=int, default=50)
    args = parser.parse_args()
    for tool in ("curl", "unzip"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed (apt-get install {tool})")
    work = tempfile.mkdtemp(prefix="upload-bench-", dir=args.work)
    run = None
    try:
        archive = os.path.join(work, "app.zip")
        size = make_archive(archive, args.size_mb)
        with open(archive, "rb") as f:
            while f.read(1 << 20):
                pass
        site = os.path.join(work, "site")
        os.makedirs(site)
        with open(os.path.join(site, "index.html"), "w") as f:
            f.write("<h1>before</h1>")
        config = os.path.join(work, "site.hcl")
        with open(config, "w") as f:
            f.write('application { path = "site" }\nbinding {\n  type = "http"\n  port = "http"\n}\n')
        api_port = free_port()
        env = dict(os.environ, BENCH_API_KEY="bench-key")
        run = subprocess.Popen(
            [args.binary, "run", config, "--runtime-dir", os.path.join(work, "rt"),
             "--stdout", "/dev/null", f"--management-api-port={api_port}",
             "--management-api-key-env=BENCH_API_KEY"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
            start_new_session=True)
        alloc = None
        for line in run.stdout:
            if line.strip().startswith("alloc "):
                alloc = line.split()[1]
            if line.startswith("Press Ctrl-C"):
                break
        if alloc is None:
            sys.exit("nomad_iis run printed no alloc line")
        url = f"http://127.0.0.1:{api_port}/api/v1/allocs/{alloc}/upload"
        uploads, unzips = [], []
        for round_ in range(args.rounds):
            uploads.append(timed(
                ["curl", "-sS", "--fail", "-o", "/dev/null", "-T", archive,
                 "-H", "X-Api-Key: bench-key", "-H", "Content-Type: application/zip", url]))
            dest = os.path.join(work, f"unzip-{round_}")
            unzips.append(timed(["unzip", "-q", archive, "-d", dest]))
            shutil.rmtree(dest)
        print(f"archive: {size / 1e6:.1f} MB, {args.rounds} rounds\n")
        print("| measure | median ms | min ms | max ms |")
        print("|---|--:|--:|--:|")
        for name, values in (("Management API upload (curl -T)", uploads), ("unzip -q", unzips)):
            print(f"| {name} | {statistics.median(values):.0f} | {min(values):.0f} | {max(values):.0f} |")
        print(f"\nratio upload / unzip (medians): {statistics.median(uploads) / statistics.median(unzips):.2f}x")
    finally:
        if run is not None:
            try:
                os.killpg(run.pid, signal.SIGINT)
                run.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(run.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
