-- wrk script for bench/recycle.py: paced load and per-100-ms counts of every response.
--
--   wrk -t1 -cC -dD --timeout 5s -s bench/paced.lua URL -- RATE ORIGIN [STOPFILE]
--
-- RATE: requests per second per wrk thread (0 = as fast as possible). Requests are scheduled
-- on a fixed grid (one every 1/RATE s) shared by the thread's connections: a connection that
-- gets its response waits for the next free slot. When the server falls behind, the grid
-- catches up at most 1 s worth of requests, so a stall shows as a dip, then a short burst.
-- ORIGIN: CLOCK_MONOTONIC seconds that bucket 0 starts at (the caller's clock, so buckets line
-- up with the moments it records).
-- STOPFILE: once this file exists (checked every 100 ms), no new request is sent; the caller
-- waits for the answers still outstanding, then stops wrk with SIGINT. Then every request sent
-- has either been answered or failed, and `sent − answered` counts the failures exactly.
--
-- done() prints one line per bucket, `bucket INDEX OK FAILED` (OK = 2xx responses, FAILED =
-- others), `sent N` (requests written, counted in request()), and `errors CONNECT READ WRITE
-- STATUS TIMEOUT REQUESTS` from wrk's own counters. wrk's read errors also count keep-alive
-- connections that the server closed while no request was on them (wrk then reconnects and
-- nothing is lost), so they are not failures by themselves; `sent − answered` is.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } paced_timespec;
int clock_gettime(int clock, paced_timespec *ts);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("paced_timespec")
local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local interval_ms = 0
local origin = 0
local next_slot = nil
local stop_file = nil
local stopped = false
local last_check = 0
local request_text = nil
ok = {}
failed = {}
sent = 0

function init(args)
  local rate = tonumber(args[1]) or 0
  origin = tonumber(args[2]) or now()
  stop_file = args[3]
  request_text = wrk.format()
  if rate > 0 then
    interval_ms = 1000 / rate
  end
end

function request()
  sent = sent + 1
  return request_text
end

function delay()
  local t = now() * 1000
  if stop_file and not stopped and t - last_check > 100 then
    last_check = t
    local f = io.open(stop_file, "r")
    if f then
      f:close()
      stopped = true
    end
  end
  if stopped then
    return 3600000
  end
  if interval_ms == 0 then
    return 0
  end
  if next_slot == nil or next_slot < t - 1000 then
    next_slot = t
  end
  next_slot = next_slot + interval_ms
  local wait = next_slot - t
  if wait <= 0 then
    return 0
  end
  return math.floor(wait + 0.5)
end

function response(status, headers, body)
  local b = math.floor((now() - origin) * 10)
  if status >= 200 and status < 300 then
    ok[b] = (ok[b] or 0) + 1
  else
    failed[b] = (failed[b] or 0) + 1
  end
end

function done(summary, latency, requests)
  local all = {}
  local total_sent = 0
  for _, thread in ipairs(threads) do
    total_sent = total_sent + thread:get("sent")
    local o = thread:get("ok")
    local f = thread:get("failed")
    for b, n in pairs(o) do
      all[b] = all[b] or { 0, 0 }
      all[b][1] = all[b][1] + n
    end
    for b, n in pairs(f) do
      all[b] = all[b] or { 0, 0 }
      all[b][2] = all[b][2] + n
    end
  end
  for b, v in pairs(all) do
    io.write(string.format("bucket %d %d %d\n", b, v[1], v[2]))
  end
  -- wrk 4.1.0 calls request() once more than it sends requests, with one thread or two
  -- (checked against a server's request log): that call is not a request.
  io.write(string.format("sent %d\n", total_sent - 1))
  local e = summary.errors
  io.write(string.format("errors %d %d %d %d %d %d\n", e.connect, e.read, e.write, e.status,
    e.timeout, summary.requests))
  io.write(string.format("percentiles %d %d %d\n", latency:percentile(50),
    latency:percentile(99), latency.max))
end
