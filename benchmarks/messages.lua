-- wrk script: chat.lua's request in Anthropic's Messages API (POST /v1/messages, non-streaming):
-- the same system prompt (top-level `system`), user text (floors.USER_TEXT, echoed by llmsim),
-- temperature and max_tokens; `anthropic-version` and `x-api-key` headers as the SDK sends them.
wrk.method = "POST"
wrk.path = "/v1/messages"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.headers["x-api-key"] = "sk-ant-bench-0000000000000000000000000000"
wrk.body = [[{"model": "claude-sonnet-4-5", "system": "You are a helpful travel assistant. Answer concisely and use bullet points where it helps.", "messages": [{"role": "user", "content": "I'm planning a three-day trip to Lisbon in early spring. Could you suggest an itinerary that balances museums, food and a day trip outside the city, and tell me roughly what public transport passes I should buy?"}], "temperature": 0.7, "max_tokens": 512, "stream": false}]]

-- One machine-readable line for bench_core.py (durations in microseconds).
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
