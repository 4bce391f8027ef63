-- wrk script of the benchmark: cycles through the request mix and prints wrk's summary as one
-- JSON line. bench/loadgen.py fills in @REQUESTS@ (a Lua table of {method, path, body}) and
-- @AUTHORIZATION@, and reads the line.
local mix = @REQUESTS@
local authorization = @AUTHORIZATION@
local requests = {}
local next_index = 0

init = function(args)
  for _, call in ipairs(mix) do
    local headers = {["Authorization"] = authorization}
    local body = nil
    if call.body ~= "" then
      headers["Content-Type"] = "application/json"
      body = call.body
    end
    requests[#requests + 1] = wrk.format(call.method, call.path, headers, body)
  end
end

request = function()
  next_index = next_index % #requests + 1
  return requests[next_index]
end

done = function(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "failed": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "p999_us": %d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
