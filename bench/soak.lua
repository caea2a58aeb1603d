-- wrk script for soak.py: asks for soak-000 .. soak-(N-1) in turn (N = first
-- script argument) and counts the answers by HTTP status across all threads.
local threads = {}

function setup(thread)
  thread:set("first", #threads * 37)
  table.insert(threads, thread)
end

function init(args)
  count = tonumber(args[1])
  n = first
  statuses = {}
end

function request()
  n = (n + 1) % count
  return wrk.format("GET", string.format("/secretsmanager/get?secretId=soak-%03d", n))
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for code, c in pairs(thread:get("statuses")) do
      total[code] = (total[code] or 0) + c
    end
  end
  io.write("SOAK_STATUS")
  for code, c in pairs(total) do
    io.write(string.format(" %d=%d", code, c))
  end
  io.write("\n")
  local e = summary.errors
  io.write(string.format(
    "SOAK requests=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d " ..
    "connect_errors=%d read_errors=%d write_errors=%d timeouts=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.timeout))
end
