#!/usr/bin/env bash
# Benchmark: the site host as a reverse proxy to a worker process, versus nginx as a reverse proxy
# to the same backend, with wrk on loopback. Prints a markdown report (also written to
# bench/results/proxy-latest.md) and keeps the raw figures (bench/results/proxy-raw.txt).
#
#   bench/proxy.sh [options]
#     -d, --duration S       seconds per wrk run (default 10)
#     -r, --rounds N         rounds (default 5); every round measures every cell; medians reported
#     --conns "1 32"         connection counts
#     --server-cpus LIST     CPUs the proxies and backends run on (taskset list; default 0)
#     --client-cpus LIST     CPUs wrk runs on (default 1)
#     --no-pin               do not pin anything
#     --nice N               niceness of everything started here (default -10 when root, else 0)
#     --no-build             use target/release/nomad_iis as it is
#     --out DIR              where results go (default bench/results)
#
# The backend: nginx with one worker process serving a 1 KiB file (bench/proxy.sh writes its
# config; a fast backend, so that the proxies' own cost shows). Our host starts it as the worker of
# a process application, the IIS way: the application folder's web.config says
# `<httpPlatform processPath="sh" arguments="backend.sh %HTTP_PLATFORM_PORT%">`. A second instance
# of the same backend, started by this script, is what nginx proxies to and what "direct" measures
# (wrk straight to the backend). Added latency = proxied − direct, per round.
#
# Fairness: nginx proxies with `proxy_http_version 1.1`, an upstream `keepalive 64` pool,
# `tcp_nodelay`, the same forwarded headers as ours (X-Forwarded-For/-Proto/-Host), and as many
# worker processes as our host has runtime threads; access logs off on both (our task stdout is
# /dev/null). Proxies and backends share the server CPUs; wrk (one thread) runs on the client
# CPUs. Each round measures direct, ours and nginx back to back, in an order that rotates. Proxy
# CPU is utime + stime from /proc/PID/stat around each run: the host process for ours (not its
# worker), master + workers for the nginx proxy (not its backend).
#
# Everything runs in a fresh temporary folder; every process started here runs in its own process
# group and is stopped on exit, also on Ctrl-C, SIGTERM or failure.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

duration=10
rounds=5
conns_list="1 32"
server_cpus=0
client_cpus=1
pin=1
niceness=
build=1
out_dir=$repo/bench/results
while [ $# -gt 0 ]; do
  case $1 in
    -d | --duration) duration=$2; shift 2 ;;
    -r | --rounds) rounds=$2; shift 2 ;;
    --conns) conns_list=$2; shift 2 ;;
    --server-cpus) server_cpus=$2; shift 2 ;;
    --client-cpus) client_cpus=$2; shift 2 ;;
    --no-pin) pin=0; shift ;;
    --nice) niceness=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --out) out_dir=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$niceness" ]; then
  if [ "$(id -u)" = 0 ]; then niceness=-10; else niceness=0; fi
fi
command_line="bench/proxy.sh --duration $duration --rounds $rounds --conns \"$conns_list\" $([ "$pin" = 1 ] && echo "--server-cpus $server_cpus --client-cpus $client_cpus" || echo --no-pin) --nice $niceness"

# --- tools, build, CPU pinning (bench/lib.sh) ---
source "$repo/bench/lib.sh"
server_threads=$("${on_server[@]}" nproc)

