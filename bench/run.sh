#!/usr/bin/env bash
# Benchmark: a 1 KiB static file served by nomad_iis's site host and by nginx, side by side in one
# run, with wrk on loopback; then the host's start-up time. Prints a markdown report (also written
# to bench/results/latest.md) and keeps the raw figures (bench/results/raw.txt).
#
#   bench/run.sh [options]
#     -d, --duration S       seconds per wrk run (default 10)
#     -r, --rounds N         rounds (default 7); every round measures every cell; medians reported
#     --conns "1 32"         connection counts
#     --logs "off on"        access-log modes: off = both servers log nothing; on = ours to a FIFO
#                            with a reader attached (as Nomad's logmon), nginx to a file
#     --server-cpus LIST     CPUs the servers run on (taskset list; default 0)
#     --client-cpus LIST     CPUs wrk and the FIFO reader run on (default 1)
#     --no-pin               do not pin anything (servers and wrk share all CPUs)
#     --nice N               niceness of servers, wrk and FIFO reader (default -10 when root, else
#                            0), so that other work on the machine interrupts them less
#     --startup-rounds N     start-up time samples per mode (default 20; 0 skips)
#     --startup-command CMD  measure start-up with this command instead (see bench/startup.py:
#                            `{port}` and `{site}` are replaced; a line `start_task_ns=N` on its
#                            stdout marks time 0, e.g. when a client playing Nomad sends StartTask
#                            to the plugin)
#     --no-build             use target/release/nomad_iis as it is
#     --out DIR              where results go (default bench/results)
#
# Fairness: nginx gets sendfile, tcp_nopush, tcp_nodelay, open_file_cache, unlimited keep-alive
# requests, and as many worker processes as the site host has runtime threads (the host takes one
# per CPU it may run on, so both follow the pinning). Servers run on the server CPUs, wrk (one
# thread) and the FIFO reader on the client CPUs, so the load generator does not compete with the
# server it measures. All four servers (ours and nginx, log off and on) run for the whole
# benchmark, idle when not measured; each round visits every cell, in an order that rotates from
# round to round, and measures both servers back to back, alternating who goes first. Medians over
# rounds are reported; ratios are the medians of the per-round ratios. Server CPU is read from
# /proc/PID/stat (utime + stime, all threads) around each wrk run: the host process for ours (its
# access-log writer thread included), master + workers for nginx.
#
# Everything runs in a fresh temporary folder; every process started here runs in its own process
# group and is stopped on exit, also on Ctrl-C, SIGTERM or failure.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

duration=10
rounds=7
conns_list="1 32"
logs_list="off on"
server_cpus=0
client_cpus=1
pin=1
niceness=
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
    --nice) niceness=$2; shift 2 ;;
    --startup-rounds) startup_rounds=$2; shift 2 ;;
    --startup-command) startup_command=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --out) out_dir=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$niceness" ]; then
  if [ "$(id -u)" = 0 ]; then niceness=-10; else niceness=0; fi
fi
command_line="bench/run.sh --duration $duration --rounds $rounds --conns \"$conns_list\" --logs \"$logs_list\" $([ "$pin" = 1 ] && echo "--server-cpus $server_cpus --client-cpus $client_cpus" || echo --no-pin) --nice $niceness --startup-rounds $startup_rounds"

# --- tools, build, CPU pinning (bench/lib.sh) ---
source "$repo/bench/lib.sh"
# The host's tokio runtime takes one thread per CPU it may run on; nginx gets as many workers.
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

mkdir -p "$work/site" "$work/runtime"
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

# Per server ("ours-off", "nginx-on", ...): its URL, the pids whose CPU counts, the process to stop.
declare -A url pids leader reader

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
  local name=ours-$1 port stdout
  port=$(free_port)
  if [ "$1" = off ]; then
    stdout=/dev/null
  else
    # The access log goes to a FIFO that a reader drains, as Nomad's logmon does. The reader must
    # have it open before the host starts, as logmon has in Nomad: a host that finds no reader
    # drops lines until it retries a second later.
    stdout=$work/stdout-$1.fifo
    mkfifo "$stdout"
    spawn "${on_client[@]}" python3 "$repo/bench/fifo_reader.py" "$stdout" "$work/fifo.ready" "$work/fifo.lines"
    reader[$name]=$started
    for _ in $(seq 1 200); do [ -e "$work/fifo.ready" ] && break; sleep 0.01; done
    [ -e "$work/fifo.ready" ] || { echo "the FIFO reader did not start" >&2; return 1; }
  fi
  spawn "${on_server[@]}" "$bin" run "$work/site.hcl" --port "http=$port" --stdout "$stdout" \
    --runtime-dir "$work/runtime" > "$work/$name.out" 2> "$work/$name.err"
  leader[$name]=$started
  url[$name]=http://127.0.0.1:$port/file.txt
  wait_http "${url[$name]}" "$started"
  pids[$name]=$(pgrep -P "$started" | tr '\n' ' ')
  [ -n "${pids[$name]}" ] || { echo "no site host below nomad_iis run $started" >&2; return 1; }
}

