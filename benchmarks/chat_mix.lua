-- wrk script: the realistic mix. Cycles through a corpus of chat request bodies, one JSON body a
-- line, in the file given after `--` (bench_core.py writes it at start: varied lengths, some with a
-- system prompt or earlier turns, some streamed). Every {{TAG}} in a body becomes a 12-digit tag
-- unique to the request (random per-run base, wrk thread, counter), as in chat_unique.lua, so no
-- user or assistant text repeats and llmsim's caches answer only for the shared system prompts.
-- The tag is always four 3-digit tokens: a body counts the same prompt tokens whatever its tag.
local headers = {
  ["Content-Type"] = "application/json",
  ["Authorization"] = "Bearer sk-bench-0000000000000000000000000000",
}
local bodies = {} -- each a list of segments, to be joined by the tag

local threads = 0
function setup(thread)
  thread:set("thread_no", threads)
  threads = threads + 1
end

local base, counter, index = 0, 0, 0
function init(args)
  local path = args[1]
  local file = assert(io.open(path, "rb"), "chat_mix.lua: cannot open corpus " .. tostring(path))
  for line in file:lines() do
    if #line > 0 then
      local segments, start = {}, 1
      while true do
        local i, j = line:find("{{TAG}}", start, true)
        if not i then break end
        segments[#segments + 1] = line:sub(start, i - 1)
        start = j + 1
      end
      segments[#segments + 1] = line:sub(start)
      bodies[#bodies + 1] = segments
    end
  end
  file:close()
  assert(#bodies > 0, "chat_mix.lua: empty corpus " .. path)
  local f = io.open("/dev/urandom", "rb")
  local b = f:read(3)
  f:close()
  base = ((b:byte(1) * 65536 + b:byte(2) * 256 + b:byte(3)) % 100000) * 10 + ((thread_no or 0) % 10)
  -- Threads start at different places of the corpus (one thread in bench_core: the start).
  index = ((thread_no or 0) * 7919) % #bodies
end

request = function()
  counter = (counter + 1) % 1000000
  index = index % #bodies + 1
  local body = table.concat(bodies[index], string.format("%06d%06d", base, counter))
  return wrk.format("POST", "/v1/chat/completions", headers, body)
end

-- One machine-readable line for bench_core.py (durations in microseconds).
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
