#!/usr/bin/env bash
# Runs every test of the workspace. On a fresh Debian 12 machine it first installs what the tests
# need: Go with go-cty and hcl (the golden cty-msgpack bytes come from the real encoder), openssl
# (PFX files made by OpenSSL 3), chromium (screenshots), gdb (gcore full dumps), python3 (dump test
# targets), and nginx + wrk only when the benchmark is run (see bench/).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(golang-go golang-github-zclconf-go-cty-dev golang-github-hashicorp-hcl-v2-dev openssl chromium gdb python3)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" apt-get update -q
  "${sudo[@]}" apt-get install -y -q "${missing[@]}"
fi

cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast -- --test-threads=2
