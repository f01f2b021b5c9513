-- wrk profile for the spklite benchmark, driven by environment variables:
--   BENCH_METHOD  GET or POST (default GET)
--   BENCH_BODY    request body (POST form), sent with a form Content-Type
--   BENCH_PATHS   request paths separated by newlines, used round-robin
--   BENCH_PATHS_FILE  a file of such paths (too many for the environment), each asked once, then the run ends
--   BENCH_HEADER  one extra header line "Name: value"
--   BENCH_DELAY   milliseconds to wait before each request (a paced client)
-- done() prints one line "BENCHJSON {...}" that bench/run.py reads.

local method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY")
local delay_ms = tonumber(os.getenv("BENCH_DELAY") or "0")
local headers = {}
local extra = os.getenv("BENCH_HEADER")
if extra and extra ~= "" then
  local name, value = extra:match("^([^:]+):%s*(.*)$")
  headers[name] = value
end
if body and body ~= "" then
  headers["Content-Type"] = "application/x-www-form-urlencoded"
else
  body = nil
end

local paths = {}
local once = os.getenv("BENCH_PATHS_FILE")
if once and once ~= "" then
  for path in io.lines(once) do
    paths[#paths + 1] = path
  end
else
  for path in (os.getenv("BENCH_PATHS") or "/"):gmatch("[^\n]+") do
    paths[#paths + 1] = path
  end
  once = nil
end
local requests = {}
local n = 0

-- Made in init: only then does wrk know the Host header, which wrk.format adds (HTTP/1.1 requires it; Go's
-- server answers 400 without it).
function init(args)
  for i, path in ipairs(paths) do
    requests[i] = wrk.format(method, path, headers, body)
  end
end

function request()
  n = n % #requests + 1
  return requests[n]
end

if once then  -- one thread: each path once, then wrk ends (it would wait out its duration) with a short summary
  local answered, failed, started = 0, 0, os.time()
  function response(status)
    answered = answered + 1
    if status ~= 200 then
      failed = failed + 1
    end
    if answered >= #requests then
      io.write(string.format(
        'BENCHJSON {"requests": %d, "bytes": 0, "duration_us": %d, "errors": 0, "status_errors": %d, '
          .. '"timeouts": 0, "p50_us": 0, "p99_us": 0, "mean_us": 0, "max_us": 0}\n',
        answered, math.max(1, os.time() - started) * 1000000, failed))
      io.flush()
      os.exit(0)
    end
  end
end

if delay_ms > 0 then
  function delay()
    return delay_ms
  end
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests": %d, "bytes": %d, "duration_us": %d, "errors": %d, "status_errors": %d, '
      .. '"timeouts": %d, "p50_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d}\n',
    summary.requests, summary.bytes, summary.duration, e.connect + e.read + e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
