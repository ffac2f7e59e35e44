-- The records of a user's conversations; one that expired leaves the index and the expiry set too.
-- KEYS[1] index, KEYS[2] expiry: the user's; then the records
-- ARGV the records' conversation ids (in the order of their KEYS)
-- Returns each record ('' if it expired).
local out = {}
for k = 3, #KEYS do
  local value = redis.call('GET', KEYS[k])
  if not value then
    redis.call('ZREM', KEYS[1], ARGV[k - 2])
    redis.call('ZREM', KEYS[2], ARGV[k - 2])
  end
  out[#out + 1] = value or ''
end
return out
