-- wrk script: POST a realistic, non-streaming OpenAI Responses request (the chat.lua body in the
-- Responses shape: instructions for the system message, the user text as input).
-- The user text is floors.USER_TEXT (llmsim echoes it).
wrk.method = "POST"
wrk.path = "/v1/responses"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench-0000000000000000000000000000"
wrk.body = [[{"model": "gpt-4o", "instructions": "You are a helpful travel assistant. Answer concisely and use bullet points where it helps.", "input": "I'm planning a three-day trip to Lisbon in early spring. Could you suggest an itinerary that balances museums, food and a day trip outside the city, and tell me roughly what public transport passes I should buy?", "temperature": 0.7, "max_output_tokens": 512, "stream": false}]]

-- One machine-readable line for bench_core.py (durations in microseconds).
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
