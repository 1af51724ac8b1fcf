#!/usr/bin/env bash
# Benchmark of screenshots and process dumps (crates/capture): screenshot latency with a cold browser
# (launch included) and a warm one, and the time and size of a full (gcore) and a mini dump of a
# python3 process holding ~200 MB. Needs the Debian packages chromium, gdb and python3 (see
# scripts/test.sh). Prints a markdown table of medians.
#
#   bench/capture.sh [rounds]     (default 7)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p nomad-iis-capture --example capture_bench
exec target/release/examples/capture_bench "${1:-7}"