start_nginx() { # logmode
  local name=nginx-$1 port log
  port=$(free_port)
  log="access_log off;"
  [ "$1" = on ] && log="access_log $work/$name/access.log iis;"
  mkdir -p "$work/$name"
  cat > "$work/$name/nginx.conf" <<CONF
worker_processes $server_threads;
pid $work/$name/nginx.pid;
error_log $work/$name/error.log;
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
  client_body_temp_path $work/$name/body;
  proxy_temp_path $work/$name/proxy;
  fastcgi_temp_path $work/$name/fastcgi;
  uwsgi_temp_path $work/$name/uwsgi;
  scgi_temp_path $work/$name/scgi;
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
  spawn "${on_server[@]}" nginx -e "$work/$name/error.log" -p "$work/$name" -c "$work/$name/nginx.conf" \
    -g 'daemon off;' > "$work/$name/out" 2>&1
  leader[$name]=$started
  url[$name]=http://127.0.0.1:$port/file.txt
  wait_http "${url[$name]}" "$started"
  pids[$name]="$started $(pgrep -P "$started" | tr '\n' ' ')"
}

# wrk prints these from its own latency histogram (microseconds) after the run.
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
raw=$out_dir/raw.txt
{
  echo "# $command_line"
  echo "# server log conns round requests req_per_s p50_us p90_us p99_us p99.9_us server_cpu_s wrk_cpu_s errors dropped_log_lines_so_far"
} > "$raw"

first_log=$(awk '{print $1}' <<<"$logs_list")
for logmode in $logs_list; do
  start_ours "$logmode"
  start_nginx "$logmode"
  if ! cmp -s <(curl -fsS "${url[ours-$logmode]}") <(curl -fsS "${url[nginx-$logmode]}"); then
    echo "the servers answer different bodies" >&2
    exit 1
  fi
done
# shellcheck disable=SC2086
rss_ours_start=$(rss_kib ${pids[ours-$first_log]})
# shellcheck disable=SC2086
rss_nginx_start=$(rss_kib ${pids[nginx-$first_log]})
for name in "${!url[@]}"; do
  "${on_client[@]}" wrk -t1 -c32 -d2s "${url[$name]}" > /dev/null
done

cells=()
for logmode in $logs_list; do
  for conns in $conns_list; do cells+=("$logmode $conns"); done
