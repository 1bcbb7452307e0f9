-- wrk script: the same requests `llmsim probe` sends (a different prompt each, as the probe
-- varies them so a gateway cache cannot answer), for the probe-vs-wrk comparison.
local counter = 0

request = function()
  counter = counter + 1
  local body = string.format(
    '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "llmsim probe request %d"}], "max_tokens": 16, "stream": false}',
    counter)
  return wrk.format("POST", "/v1/chat/completions", {["Content-Type"] = "application/json"}, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
