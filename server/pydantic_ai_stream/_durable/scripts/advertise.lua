-- Writes the worker's field to `ttl_ms` from now (on Redis's clock), deletes the fields that lapsed, and keeps
-- the hash at least as long as this field.
-- KEYS[1] workers: the fleet's hash (worker -> `<until ms> <agents as JSON>`)
-- ARGV[1] worker, ARGV[2] ttl_ms, ARGV[3] its agents (a JSON list)
-- Returns 1.
local now = now_ms()
local ttl = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], string.format('%.0f', now + ttl) .. ' ' .. ARGV[3])
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local until_ms = tonumber(string.match(fields[i + 1], '^(%d+) '))
  if not until_ms or until_ms < now then redis.call('HDEL', KEYS[1], fields[i]) end
end
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
