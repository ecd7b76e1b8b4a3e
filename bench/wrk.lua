-- Request generator and JSON report for bench/run.sh (wrk 4).
--
-- Environment:
--   WRK_SCENARIO   get (GET /notes/{random id}), list (GET /notes?limit=100),
--                  post (POST /notes), mix (WRK_WRITE_PCT % POST, the rest GET by id),
--                  postkey (POST /notes with a new Idempotency-Key on every request),
--                  path (GET WRK_PATH, the same request every time: bench/search.sh)
--   WRK_PATH       path and query of the `path` scenario, e.g. /notes?q=apple%20pear&limit=20
--   WRK_MAX_ID     ids are drawn uniformly from 1..WRK_MAX_ID (default 100000)
--   WRK_WRITE_PCT  share of writes in the mix, in percent (default 10)
--   WRK_TOKEN      bearer token sent as `Authorization: Bearer <token>` on every request
--                  (required: every /notes route refuses anonymous calls)
--
-- `done` prints one line "BENCH_JSON {...}" with the counts and latency percentiles (µs).

local scenario = os.getenv("WRK_SCENARIO") or "get"
local max_id = tonumber(os.getenv("WRK_MAX_ID") or "100000")
local write_pct = tonumber(os.getenv("WRK_WRITE_PCT") or "10")
local token = os.getenv("WRK_TOKEN") or ""
if token == "" then
  error("WRK_TOKEN is not set")
end
local authorization = "Bearer " .. token

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local post_request
local list_request
function init(args)
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
  for _ = 1, 10 do math.random() end
  post_request = wrk.format("POST", "/notes",
    { ["Authorization"] = authorization, ["Content-Type"] = "application/json" },
    '{"text":"a note written by the benchmark","completed":false}')
  list_request = wrk.format("GET", "/notes?limit=100", { ["Authorization"] = authorization })
end

-- wrk.format adds Host (and Content-Length) to the table it is given: a fresh one each time.
local function get_request()
  return wrk.format("GET", "/notes/" .. math.random(1, max_id), { ["Authorization"] = authorization })
end

if scenario == "get" then
  request = get_request
elseif scenario == "list" then
  request = function() return list_request end
elseif scenario == "post" then
  request = function() return post_request end
elseif scenario == "postkey" then
  local sent = 0
  local run = tostring(os.time())
  request = function()
    sent = sent + 1
    return wrk.format("POST", "/notes",
      { ["Authorization"] = authorization, ["Content-Type"] = "application/json",
        ["Idempotency-Key"] = "bench-" .. run .. "-" .. (tid or 0) .. "-" .. sent },
      '{"text":"a note written by the benchmark","completed":false}')
  end
elseif scenario == "path" then
  local path = os.getenv("WRK_PATH") or ""
  if path == "" then
    error("WRK_PATH is not set")
  end
  local path_request
  request = function()
    path_request = path_request or wrk.format("GET", path, { ["Authorization"] = authorization })
    return path_request
  end
elseif scenario == "mix" then
  request = function()
    if math.random(1, 100) <= write_pct then
      return post_request
    end
    return get_request()
  end
else
  error("unknown WRK_SCENARIO " .. scenario)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f,"errors_connect":%d,"errors_read":%d,"errors_write":%d,' ..
    '"errors_status":%d,"errors_timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50.0), latency:percentile(99.0), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
