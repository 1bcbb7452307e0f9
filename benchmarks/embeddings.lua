-- wrk script: POST one embeddings request (a single passage, 1,536 floats back), the row
-- bench_core.py holds to its chat twin.
wrk.method = "POST"
wrk.path = "/v1/embeddings"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench-0000000000000000000000000000"
wrk.body = [[{"model": "text-embedding-3-small", "input": "Lisbon is the capital and largest city of Portugal, on the Atlantic coast where the Tagus meets the sea. Its trams climb the steep streets of Alfama past tiled facades and small squares.", "encoding_format": "float"}]]

-- One machine-readable line, as bench_core.py reads it (durations in microseconds).
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
