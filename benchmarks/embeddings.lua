-- wrk script: POST a realistic embeddings request (a batch of 8 passages, as a RAG indexer sends).
-- Not wired into bench_core.py; run it by hand against `llmsim serve`, e.g.
--   wrk -t2 -c32 -d10s -s benchmarks/embeddings.lua http://127.0.0.1:8000
wrk.method = "POST"
wrk.path = "/v1/embeddings"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench-0000000000000000000000000000"
wrk.body = [[{"model": "text-embedding-3-small", "input": ["Lisbon is the capital and largest city of Portugal, on the Atlantic coast where the Tagus meets the sea.", "The city's trams climb the steep streets of Alfama, one of the oldest districts, past tiled facades and small squares.", "Belem holds the Jeronimos Monastery and the tower that guarded the river mouth in the age of discovery.", "A day trip to Sintra reaches palaces in the hills, an hour away by suburban train from Rossio station.", "The Viva Viagem card pays for metro, trams, buses and the ferries across the river.", "Pasteis de nata are custard tarts, best eaten warm with cinnamon on top.", "Spring brings mild days, fewer visitors and the first outdoor terraces of the season.", "The Gulbenkian museum holds a collection that runs from ancient Egypt to the twentieth century."], "encoding_format": "float"}]]

-- One machine-readable line, as bench_core.py reads it (durations in microseconds).
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
