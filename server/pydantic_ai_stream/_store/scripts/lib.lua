-- The fragments the scripts share: a script calls them by name, and `LuaScript.load` puts the ones it calls
-- (with those they call) before it. A function calls only those above it, and its `end` is at column 0.

-- The value of the field `name` of `entry` (as XRANGE gives it: {id, {field, value, ...}}), or nil.
local function field(entry, name)
  for f = 1, #entry[2], 2 do
    if entry[2][f] == name then return entry[2][f + 1] end
  end
  return nil
end

-- The last entry of `stream`, or nil if it has none.
local function last_entry(stream)
  return redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
end

-- Whether `entry` (nil: none) is a run's `end`: nothing follows it.
local function is_end(entry)
  return entry ~= nil and field(entry, 'type') == $END
end

-- Whether the live flag `flag` is the lease `token`'s, asked to cancel or not.
local function holds(flag, token)
  return flag == token or flag == $CANCEL .. token
end

-- Whether `value` names the run `run`: its first attempt (`<run>`) or a later one (`<run>:<attempt>`).
local function is_run(value, run)
  return value == run or string.sub(value, 1, #run + 1) == run .. ':'
end

-- Tells whoever follows `stream` that it has new entries: a message on the channel named as its key, which a
-- process's `StreamHub` subscribes to for the streams it reads (a message nobody subscribed to costs a lookup).
-- Every script that adds to a session's stream calls it. The message is empty (read the stream), or `carried`
-- (`carry`'s text): the entries themselves, which a follower whose cursor is where they follow on takes without
-- a read. Left out of the scripts a Redis Cluster runs ($PUBLISH_WRITES is 0 there: `LuaScript`), where PUBLISH
-- reaches every node and each listener reads alone.
local function written(stream, carried)
  if $PUBLISH_WRITES == 1 then redis.call('PUBLISH', stream, carried or '') end
end

-- Adds the entry `id` (`type_`, `origin`, `body`) to `carried`, the parts of a notice that carries what a script
-- wrote: first the id the stream ended at before them, then each entry's id, type, origin and body; the notice
-- is the parts joined by NUL bytes (`notices.py` reads it). Returns nil, for an empty notice, once the bodies
-- pass $NOTICE_MAX_BYTES (a subscriber's buffer in Redis is bounded) or a part holds a NUL (no JSON body does).
local function carry(carried, id, type_, origin, body)
  if carried == nil then return nil end
  carried.bytes = carried.bytes + #body
  if carried.bytes > $NOTICE_MAX_BYTES then return nil end
  if string.find(type_, '\0', 1, true) or string.find(origin, '\0', 1, true) or string.find(body, '\0', 1, true) then
    return nil
  end
  local n = #carried
  carried[n + 1], carried[n + 2], carried[n + 3], carried[n + 4] = id, type_, origin, body
  return carried
end

-- Ends the run of `stream` without its process: `error` (`error_body`), then `end` (`end_body`); the session
-- `session_id` leaves the `active` set and the stream is kept `keep_ms`.
local function end_run(stream, maxlen, error_body, end_body, active, session_id, keep_ms)
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'type', $ERROR, 'origin', $ORIGIN, 'body', error_body)
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'type', $END, 'origin', $ORIGIN, 'body', end_body)
  written(stream)
  redis.call('ZREM', active, session_id)
  redis.call('PEXPIRE', stream, keep_ms)
end

-- Wakes one worker waiting on the run queue's stream `ready`.
local function wake(ready)
  redis.call('XADD', ready, 'MAXLEN', '~', $READY_MAXLEN, '*', 'job', '1')
end

-- Adds the job whose fields and values are the list `values` to the scope's job stream `jobs`; a scope that had
-- none waiting takes its turn after every other scope's (the sorted set `scopes`, scored by the counter
-- `turn`), and one worker waiting on the stream `ready` wakes.
local function add_job_fields(jobs, scopes, turn, ready, values)
  redis.call('XADD', jobs, '*', unpack(values))
  if not redis.call('ZSCORE', scopes, jobs) then redis.call('ZADD', scopes, redis.call('INCR', turn), jobs) end
  wake(ready)
end

-- `add_job_fields` with the fields and values ARGV[first..].
local function add_job(jobs, scopes, turn, ready, first)
  add_job_fields(jobs, scopes, turn, ready, {unpack(ARGV, first)})
end

-- Redis's clock, in ms.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The revision of a stored conversation record `value` (one the previous release stored: the SHA1 of its list).
local function revision(value)
  if string.sub(value, 1, 1) == '[' then return $LEGACY_REVISION .. redis.sha1hex(value) end
  return cjson.decode(value)['revision']
end

-- From conversation entry `head` back to the first, at most `limit` entries (all if negative) of the hash
-- `parents` (id -> parent id): their ids and parents, newest first; false if one is missing.
local function walk(parents, head, limit)
  local ids, ps = {}, {}
  local id = head
  while id ~= '' and (limit < 0 or #ids < limit) do
    local p = redis.call('HGET', parents, id)
    if not p then return false end
    ids[#ids + 1], ps[#ps + 1] = id, p
    id = p
  end
  return ids, ps
end

-- Appends id, parent, message (from the hash `entries`) of the entries `walk` gave, oldest first, to `out`;
-- false if a message is missing.
local function triples(entries, ids, ps, out)
  local n = #ids
  for first = n, 1, -1000 do
    local last = math.max(first - 999, 1)
    local chunk = {}
    for i = first, last, -1 do chunk[#chunk + 1] = ids[i] end
    local msgs = redis.call('HMGET', entries, unpack(chunk))
    for j, m in ipairs(chunk) do
      if not msgs[j] then return false end
      local i = first - j + 1
      out[#out + 1], out[#out + 2], out[#out + 3] = ids[i], ps[i], msgs[j]
    end
  end
  return true
end

-- A user's shared conversation keys (KEYS[2] to KEYS[5]: entries, parents, index, expiry) expire with the last
-- record of the expiry set KEYS[5]; the records that expired by `now` leave it.
local function keep_alive(now)
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. now)
  local last = redis.call('ZRANGE', KEYS[5], -1, -1, 'WITHSCORES')[2]
  for k = 2, 5 do
    if not last or last == 'inf' then redis.call('PERSIST', KEYS[k]) else redis.call('PEXPIREAT', KEYS[k], last) end
  end
end
