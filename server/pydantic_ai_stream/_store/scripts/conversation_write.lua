-- Saves a conversation's record and its new entries if the stored revision is the one expected.
-- KEYS[1] record; KEYS[2] entries, KEYS[3] parents, KEYS[4] index, KEYS[5] expiry: the user's (see `keep_alive`)
-- ARGV[1] expected revision ('' for none), ARGV[2] record, ARGV[3] its head ('' for none), ARGV[4] conversation
-- id, ARGV[5] updated at (ms), ARGV[6] ttl (ms; '' for none, 'keep' for the key's own), then id, parent ('' for
-- none), message of each new entry
-- Returns $WriteState.WRITTEN; $WriteState.CONFLICT if the stored revision is another; $WriteState.UNKNOWN_PARENT
-- if the head or a new entry's parent is neither stored nor new (a delete released it).
local stored = redis.call('GET', KEYS[1])
if (stored and revision(stored) or '') ~= ARGV[1] then return $WriteState.CONFLICT end
local new = {}
for i = 7, #ARGV, 3 do new[ARGV[i]] = true end
local function known(id) return id == '' or new[id] or redis.call('HEXISTS', KEYS[3], id) == 1 end
if not known(ARGV[3]) then return $WriteState.UNKNOWN_PARENT end
for i = 7, #ARGV, 3 do
  if not known(ARGV[i + 1]) then return $WriteState.UNKNOWN_PARENT end
end
for i = 7, #ARGV, 3 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
end
local ttl = ARGV[6]
if ttl == 'keep' then
  local left = redis.call('PTTL', KEYS[1])
  ttl = left > 0 and tostring(left) or ''
end
local now = now_ms()
if ttl == '' then redis.call('SET', KEYS[1], ARGV[2]) else redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl) end
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[4])
redis.call('ZADD', KEYS[5], ttl == '' and 'inf' or tostring(now + tonumber(ttl)), ARGV[4])
keep_alive(now)
return $WriteState.WRITTEN
