-- The agents of the workers whose field has not lapsed (on Redis's clock).
-- KEYS[1] workers: the fleet's hash (worker -> `<until ms> <agents as JSON>`)
-- ARGV none
-- Returns each live worker's agents (a JSON list each).
local now = now_ms()
local fields = redis.call('HGETALL', KEYS[1])
local live = {}
for i = 2, #fields, 2 do
  local until_ms, agents = string.match(fields[i], '^(%d+) (.*)$$')
  if until_ms and tonumber(until_ms) >= now then live[#live + 1] = agents end
end
return live
