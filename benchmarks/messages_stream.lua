-- wrk script: chat_stream.lua's request in Anthropic's Messages API (POST /v1/messages, streaming).
-- Against `llmsim serve --response-mode lorem --output-tokens 47`, the answer is 53 named SSE events:
-- message_start, content_block_start, ping, 47 content_block_delta, content_block_stop,
-- message_delta, message_stop (chat_stream.lua's 47 tokens come as 50 events).
wrk.method = "POST"
wrk.path = "/v1/messages"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.headers["x-api-key"] = "sk-ant-bench-0000000000000000000000000000"
wrk.body = [[{"model": "claude-sonnet-4-5", "system": "You are a helpful travel assistant. Answer concisely and use bullet points where it helps.", "messages": [{"role": "user", "content": "I'm planning a three-day trip to Lisbon in early spring. Could you suggest an itinerary that balances museums, food and a day trip outside the city, and tell me roughly what public transport passes I should buy?"}], "temperature": 0.7, "max_tokens": 512, "stream": true}]]

-- One machine-readable line for bench_core.py (durations in microseconds).
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