# --- work folder and process clean-up ---
work=$(mktemp -d /tmp/nomad_iis-bench-proxy.XXXXXX)
chmod 755 "$work"
groups=()
cleanup() {
  local g
  for g in "${groups[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
  for g in "${groups[@]}"; do
    for _ in $(seq 1 50); do kill -0 -- "-$g" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$g" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

spawn() {
  setsid "$@" &
  started=$!
  groups+=("$started")
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cpu_ticks() {
  local total=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] && total=$(( total + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}') ))
  done
  echo "$total"
}

wait_http() { # url pid
  for _ in $(seq 1 400); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { echo "the server for $1 exited" >&2; return 1; }
    sleep 0.05
  done
  echo "server at $1 did not answer" >&2
  return 1
}

# --- the backend: an application folder published the HttpPlatformHandler way ---
mkdir -p "$work/app" "$work/backends"
# Workers may run under another identity: each backend makes its own folder here.
chmod 1777 "$work/backends"
head -c 768 /dev/urandom | base64 -w 0 | head -c 1024 > "$work/app/file.txt"
chmod 644 "$work/app/file.txt"
cp "$repo/bench/backend.sh" "$work/app/backend.sh"
cat > "$work/app/web.config" <<'XML'
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <system.webServer>
    <handlers>
      <add name="httpPlatformHandler" path="*" verb="*" modules="httpPlatformHandler" resourceType="Unspecified" />
    </handlers>
    <httpPlatform processPath="sh" arguments="backend.sh %HTTP_PLATFORM_PORT%" startupTimeLimit="20" />
  </system.webServer>
</configuration>
XML

declare -A url pids leader

# The backend instance that nginx proxies to and that "direct" measures.
backend_port=$(free_port)
spawn "${on_server[@]}" sh "$work/app/backend.sh" "$backend_port"
leader[direct]=$started
url[direct]=http://127.0.0.1:$backend_port/file.txt
wait_http "${url[direct]}" "$started"
pids[direct]="$started $(pgrep -P "$started" | tr '\n' ' ')"

# --- our site host with the process application ---
cat > "$work/site.hcl" <<'HCL'
application {
  path = "app"
}
binding {
  type = "http"
  port = "http"
}
HCL
port=$(free_port)
mkdir -p "$work/runtime"
spawn "${on_server[@]}" "$bin" run "$work/site.hcl" --port "http=$port" --stdout /dev/null \
  --runtime-dir "$work/runtime" > "$work/ours.out" 2> "$work/ours.err"
leader[ours]=$started
url[ours]=http://127.0.0.1:$port/file.txt
# The first request starts the worker (OnDemand).
wait_http "${url[ours]}" "$started"
pids[ours]=$(pgrep -P "$started" | tr '\n' ' ')
[ -n "${pids[ours]}" ] || { echo "no site host below nomad_iis run $started" >&2; exit 1; }

# --- nginx as reverse proxy to the backend ---
port=$(free_port)
mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes $server_threads;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events {
  worker_connections 4096;
}
http {
  access_log off;
  tcp_nodelay on;
  keepalive_requests 100000000;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  upstream backend {
    server 127.0.0.1:$backend_port;
    keepalive 64;
    keepalive_requests 100000000;
  }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
    }
  }
}
CONF
spawn "${on_server[@]}" nginx -e "$work/nginx/error.log" -p "$work/nginx" -c "$work/nginx/nginx.conf" \
  -g 'daemon off;' > "$work/nginx/out" 2>&1
leader[nginx]=$started
url[nginx]=http://127.0.0.1:$port/file.txt
wait_http "${url[nginx]}" "$started"
pids[nginx]="$started $(pgrep -P "$started" | tr '\n' ' ')"

for name in ours nginx; do
  if ! cmp -s <(curl -fsS "${url[direct]}") <(curl -fsS "${url[$name]}"); then
    echo "$name answers a different body than the backend" >&2
    exit 1
  fi
done

