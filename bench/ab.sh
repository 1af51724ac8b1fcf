#!/usr/bin/env bash
# A/B comparison of nomad_iis builds on the run.sh workload (1 KiB file, wrk -t1, loopback), for
# judging a change to the host: the builds are measured in alternation, round after round, and
# the medians printed. Pinning as in run.sh (servers on --server-cpus, wrk on --client-cpus).
#
#   bench/ab.sh [-d S] [-r N] [-c CONNS] [--log off|on] NAME=BINARY NAME=BINARY...
#
# A NAME=nginx contender is nginx configured as in run.sh (access log to a file with --log on).
#
# e.g. cp target/release/nomad_iis /tmp/before; (change, build); bench/ab.sh before=/tmp/before after=target/release/nomad_iis
set -euo pipefail
cd "$(dirname "$0")/.."

duration=5
rounds=5
conns=32
logmode=off
server_cpus=0
client_cpus=1
builds=()
while [ $# -gt 0 ]; do
  case $1 in
    -d) duration=$2; shift 2 ;;
    -r) rounds=$2; shift 2 ;;
    -c) conns=$2; shift 2 ;;
    --log) logmode=$2; shift 2 ;;
    --server-cpus) server_cpus=$2; shift 2 ;;
    --client-cpus) client_cpus=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *=*) builds+=("$1"); shift ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ "${#builds[@]}" -ge 1 ] || { echo "name at least one NAME=BINARY" >&2; exit 2; }

work=$(mktemp -d /tmp/nomad_iis-ab.XXXXXX)
chmod 755 "$work"
groups=()
cleanup() {
  local g
  for g in "${groups[@]}"; do kill -INT "$g" 2>/dev/null || true; done
  sleep 0.5
  for g in "${groups[@]}"; do kill -KILL -- "-$g" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$work/site" "$work/runtime"
head -c 768 /dev/urandom | base64 -w 0 | head -c 1024 > "$work/site/file.txt"
printf 'application {\n  path = "site"\n}\nbinding {\n  type = "http"\n  port = "http"\n}\n' > "$work/site.hcl"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { # utime + stime of the given pids
  local total=0 p
  for p in "$@"; do total=$(( total + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}') )); done
  echo "$total"
}

names=()
declare -A url host
for build in "${builds[@]}"; do
  name=${build%%=*}
  names+=("$name")
  port=$(free_port)
  url[$name]=http://127.0.0.1:$port/file.txt
  if [ "${build#*=}" = nginx ]; then
    mkdir -p "$work/$name"
    log="access_log off;"
    [ "$logmode" = on ] && log="access_log $work/$name/access.log combined;"
    cat > "$work/$name/nginx.conf" <<CONF
worker_processes $(taskset -c "$server_cpus" nproc);
pid $work/$name/nginx.pid;
events { worker_connections 4096; }
http {
  types { text/plain txt; }
  sendfile on; tcp_nopush on; tcp_nodelay on; keepalive_requests 100000000;
  open_file_cache max=1000 inactive=60s; open_file_cache_valid 60s;
  charset utf-8; charset_types text/plain;
  client_body_temp_path $work/$name/body;
  $log
  server { listen 127.0.0.1:$port; root $work/site; }
}
CONF
    setsid taskset -c "$server_cpus" nginx -e "$work/$name/error.log" -p "$work/$name" -c "$work/$name/nginx.conf" -g 'daemon off;' &
    master=$!
    groups+=("$master")
    for _ in $(seq 1 200); do curl -fsS -o /dev/null "${url[$name]}" 2>/dev/null && break; sleep 0.05; done
    host[$name]=$(pgrep -P "$master")
    taskset -c "$client_cpus" wrk -t1 -c32 -d2s "${url[$name]}" > /dev/null
    continue
  fi
  binary=$(realpath "${build#*=}")
  stdout=/dev/null
  if [ "$logmode" = on ]; then
    stdout=$work/$name.fifo
    mkfifo "$stdout"
    setsid taskset -c "$client_cpus" sh -c 'exec cat "$1" > /dev/null' reader "$stdout" &
    groups+=($!)
  fi
  setsid taskset -c "$server_cpus" "$binary" run "$work/site.hcl" --port "http=$port" --stdout "$stdout" \
    --runtime-dir "$work/runtime" > /dev/null 2> "$work/$name.err" &
  run=$!
  groups+=("$run")
  for _ in $(seq 1 200); do curl -fsS -o /dev/null "${url[$name]}" 2>/dev/null && break; sleep 0.05; done
  host[$name]=$(pgrep -P "$run")
  taskset -c "$client_cpus" wrk -t1 -c32 -d2s "${url[$name]}" > /dev/null
done

for round in $(seq 1 "$rounds"); do
  # Rotate the order every round.
  order=("${names[@]:$(( round % ${#names[@]} ))}" "${names[@]:0:$(( round % ${#names[@]} ))}")
  for name in "${order[@]}"; do
    # shellcheck disable=SC2086
    before=$(cpu_ticks ${host[$name]})
    out=$(taskset -c "$client_cpus" wrk -t1 -c"$conns" -d"${duration}s" --latency "${url[$name]}")
    # shellcheck disable=SC2086
    after=$(cpu_ticks ${host[$name]})
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    per_cpu=$(awk -v r="$requests" -v t=$(( after - before )) -v hz="$(getconf CLK_TCK)" 'BEGIN {print (t > 0) ? r * hz / t : 0}')
    echo "$name $rps $p99 $per_cpu" | tee -a "$work/results" >&2
  done
done

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "wrk -t1 -c$conns ${duration}s × $rounds rounds, log $logmode; medians"
for name in "${names[@]}"; do
  rps=$(awk -v n="$name" '$1==n {print $2}' "$work/results" | median)
  per_cpu=$(awk -v n="$name" '$1==n {print $4}' "$work/results" | median)
  printf '%-12s %10.0f req/s %10.0f req/CPU-s   p99: %s\n' "$name" "$rps" "$per_cpu" \
    "$(awk -v n="$name" '$1==n {printf "%s ", $3}' "$work/results")"
done
