#!/bin/sh
# The benchmark backend: nginx serving this script's folder on 127.0.0.1:$1 with one worker
# process, in the foreground. With `--port-header` as $2 every response says
# `X-Backend-Port: $1`, so a probe can tell an old worker from a new one (bench/recycle.py).
# Copied into an application folder by bench/proxy.sh and bench/recycle.py and started from its
# web.config as `<httpPlatform processPath="sh" arguments="backend.sh %HTTP_PLATFORM_PORT%">`.
set -e
app=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d "$app/../backends/backend.XXXXXX")
port_header=
if [ "${2:-}" = --port-header ]; then port_header="add_header X-Backend-Port $1;"; fi
cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  default_type text/plain;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 100000000;
  open_file_cache max=100 inactive=60s;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  server {
    listen 127.0.0.1:$1;
    root $app;
    $port_header
  }
}
CONF
exec nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;'
