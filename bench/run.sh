#!/usr/bin/env bash
# Benchmark: a 1 KiB static file served by nomad_iis's site host and by nginx, side by side in one
# run, with wrk on loopback; then the host's start-up time and idle RSS. Prints a markdown report
# (also written to bench/results/latest.md) and keeps the raw figures (bench/results/raw.txt).
#
#   bench/run.sh [options]
#     -d, --duration S       seconds per wrk run (default 10)
#     -r, --rounds N         measured rounds per server and scenario (default 5); medians reported
#     --conns "1 32"         connection counts
#     --logs "off on"        access-log modes: off = both servers log nothing; on = ours to a FIFO
#                            with a reader attached (as Nomad's logmon), nginx to a file
#     --server-cpus LIST     CPUs the servers run on (taskset list; default 0)
#     --client-cpus LIST     CPUs wrk and the FIFO reader run on (default 1)
#     --no-pin               do not pin anything (servers and wrk share all CPUs)
#     --startup-rounds N     start-up time samples (default 20; 0 skips)
#     --startup-command CMD  measure start-up with this command instead of `nomad_iis run` (see
#                            bench/startup.py: `{port}` and `{site}` are replaced; a line
#                            `start_task_ns=N` on its stdout marks time 0, e.g. when a client
#                            playing Nomad sends StartTask to the plugin)
#     --no-build             use target/release/nomad_iis as it is
#     --out DIR              where results go (default bench/results)
#
# Fairness: nginx gets sendfile, tcp_nopush, tcp_nodelay, open_file_cache, unlimited keep-alive
# requests, and exactly as many worker processes as the site host has tokio worker threads (the
# host takes one per CPU it may run on, so both follow the pinning). Servers run on the server
# CPUs, wrk (one thread) and the FIFO reader on the client CPUs, so the load generator never
# competes with the server it measures. Every round measures both servers back to back, in
# alternating order, after an unmeasured warm-up run of each; medians over rounds are reported.
# Server CPU is read from /proc/PID/stat (utime + stime, all threads) around each wrk run: the host
# process for ours, master + workers for nginx.
#
# Everything runs in a fresh temporary folder; every process started here runs in its own process
# group and is killed on exit, also on Ctrl-C or failure.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

duration=10
rounds=5
conns_list="1 32"
logs_list="off on"
server_cpus=0
client_cpus=1
pin=1
startup_rounds=20
startup_command=
build=1
out_dir=$repo/bench/results
while [ $# -gt 0 ]; do
  case $1 in
    -d | --duration) duration=$2; shift 2 ;;
    -r | --rounds) rounds=$2; shift 2 ;;
    --conns) conns_list=$2; shift 2 ;;
    --logs) logs_list=$2; shift 2 ;;
    --server-cpus) server_cpus=$2; shift 2 ;;
    --client-cpus) client_cpus=$2; shift 2 ;;
    --no-pin) pin=0; shift ;;
    --startup-rounds) startup_rounds=$2; shift 2 ;;
    --startup-command) startup_command=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --out) out_dir=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
command_line="bench/run.sh --duration $duration --rounds $rounds --conns \"$conns_list\" --logs \"$logs_list\" $([ "$pin" = 1 ] && echo "--server-cpus $server_cpus --client-cpus $client_cpus" || echo --no-pin) --startup-rounds $startup_rounds"

# --- tools (installed on a fresh Debian machine) ---
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

if [ "$pin" = 1 ]; then
  on_server=(taskset -c "$server_cpus")
  on_client=(taskset -c "$client_cpus")
else
  on_server=()
  on_client=()
fi
# The host's tokio runtime takes one worker per CPU it may run on; nginx gets as many workers.
server_threads=$("${on_server[@]}" nproc)

# --- work folder and process clean-up ---
work=$(mktemp -d /tmp/nomad_iis-bench.XXXXXX)
chmod 755 "$work"
groups=() # process group ids of everything started in the background
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

# Starts "$@" in the background in a process group of its own; its pid (= group id) in $started.
spawn() {
  setsid "$@" &
  started=$!
  groups+=("$started")
}

# Stops a process group started by spawn: SIGNAL to the leader, then TERM/KILL to the group.
stop_group() { # pid signal
  local pid=$1 sig=$2
  kill "-$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  kill -TERM -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
}