done
for round in $(seq 1 "$rounds"); do
  # Rotate the order of the cells and alternate who goes first, so that drift in the machine's
  # speed, and whatever one cell leaves behind in the kernel, is spread over all of them.
  shift_by=$(( (round - 1) % ${#cells[@]} ))
  for cell in "${cells[@]:$shift_by}" "${cells[@]:0:$shift_by}"; do
    read -r logmode conns <<<"$cell"
    if [ $(( round % 2 )) = 1 ]; then order="ours nginx"; else order="nginx ours"; fi
    for server in $order; do
      name=$server-$logmode
      figures=$(run_wrk "$name" "$conns")
      if [ "$server" = ours ] && [ "$logmode" = on ]; then
        figures="$figures $(host_dropped_lines "$work/runtime/nomad_iis-run-${leader[$name]}")"
      else
        figures="$figures 0"
      fi
      echo "$server $logmode $conns $round $figures" | tee -a "$raw" >&2
    done
  done
done
sleep 2
# shellcheck disable=SC2086
rss_ours_after=$(rss_kib ${pids[ours-$first_log]})
# shellcheck disable=SC2086
rss_nginx_after=$(rss_kib ${pids[nginx-$first_log]})
if [ -n "${leader[ours-on]:-}" ]; then
  dropped=$(host_dropped_lines "$work/runtime/nomad_iis-run-${leader[ours-on]}")
  requests_sent=$(awk '$1=="ours" && $2=="on" {n+=$5} END {print n+0}' "$raw")
fi
for name in "${!leader[@]}"; do
  if [ "${name%%-*}" = ours ]; then stop_group "${leader[$name]}" INT; else stop_group "${leader[$name]}" QUIT; fi
done
if [ -n "${reader[ours-on]:-}" ]; then
  # The reader ends at end of file, once the host closed the FIFO; it then writes its count.
  for _ in $(seq 1 100); do kill -0 "${reader[ours-on]}" 2>/dev/null || break; sleep 0.05; done
  stop_group "${reader[ours-on]}" TERM
  lines_read=$(cat "$work/fifo.lines" 2>/dev/null || echo "?")
fi
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
  awk -v s="$1" -v l="$2" -v c="$3" '$1==s && $2==l && $3==c && $11>0 {print $5/$11}' "$raw" | median
}
paired() { # log conns column|percpu → median over rounds of ours ÷ nginx within the round
  awk -v l="$1" -v c="$2" -v f="$3" '
    $2==l && $3==c {
      v = (f == "percpu") ? (($11 > 0) ? $5/$11 : 0) : $f
      if ($1 == "ours") o[$4] = v; else n[$4] = v
    }
    END { for (r in o) if (r in n && n[r] > 0) print o[r]/n[r] }' "$raw" | median
}
times() { awk -v r="$1" 'BEGIN {printf "%.2f×", r}'; }
ms() { awk -v us="$1" 'BEGIN {printf "%.3f", us / 1000}'; }

report=$out_dir/latest.md
{
  echo "Command: \`$command_line\`"
  echo
  echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')$(grep -qw hypervisor /proc/cpuinfo && echo ", virtual machine")), kernel $(uname -r), $(date -u '+%Y-%m-%d %H:%M UTC'); nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')."
  if [ "$pin" = 1 ]; then
    echo "Servers on CPU $server_cpus (the site host's runtime: $([ "$server_threads" = 1 ] && echo "current-thread" || echo "$server_threads workers"); nginx: $server_threads worker process(es)), wrk -t1 and the FIFO reader on CPU $client_cpus; all at nice $niceness."
  else
    echo "Nothing pinned; $server_threads tokio workers / nginx workers; wrk -t1 shares the CPUs; all at nice $niceness."
  fi
  echo "wrk runs of ${duration} s, $rounds rounds; figures are medians over rounds, ratios the median of the per-round ratios ours ÷ nginx (in each round both servers are measured back to back). Load average before / after: $load_before / $load_after."
  echo
  echo "| access log | conns | ours req/s | nginx req/s | req/s ratio | ours p99 ms | nginx p99 ms | p99 ratio | ours req/CPU-s | nginx req/CPU-s | req/CPU-s ratio | wrk CPU ours / nginx |"
  echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
  for logmode in $logs_list; do
    for conns in $conns_list; do
      o_rps=$(field ours "$logmode" "$conns" 6); n_rps=$(field nginx "$logmode" "$conns" 6)
      o_p99=$(field ours "$logmode" "$conns" 9); n_p99=$(field nginx "$logmode" "$conns" 9)
      o_eff=$(per_cpu ours "$logmode" "$conns"); n_eff=$(per_cpu nginx "$logmode" "$conns")
      o_wrk=$(field ours "$logmode" "$conns" 12); n_wrk=$(field nginx "$logmode" "$conns" 12)
      printf '| %s | %s | %.0f | %.0f | **%s** | %s | %s | %s | %.0f | %.0f | **%s** | %.0f%% / %.0f%% |\n' \
        "$logmode" "$conns" "$o_rps" "$n_rps" "$(times "$(paired "$logmode" "$conns" 6)")" \
        "$(ms "$o_p99")" "$(ms "$n_p99")" "$(times "$(paired "$logmode" "$conns" 9)")" \
        "$o_eff" "$n_eff" "$(times "$(paired "$logmode" "$conns" percpu)")" \
        "$(awk -v c="$o_wrk" -v d="$duration" 'BEGIN {print 100*c/d}')" \
        "$(awk -v c="$n_wrk" -v d="$duration" 'BEGIN {print 100*c/d}')"
    done
  done
  echo
  echo "Latency percentiles from wrk's histogram (medians over rounds, ms), ours / nginx:"
  echo
  echo "| access log | conns | p50 | p90 | p99 | p99.9 |"
  echo "|---|--:|--:|--:|--:|--:|"
  for logmode in $logs_list; do
    for conns in $conns_list; do
      row="| $logmode | $conns |"
      for column in 7 8 9 10; do
        row+=" $(ms "$(field ours "$logmode" "$conns" "$column")") / $(ms "$(field nginx "$logmode" "$conns" "$column")") |"
      done
      echo "$row"
    done
  done
  echo
  errors=$(awk '!/^#/ {e+=$13} END {print e+0}' "$raw")
  echo "Non-2xx responses and socket errors over all runs: $errors."
  if [ -n "${dropped:-}" ]; then
    echo "Access log on: the host dropped $dropped lines (its control status); the FIFO reader got $lines_read lines for $requests_sent measured requests plus warm-up and checks."
    if [ "$dropped" != 0 ]; then
      echo
      echo "**Warning: the host dropped access-log lines (the FIFO reader fell behind), so the log-on rows flatter it.**"
    fi
  fi
  echo
  echo "RSS after start / after the benchmark (+2 s idle), log $first_log: ours (site host process) ${rss_ours_start:-?} / ${rss_ours_after:-?} KiB; nginx (master + workers) ${rss_nginx_start:-?} / ${rss_nginx_after:-?} KiB."
  if [ -n "$startup_report" ]; then
    echo
    echo "$startup_report"
  fi
} > "$report"
cat "$report"
