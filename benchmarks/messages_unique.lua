-- wrk script: messages.lua's request (Anthropic Messages, POST /v1/messages), but every body
-- differs, as in chat_unique.lua: a 12-digit tag in the user prompt, from a per-run random base (so
-- a later run on the same server does not repeat an earlier run's bodies), the wrk thread and a
-- per-thread counter. llmsim's validated-body cache and its token-count cache cannot answer. The tag
-- is always 12 digits (four 3-digit tokens), so every body counts the same number of input tokens.
-- bench_core.py reads `template` (with {{TAG}} as 000000000000) for its one-request check.
local template = [[{"model": "claude-sonnet-4-5", "system": "You are a helpful travel assistant. Answer concisely and use bullet points where it helps.", "messages": [{"role": "user", "content": "Request {{TAG}}: I'm planning a three-day trip to Lisbon in early spring. Could you suggest an itinerary that balances museums, food and a day trip outside the city, and tell me roughly what public transport passes I should buy?"}], "temperature": 0.7, "max_tokens": 512, "stream": false}]]
local head, tail = template:match("^(.-){{TAG}}(.*)$")
local headers = {
  ["Content-Type"] = "application/json",
  ["anthropic-version"] = "2023-06-01",
  ["x-api-key"] = "sk-ant-bench-0000000000000000000000000000",
}

local threads = 0
function setup(thread)
  thread:set("thread_no", threads)
  threads = threads + 1
end

local base, counter = 0, 0
function init(args)
  local f = io.open("/dev/urandom", "rb")
  local b = f:read(3)
  f:close()
  base = ((b:byte(1) * 65536 + b:byte(2) * 256 + b:byte(3)) % 100000) * 10 + ((thread_no or 0) % 10)
end

request = function()
  counter = (counter + 1) % 1000000
  local body = head .. string.format("%06d%06d", base, counter) .. tail
  return wrk.format("POST", "/v1/messages", headers, body)
end

-- One machine-readable line for bench_core.py (durations in microseconds).
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