mkdir -p "$work/site" "$work/runtime" "$work/nginx"
head -c 768 /dev/urandom | base64 -w 0 | head -c 1024 > "$work/site/file.txt"
[ "$(stat -c %s "$work/site/file.txt")" = 1024 ]

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cpu_ticks() { # utime + stime (clock ticks) of the given pids, all their threads
  local total=0 p
  for p in "$@"; do
    # Fields after the command name, which is in parentheses and could hold spaces.
    [ -r "/proc/$p/stat" ] && total=$(( total + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}') ))
  done
  echo "$total"
}
rss_kib() { # summed VmRSS of the given pids
  local total=0 p
  for p in "$@"; do
    [ -r "/proc/$p/status" ] && total=$(( total + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status") ))
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

# --- our site host, through the standalone mode (the same host process the driver starts) ---
cat > "$work/site.hcl" <<'HCL'
application {
  path = "site"
}
binding {
  type = "http"
  port = "http"
}
HCL
start_ours() { # logmode
  local port stdout
  port=$(free_port)
  if [ "$1" = off ]; then
    stdout=/dev/null
  else
    # The access log goes to a FIFO that a reader drains, as Nomad's logmon does.
    stdout=$work/stdout.fifo
    rm -f "$stdout"
    mkfifo "$stdout"
    # It runs beside wrk, ahead of it (as logmon would be a system service), so that a busy
    # load generator does not starve it into making the host drop lines.
    local nice=()
    nice -n -10 true 2>/dev/null && nice=(nice -n -10)
    rm -f "$work/fifo.ready"
    spawn "${on_client[@]}" "${nice[@]}" python3 "$repo/bench/fifo_reader.py" "$stdout" "$work/fifo.ready" "$work/fifo.lines"
    reader_pid=$started
    # The reader must have the FIFO open before the host starts, as logmon has in Nomad: a
    # host that finds no reader drops lines until it retries a second later.
    for _ in $(seq 1 200); do [ -e "$work/fifo.ready" ] && break; sleep 0.01; done
    [ -e "$work/fifo.ready" ] || { echo "the FIFO reader did not start" >&2; return 1; }
  fi
  spawn "${on_server[@]}" "$bin" run "$work/site.hcl" --port "http=$port" --stdout "$stdout" \
    --runtime-dir "$work/runtime" > "$work/ours.out" 2> "$work/ours.err"
  ours_run=$started
  ours_url=http://127.0.0.1:$port/file.txt
  wait_http "$ours_url" "$ours_run"
  ours_pids=$(pgrep -P "$ours_run" | tr '\n' ' ')
  [ -n "$ours_pids" ] || { echo "no site host below nomad_iis run $ours_run" >&2; return 1; }
}
stop_ours() {
  stop_group "$ours_run" INT
  if [ -n "${reader_pid:-}" ]; then
    # The reader ends at end of file, once the host closed the FIFO; it then writes its count.
    for _ in $(seq 1 100); do kill -0 "$reader_pid" 2>/dev/null || break; sleep 0.05; done
    stop_group "$reader_pid" TERM
    reader_pid=
  fi
}

start_nginx() { # logmode
  local port log
  port=$(free_port)
  log="access_log off;"
  [ "$1" = on ] && log="access_log $work/nginx/access.log iis;"
  cat > "$work/nginx/nginx.conf" <<CONF
worker_processes $server_threads;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events {
  worker_connections 4096;
}
http {
  types { text/plain txt; }
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 100000000;
  open_file_cache max=1000 inactive=60s;
  open_file_cache_valid 60s;
  open_file_cache_min_uses 1;
  charset utf-8;
  charset_types text/plain;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  # The same fields as our access log line.
  log_format iis '\$remote_addr - - [\$time_local] "\$request" \$status \$body_bytes_sent '
                 '"\$http_referer" "\$http_user_agent" host="\$host" ms=\$request_time';
  $log
  server {
    listen 127.0.0.1:$port;
    root $work/site;
  }
}
CONF
  spawn "${on_server[@]}" nginx -e "$work/nginx/error.log" -p "$work/nginx" -c "$work/nginx/nginx.conf" \
    -g 'daemon off;' > "$work/nginx/out" 2>&1
  nginx_master=$started
  nginx_url=http://127.0.0.1:$port/file.txt
  wait_http "$nginx_url" "$nginx_master"
  nginx_pids="$nginx_master $(pgrep -P "$nginx_master" | tr '\n' ' ')"
}
stop_nginx() {
  stop_group "$nginx_master" QUIT
  rm -f "$work/nginx/access.log"
}

# run_wrk URL CONNS PIDS... → "requests req_per_s p99_ms server_cpu_s wrk_cpu_s errors"
run_wrk() {
  local url=$1 conns=$2
  shift 2
  local before after out requests rps p99 errors wrk_cpu
  before=$(cpu_ticks "$@")
  out=$( { TIMEFORMAT='%U %S'; time "${on_client[@]}" wrk -t1 -c"$conns" -d"${duration}s" --timeout 5s --latency "$url"; } 2> "$work/wrk.time")
  after=$(cpu_ticks "$@")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
  errors=$(awk '/Non-2xx/ {e+=$NF} /Socket errors/ {gsub(",",""); e+=$4+$6+$8+$10} END {print e+0}' <<<"$out")
  wrk_cpu=$(awk 'END {print $1 + $2}' "$work/wrk.time")
  echo "$requests $rps $p99 $(awk -v t=$(( after - before )) -v hz="$(getconf CLK_TCK)" 'BEGIN {print t/hz}') $wrk_cpu $errors"
}

host_dropped_lines() { # runtime folder of a `nomad_iis run` → the host's dropped_log_lines
  python3 - "$1" <<'PY'
import glob, json, socket, sys
path = glob.glob(sys.argv[1] + "/*/control.sock")[0]
with socket.socket(socket.AF_UNIX) as s:
    s.connect(path)
    s.sendall(b'{"command":"status"}\n')
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
print(json.loads(data)["status"]["dropped_log_lines"])
PY
}

warm_up() { # url
  "${on_client[@]}" wrk -t1 -c32 -d2s "$1" > /dev/null
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
mkdir -p "$out_dir"
raw=$out_dir/raw.txt
{
  echo "# $command_line"
  echo "# server log conns round requests req_per_s p99_ms server_cpu_s wrk_cpu_s errors dropped_log_lines_so_far"
} > "$raw"

for logmode in $logs_list; do
  start_ours "$logmode"
  start_nginx "$logmode"
  if ! cmp -s <(curl -fsS "$ours_url") <(curl -fsS "$nginx_url"); then
    echo "the servers answer different bodies" >&2
    exit 1
  fi
  if [ "$logmode" = "$(awk '{print $1}' <<<"$logs_list")" ]; then
    # shellcheck disable=SC2086
    rss_ours_start=$(rss_kib $ours_pids)
    # shellcheck disable=SC2086
    rss_nginx_start=$(rss_kib $nginx_pids)
  fi
  warm_up "$ours_url"
  warm_up "$nginx_url"
  for conns in $conns_list; do
    for round in $(seq 1 "$rounds"); do
      # Alternate who goes first, so drift in the machine's speed does not favour one server.
      if [ $(( round % 2 )) = 1 ]; then order="ours nginx"; else order="nginx ours"; fi
      for server in $order; do
        if [ "$server" = ours ]; then
          # shellcheck disable=SC2086
          figures=$(run_wrk "$ours_url" "$conns" $ours_pids)
          # The host's dropped access-log lines so far (0 when the log is off).
          figures="$figures $(host_dropped_lines "$work/runtime/nomad_iis-run-$ours_run")"
        else
          # shellcheck disable=SC2086
          figures="$(run_wrk "$nginx_url" "$conns" $nginx_pids) 0"
        fi
        echo "$server $logmode $conns $round $figures" | tee -a "$raw" >&2
      done
    done
  done
  if [ "$logmode" = "$(awk '{print $1}' <<<"$logs_list")" ]; then
    sleep 2
    # shellcheck disable=SC2086
    rss_ours_after=$(rss_kib $ours_pids)
    # shellcheck disable=SC2086
    rss_nginx_after=$(rss_kib $nginx_pids)
  fi
  if [ "$logmode" = on ]; then
    dropped=$(host_dropped_lines "$work/runtime/nomad_iis-run-$ours_run")
    requests_sent=$(awk -v l="$logmode" '$1=="ours" && $2==l {n+=$5} END {print n+0}' "$raw")
  fi
  stop_ours
  if [ "$logmode" = on ]; then lines_read=$(cat "$work/fifo.lines" 2>/dev/null || echo "?"); fi
  stop_nginx
done

load_after=$(cut -d' ' -f1-3 /proc/loadavg)

startup_report=
if [ "$startup_rounds" -gt 0 ]; then
  if [ -n "$startup_command" ]; then
    # shellcheck disable=SC2086
    startup_report=$("${on_server[@]}" python3 "$repo/bench/startup.py" --rounds "$startup_rounds" \
      --work "$work/startup" command -- $startup_command)
  else
    startup_report=$("${on_server[@]}" python3 "$repo/bench/startup.py" --rounds "$startup_rounds" \
      --binary "$bin" --work "$work/startup" standalone)
    startup_report+=$'\n\n'$("${on_server[@]}" python3 "$repo/bench/startup.py" --rounds "$startup_rounds" \
      --binary "$bin" --work "$work/startup-host" host)
  fi
fi

# --- report ---
median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print 0; else print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
field() { # server log conns column → median
  awk -v s="$1" -v l="$2" -v c="$3" -v f="$4" '$1==s && $2==l && $3==c {print $f}' "$raw" | median
}
per_cpu() { # server log conns → median of requests per server CPU-second
  awk -v s="$1" -v l="$2" -v c="$3" '$1==s && $2==l && $3==c && $8>0 {print $5/$8}' "$raw" | median
}
paired() { # log conns column|percpu → median over rounds of ours ÷ nginx within the round
  awk -v l="$1" -v c="$2" -v f="$3" '
    $2==l && $3==c {
      v = (f == "percpu") ? (($8 > 0) ? $5/$8 : 0) : $f
      if ($1 == "ours") o[$4] = v; else n[$4] = v
    }
    END { for (r in o) if (r in n && n[r] > 0) print o[r]/n[r] }' "$raw" | median
}
times() { awk -v r="$1" 'BEGIN {printf "%.2f×", r}'; }

report=$out_dir/latest.md
{
  echo "Command: \`$command_line\`"
  echo
  echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')), kernel $(uname -r), $(date -u '+%Y-%m-%d %H:%M UTC')."
  if [ "$pin" = 1 ]; then
    echo "Servers on CPU $server_cpus (the site host's runtime: $([ "$server_threads" = 1 ] && echo "current-thread" || echo "$server_threads workers"); nginx: $server_threads worker process(es)), wrk -t1 and the FIFO reader on CPU $client_cpus."
  else
    echo "Nothing pinned; $server_threads tokio workers / nginx workers; wrk -t1 shares the CPUs."
  fi
  echo "wrk runs of ${duration} s, $rounds rounds; figures are medians over rounds, ratios the median of the per-round ratios ours ÷ nginx (both servers are measured back to back in each round, so drift in the machine's speed cancels). Load average before / after: $load_before / $load_after."
  echo
  echo "| access log | conns | ours req/s | nginx req/s | req/s ratio | ours p99 ms | nginx p99 ms | p99 ratio | ours req/CPU-s | nginx req/CPU-s | req/CPU-s ratio | wrk CPU ours / nginx |"
  echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
  for logmode in $logs_list; do
    for conns in $conns_list; do
      o_rps=$(field ours "$logmode" "$conns" 6); n_rps=$(field nginx "$logmode" "$conns" 6)
      o_p99=$(field ours "$logmode" "$conns" 7); n_p99=$(field nginx "$logmode" "$conns" 7)
      o_eff=$(per_cpu ours "$logmode" "$conns"); n_eff=$(per_cpu nginx "$logmode" "$conns")
      o_wrk=$(field ours "$logmode" "$conns" 9); n_wrk=$(field nginx "$logmode" "$conns" 9)
      printf '| %s | %s | %.0f | %.0f | **%s** | %.3f | %.3f | %s | %.0f | %.0f | **%s** | %.0f%% / %.0f%% |\n' \
        "$logmode" "$conns" "$o_rps" "$n_rps" "$(times "$(paired "$logmode" "$conns" 6)")" "$o_p99" "$n_p99" \
        "$(times "$(paired "$logmode" "$conns" 7)")" "$o_eff" "$n_eff" "$(times "$(paired "$logmode" "$conns" percpu)")" \
        "$(awk -v c="$o_wrk" -v d="$duration" 'BEGIN {print 100*c/d}')" \
        "$(awk -v c="$n_wrk" -v d="$duration" 'BEGIN {print 100*c/d}')"
    done
  done
  echo
  errors=$(awk '!/^#/ {e+=$10} END {print e+0}' "$raw")
  echo "Non-2xx responses and socket errors over all runs: $errors."
  if [ -n "${dropped:-}" ]; then
    echo "Access log on: the host dropped $dropped lines (its control status); the FIFO reader got $lines_read lines for $requests_sent measured requests plus warm-up and checks."
    if [ "$dropped" != 0 ]; then
      echo
      echo "**Warning: the host dropped access-log lines (the FIFO reader fell behind), so the log-on row flatters it.**"
    fi
  fi
  echo
  echo "Idle RSS after start / after the load (+2 s): ours (site host process) ${rss_ours_start:-?} / ${rss_ours_after:-?} KiB; nginx (master + workers) ${rss_nginx_start:-?} / ${rss_nginx_after:-?} KiB."
  if [ -n "$startup_report" ]; then
    echo
    echo "$startup_report"
  fi
} > "$report"
cat "$report"