cat > "$work/percentiles.lua" <<'LUA'
done = function(summary, latency, requests)
  io.write(string.format("percentiles %d %d %d %d\n", latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
LUA

# run_wrk NAME CONNS → "requests req_per_s p50_us p90_us p99_us p999_us server_cpu_s wrk_cpu_s errors"
run_wrk() {
  local name=$1 conns=$2 before after out requests rps errors wrk_cpu
  # shellcheck disable=SC2086
  before=$(cpu_ticks ${pids[$name]})
  out=$( { TIMEFORMAT='%U %S'; time "${on_client[@]}" wrk -t1 -c"$conns" -d"${duration}s" --timeout 5s \
    -s "$work/percentiles.lua" "${url[$name]}"; } 2> "$work/wrk.time")
  # shellcheck disable=SC2086
  after=$(cpu_ticks ${pids[$name]})
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  errors=$(awk '/Non-2xx/ {e+=$NF} /Socket errors/ {gsub(",",""); e+=$4+$6+$8+$10} END {print e+0}' <<<"$out")
  wrk_cpu=$(awk 'END {print $1 + $2}' "$work/wrk.time")
  echo "$requests $rps $(awk '/^percentiles/ {print $2, $3, $4, $5}' <<<"$out") $(awk -v t=$(( after - before )) -v hz="$(getconf CLK_TCK)" 'BEGIN {print t/hz}') $wrk_cpu $errors"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
mkdir -p "$out_dir"
raw=$out_dir/proxy-raw.txt
{
  echo "# $command_line"
  echo "# target conns round requests req_per_s p50_us p90_us p99_us p99.9_us server_cpu_s wrk_cpu_s errors"
} > "$raw"

for name in direct ours nginx; do
  "${on_client[@]}" wrk -t1 -c32 -d2s "${url[$name]}" > /dev/null
done

targets=(direct ours nginx)
for round in $(seq 1 "$rounds"); do
  for conns in $conns_list; do
    shift_by=$(( (round - 1) % ${#targets[@]} ))
    for name in "${targets[@]:$shift_by}" "${targets[@]:0:$shift_by}"; do
      echo "$name $conns $round $(run_wrk "$name" "$conns")" | tee -a "$raw" >&2
    done
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
worker_pids=$(pgrep -P "${pids[ours]%% *}" | tr '\n' ' ' || true)

# --- report ---
median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print 0; else print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
field() { # target conns column → median
  awk -v s="$1" -v c="$2" -v f="$3" '$1==s && $2==c {print $f}' "$raw" | median
}
per_cpu() { # target conns → median of requests per proxy CPU-second
  awk -v s="$1" -v c="$2" '$1==s && $2==c && $10>0 {print $4/$10}' "$raw" | median
}
added() { # target conns column → median over rounds of (target − direct) in that round, µs
  awk -v s="$1" -v c="$2" -v f="$3" '
    $2==c && $1==s { t[$3] = $f }
    $2==c && $1=="direct" { d[$3] = $f }
    END { for (r in t) if (r in d) print t[r] - d[r] }' "$raw" | median
}
paired() { # conns column|percpu|addedN → median over rounds of ours ÷ nginx within the round
  awk -v c="$1" -v f="$2" '
    $2==c {
      if (f == "percpu") v = ($10 > 0) ? $4/$10 : 0
      else if (f ~ /^added/) { col = substr(f, 6) + 0; v = $col }
      else v = $f
      val[$1, $3] = v; rounds[$3] = 1
    }
    END {
      for (r in rounds) {
        o = val["ours", r]; n = val["nginx", r]
        if (f ~ /^added/) { o -= val["direct", r]; n -= val["direct", r] }
        if (n > 0) print o / n
      }
    }' "$raw" | median
}
times() { awk -v r="$1" 'BEGIN {printf "%.2f×", r}'; }
ms() { awk -v us="$1" 'BEGIN {printf "%.3f", us / 1000}'; }

report=$out_dir/proxy-latest.md
{
  echo "Command: \`$command_line\`"
  echo
  echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')$(grep -qw hypervisor /proc/cpuinfo && echo ", virtual machine")), kernel $(uname -r), $(date -u '+%Y-%m-%d %H:%M UTC'); nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')."
  if [ "$pin" = 1 ]; then
    echo "Proxies and backends on CPU $server_cpus (our host: $([ "$server_threads" = 1 ] && echo "current-thread runtime" || echo "$server_threads runtime workers"); nginx proxy: $server_threads worker process(es); each backend: nginx with 1 worker), wrk -t1 on CPU $client_cpus; all at nice $niceness."
  else
    echo "Nothing pinned; wrk -t1 shares the CPUs; all at nice $niceness."
  fi
  echo "wrk runs of ${duration} s, $rounds rounds; figures are medians over rounds, ratios the median of the per-round ratios ours ÷ nginx. Added latency = proxied − direct (wrk straight to the backend) in the same round. Load average before / after: $load_before / $load_after."
  echo
  echo "| conns | direct req/s | ours req/s | nginx req/s | req/s ratio | added p50 ms ours / nginx | ratio | added p99 ms ours / nginx | ratio | ours req/proxy-CPU-s | nginx req/proxy-CPU-s | ratio |"
  echo "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
  for conns in $conns_list; do
    printf '| %s | %.0f | %.0f | %.0f | **%s** | %s / %s | **%s** | %s / %s | **%s** | %.0f | %.0f | **%s** |\n' \
      "$conns" "$(field direct "$conns" 5)" "$(field ours "$conns" 5)" "$(field nginx "$conns" 5)" \
      "$(times "$(paired "$conns" 5)")" \
      "$(ms "$(added ours "$conns" 6)")" "$(ms "$(added nginx "$conns" 6)")" "$(times "$(paired "$conns" added6)")" \
      "$(ms "$(added ours "$conns" 8)")" "$(ms "$(added nginx "$conns" 8)")" "$(times "$(paired "$conns" added8)")" \
      "$(per_cpu ours "$conns")" "$(per_cpu nginx "$conns")" "$(times "$(paired "$conns" percpu)")"
  done
  echo
  echo "Latency percentiles from wrk's histogram (medians over rounds, ms), direct / ours / nginx:"
  echo
  echo "| conns | p50 | p90 | p99 | p99.9 |"
  echo "|--:|--:|--:|--:|--:|"
  for conns in $conns_list; do
    row="| $conns |"
    for column in 6 7 8 9; do
      row+=" $(ms "$(field direct "$conns" "$column")") / $(ms "$(field ours "$conns" "$column")") / $(ms "$(field nginx "$conns" "$column")") |"
    done
    echo "$row"
  done
  echo
  errors=$(awk '!/^#/ {e+=$12} END {print e+0}' "$raw")
  echo "Non-2xx responses and socket errors over all runs: $errors. Our host's worker pid(s) at the end: ${worker_pids:-none}."
} > "$report"
cat "$report"
