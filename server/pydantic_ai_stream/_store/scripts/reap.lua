-- Ends the streams whose run died: no live flag, yet the last entry is not `end`; a durable run is not dead
-- while its durable key lives (a worker resumes it).
-- KEYS: per session [4i-3] live, [4i-2] stream, [4i-1] active, [4i] durable.
-- ARGV: [1] maxlen, [2] grace_ms, [3] error body, [3+i] the session ids.
-- Returns per session 1 if it ended the stream, else 0.
local done = {}
for i = 1, #KEYS / 4 do
  local live, stream, active, durable = KEYS[4 * i - 3], KEYS[4 * i - 2], KEYS[4 * i - 1], KEYS[4 * i]
  done[i] = 0
  if redis.call('EXISTS', live, durable) == 0 then
    local last = last_entry(stream)
    if last and not is_end(last) then
      end_run(stream, ARGV[1], ARGV[3], '{}', active, ARGV[i + 3], ARGV[2])
      done[i] = 1
    end
  end
end
return done
