-- wrk script: POST a realistic, non-streaming legacy completion request (gpt-3.5-turbo-instruct).
-- Used by bench_core.py; by hand against `llmsim serve`, e.g.
--   wrk -t2 -c32 -d10s -s benchmarks/completions.lua http://127.0.0.1:8000
wrk.method = "POST"
wrk.path = "/v1/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench-0000000000000000000000000000"
wrk.body = [[{"model": "gpt-3.5-turbo-instruct", "prompt": "I'm planning a three-day trip to Lisbon in early spring. Suggest an itinerary that balances museums, food and a day trip outside the city, and tell me roughly what public transport passes I should buy.\n\nItinerary:", "temperature": 0.7, "max_tokens": 256, "stream": false}]]

-- One machine-readable line, as bench_core.py reads it (durations in microseconds).
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
