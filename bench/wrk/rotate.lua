-- wrk script used by bench/run.py: POSTs form bodies read from a file, one per line,
-- rotating through them in order (so each body is reused only after all others).
--
-- Environment (set by run.py):
--   BENCH_BODIES   file with one application/x-www-form-urlencoded body per line (required)
--   BENCH_PATH     request path (default /)
--   BENCH_AUTH     Authorization header value (optional)
--   BENCH_IDS_OUT  if set, every "auth_req_id" in a 200 answer is appended to this file
--   BENCH_REPORT   JSON summary written here by done() (required)
--
-- The summary has wrk's counters, latency percentiles and quantile function (µs),
-- the answer mix ("200", or "<error code>/<status>"), and, for reused bodies, the
-- smallest gap in seconds between two sends of the same body.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

-- per-thread state (each wrk thread runs this file in its own Lua state)
counts = {}
min_gap = -1
reuses = 0
ids_written = 0
bodies_total = 0

local requests = {}
local last_sent = {}
local n = 0
local idx = 0
local ids_out = nil

function init(args)
  local path = os.getenv("BENCH_PATH") or "/"
  local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
  local auth = os.getenv("BENCH_AUTH")
  if auth and auth ~= "" then headers["Authorization"] = auth end
  local file = assert(io.open(assert(os.getenv("BENCH_BODIES"), "BENCH_BODIES unset"), "r"))
  for line in file:lines() do
    if line ~= "" then
      n = n + 1
      requests[n] = wrk.format("POST", path, headers, line)
    end
  end
  file:close()
  assert(n > 0, "no bodies")
  bodies_total = n
  local out = os.getenv("BENCH_IDS_OUT")
  if out and out ~= "" then
    ids_out = assert(io.open(out, "a"))
    ids_out:setvbuf("line") -- wrk exits without closing thread states
  end
end

function request()
  idx = idx + 1
  if idx > n then idx = 1 end
  local t = now()
  local previous = last_sent[idx]
  if previous then
    reuses = reuses + 1
    local gap = t - previous
    if min_gap < 0 or gap < min_gap then min_gap = gap end
  end
  last_sent[idx] = t
  return requests[idx]
end

function response(status, headers, body)
  local key
  if status == 200 then
    key = "200"
    if ids_out then
      local id = string.match(body or "", '"auth_req_id"%s*:%s*"([^"]+)"')
      if id then
        ids_out:write(id, "\n")
        ids_written = ids_written + 1
      end
    end
  else
    local err = string.match(body or "", '"error"%s*:%s*"([^"]+)"')
    key = (err or "no_error_field") .. "/" .. status
  end
  counts[key] = (counts[key] or 0) + 1
end

-- main state: collect the threads so done() can read their counters
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local function json_string(s)
  return '"' .. string.gsub(tostring(s), '[%c"\\]', function(c)
    return string.format("\\u%04x", string.byte(c))
  end) .. '"'
end

function done(summary, latency, requests_stats)
  local merged = {}
  local gap, reused, written = -1, 0, 0
  for _, thread in ipairs(threads) do
    local c = thread:get("counts") or {}
    for k, v in pairs(c) do merged[k] = (merged[k] or 0) + v end
    local g = thread:get("min_gap")
    if g and g >= 0 and (gap < 0 or g < gap) then gap = g end
    reused = reused + (thread:get("reuses") or 0)
    written = written + (thread:get("ids_written") or 0)
  end
  -- the latency quantile function (percent, microseconds), finer in the tail, so that
  -- several runs can be merged into one distribution
  local quantiles = {}
  if summary.requests > 0 then
    for i = 1, 990 do
      quantiles[#quantiles + 1] = string.format("[%.2f,%d]", i / 10, latency:percentile(i / 10))
    end
    for i = 1, 100 do
      local p = 99 + i / 100
      quantiles[#quantiles + 1] = string.format("[%.2f,%d]", p, latency:percentile(p))
    end
  end
  local answers = {}
  for k, v in pairs(merged) do table.insert(answers, json_string(k) .. ":" .. v) end
  local e = summary.errors
  local parts = {
    '"requests":' .. summary.requests,
    '"duration_us":' .. summary.duration,
    '"bytes":' .. summary.bytes,
    string.format('"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}',
      e.connect, e.read, e.write, e.status, e.timeout),
    string.format('"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"mean":%.1f,"max":%d}',
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.mean, latency.max),
    '"answers":{' .. table.concat(answers, ",") .. "}",
    '"reuses":' .. reused,
    '"min_reuse_gap_s":' .. string.format("%.3f", gap),
    '"ids_written":' .. written,
    '"quantiles":[' .. table.concat(quantiles, ",") .. "]",
  }
  local f = assert(io.open(assert(os.getenv("BENCH_REPORT"), "BENCH_REPORT unset"), "w"))
  f:write("{" .. table.concat(parts, ",") .. "}\n")
  f:close()
end
