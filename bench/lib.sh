# Shared set-up of bench/run.sh and bench/proxy.sh (sourced, not run). Expects `repo`, `build`,
# `pin`, `niceness`, `server_cpus` and `client_cpus` to be set; installs the load tools on a fresh
# Debian machine, builds the release binary unless told not to, and sets `bin` and the command
# prefixes `on_server` / `on_client` (niceness, and CPU pinning with `pin=1`).

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v python3 >/dev/null || need+=(python3)
command -v curl >/dev/null || need+=(curl)
command -v taskset >/dev/null || need+=(util-linux)
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi
if [ "$build" = 1 ]; then
  cargo build --release -q -p nomad_iis
fi
bin=$repo/target/release/nomad_iis
[ -x "$bin" ] || { echo "$bin is missing; build it or drop --no-build" >&2; exit 1; }

on_server=(nice -n "$niceness")
on_client=(nice -n "$niceness")
if [ "$pin" = 1 ]; then
  on_server+=(taskset -c "$server_cpus")
  on_client+=(taskset -c "$client_cpus")
fi
