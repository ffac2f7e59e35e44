-- Deletes a conversation's record and every entry no remaining record's history or branch reaches.
-- KEYS[1] the record to delete; KEYS[2] entries, KEYS[3] parents, KEYS[4] index, KEYS[5] expiry: the user's
-- (see `keep_alive`); then the record of each conversation in the index
-- ARGV[1] its revision, ARGV[2] its id, then the index's members (in the order of their KEYS)
-- Returns the number of entries deleted; $DeleteState.CONFLICT if the revision is another (or it is gone);
-- $DeleteState.INDEX_CHANGED if the index is not the one given (read it again).
local stored = redis.call('GET', KEYS[1])
if not stored or revision(stored) ~= ARGV[1] then return $DeleteState.CONFLICT end
local members = redis.call('ZRANGE', KEYS[4], 0, -1)
if #members ~= #ARGV - 2 then return $DeleteState.INDEX_CHANGED end
local given = {}
for i = 3, #ARGV do given[ARGV[i]] = true end
for _, m in ipairs(members) do
  if not given[m] then return $DeleteState.INDEX_CHANGED end
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('ZREM', KEYS[5], ARGV[2])
local reachable = {}
for k = 6, #KEYS do
  local value = redis.call('GET', KEYS[k])
  if not value then
    redis.call('ZREM', KEYS[4], ARGV[k - 3])  -- expired
    redis.call('ZREM', KEYS[5], ARGV[k - 3])
  elseif string.sub(value, 1, 1) == '{' then
    local record = cjson.decode(value)
    local tips = {}
    if type(record['head_id']) == 'string' then tips[1] = record['head_id'] end
    for _, tip in ipairs(record['branches']) do tips[#tips + 1] = tip end
    for _, id in ipairs(tips) do
      while id and id ~= '' and not reachable[id] do
        reachable[id] = true
        id = redis.call('HGET', KEYS[3], id)
      end
    end
  end
end
local dead = {}
for _, id in ipairs(redis.call('HKEYS', KEYS[3])) do
  if not reachable[id] then dead[#dead + 1] = id end
end
for first = 1, #dead, 1000 do
  local chunk = {unpack(dead, first, math.min(first + 999, #dead))}
  redis.call('HDEL', KEYS[2], unpack(chunk))
  redis.call('HDEL', KEYS[3], unpack(chunk))
end
keep_alive(now_ms())
return #dead
