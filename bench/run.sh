#!/usr/bin/env bash
# Benchmark: a 1 KiB static file served by nomad_iis's site host and by nginx, side by side in
# one run, with wrk on loopback. Prints a markdown table of medians and ratios.
#
#   bench/run.sh [DURATION_SECONDS] [ROUNDS]     (defaults: 10 s, 3 rounds)
#
# Fairness: nginx gets sendfile, tcp_nodelay, open_file_cache and as many worker processes as the
# site host has worker threads (one per core). Each scenario is measured for both servers in
# alternation, ROUNDS times, and the median is reported. Server CPU is read from /proc
# (utime + stime of the host, or of nginx's master and workers) around each wrk run.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10}
rounds=${2:-3}

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
if [ "${#need[@]}" -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi
cargo build --release -q -p nomad_iis
bin=$PWD/target/release/nomad_iis
cores=$(nproc)

work=$(mktemp -d /tmp/nomad_iis-bench.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/site"
head -c 768 /dev/urandom | base64 -w 0 | head -c 1024 > "$work/site/file.txt"
[ "$(stat -c %s "$work/site/file.txt")" = 1024 ]

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cpu_ticks() { # sum of utime+stime (clock ticks) of the given pids
  local total=0 p
  for p in "$@"; do
    if [ -r "/proc/$p/stat" ]; then
      total=$(( total + $(awk '{print $14 + $15}' "/proc/$p/stat") ))
    fi
  done
  echo "$total"
}

wait_http() { # url
  for _ in $(seq 1 200); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "server at $1 did not answer" >&2; return 1
}

# --- our site host, through the standalone mode (the same host the driver starts) ---
start_ours() { # logmode: off|on
  local port; port=$(free_port)
  cat > "$work/site.hcl" <<HCL
application {
  path = "site"
}
binding {
  type = "http"
  port = "http"
}
HCL
  if [ "$1" = off ]; then
    "$bin" run "$work/site.hcl" --port "http=$port" --stdout /dev/null --runtime-dir "$work" > "$work/ours.out" 2> "$work/ours.err" &
  else
    # The access log goes to a FIFO that a reader drains, as Nomad's logmon does.
    rm -f "$work/stdout.fifo"; mkfifo "$work/stdout.fifo"
    cat "$work/stdout.fifo" > /dev/null &
    pids+=($!)
    "$bin" run "$work/site.hcl" --port "http=$port" --stdout "$work/stdout.fifo" --runtime-dir "$work" > "$work/ours.out" 2> "$work/ours.err" &
  fi
  ours_run=$!
  pids+=("$ours_run")
  wait_http "http://127.0.0.1:$port/file.txt"
  ours_port=$port
  ours_pids=$(pgrep -P "$ours_run" | tr '\n' ' ')
}
stop_ours() { kill -INT "$ours_run"; wait "$ours_run" 2>/dev/null || true; }

start_nginx() { # logmode: off|on
  local port; port=$(free_port)
  local log="access_log off;"
  [ "$1" = on ] && log="access_log $work/nginx-access.log;"
  cat > "$work/nginx.conf" <<CONF
user root;
worker_processes $cores;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  include /etc/nginx/mime.types;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 1000000;
  open_file_cache max=1000 inactive=60s;
  open_file_cache_valid 60s;
  $log
  server {
    listen 127.0.0.1:$port;
    root $work/site;
  }
}
CONF
  nginx -c "$work/nginx.conf" -g 'daemon off;' &
  nginx_master=$!
  pids+=("$nginx_master")
  wait_http "http://127.0.0.1:$port/file.txt"
  nginx_port=$port
  nginx_pids="$nginx_master $(pgrep -P "$nginx_master" | tr '\n' ' ')"
}
stop_nginx() { kill -QUIT "$nginx_master"; wait "$nginx_master" 2>/dev/null || true; }

# run_wrk URL CONNS PIDS... → prints "req_per_s p99_ms cpu_seconds"
run_wrk() {
  local url=$1 conns=$2; shift 2
  local before after out rps p99
  before=$(cpu_ticks "$@")
  out=$(wrk -t1 -c"$conns" -d"${duration}s" --latency "$url")
  after=$(cpu_ticks "$@")
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
  echo "$rps $p99 $(awk -v t=$(( after - before )) -v hz="$(getconf CLK_TCK)" 'BEGIN {print t/hz}')"
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

results="$work/results.txt"
: > "$results"
for logmode in off on; do
  start_ours "$logmode"
  start_nginx "$logmode"
  for conns in 1 32; do
    for round in $(seq 1 "$rounds"); do
      # shellcheck disable=SC2086
      echo "ours $logmode $conns $(run_wrk "http://127.0.0.1:$ours_port/file.txt" "$conns" $ours_pids)" >> "$results"
      # shellcheck disable=SC2086
      echo "nginx $logmode $conns $(run_wrk "http://127.0.0.1:$nginx_port/file.txt" "$conns" $nginx_pids)" >> "$results"
    done
  done
  # Idle RSS of the host (first scenario only).
  if [ "$logmode" = off ]; then
    idle_rss_kb=$(for p in $ours_pids; do awk '/^VmRSS/ {print $2}' "/proc/$p/status"; done | head -1)
  fi
  stop_ours
  stop_nginx
done

echo
echo "wrk -t1, ${duration}s per run, ${rounds} rounds, medians; $(nproc) cores; $(date -u +%Y-%m-%d)"
echo
echo "| access log | conns | ours req/s | nginx req/s | req/s ratio | ours p99 ms | nginx p99 ms | ours req/CPU-s | nginx req/CPU-s | req/CPU-s ratio |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for logmode in off on; do
  for conns in 1 32; do
    col() { awk -v s="$1" -v l="$logmode" -v c="$conns" -v f="$2" '$1==s && $2==l && $3==c {print $f}' "$results" | median; }
    eff() { awk -v s="$1" -v l="$logmode" -v c="$conns" '$1==s && $2==l && $3==c && $6>0 {print $4*'"$duration"'/$6}' "$results" | median; }
    o_rps=$(col ours 4); n_rps=$(col nginx 4); o_p99=$(col ours 5); n_p99=$(col nginx 5)
    o_eff=$(eff ours); n_eff=$(eff nginx)
    printf '| %s | %s | %.0f | %.0f | %.2f× | %.2f | %.2f | %.0f | %.0f | %.2f× |\n' "$logmode" "$conns" \
      "$o_rps" "$n_rps" "$(awk -v a="$o_rps" -v b="$n_rps" 'BEGIN{print a/b}')" "$o_p99" "$n_p99" \
      "$o_eff" "$n_eff" "$(awk -v a="$o_eff" -v b="$n_eff" 'BEGIN{print (b>0)?a/b:0}')"
  done
done
echo
echo "site host idle RSS: ${idle_rss_kb:-?} KiB"
