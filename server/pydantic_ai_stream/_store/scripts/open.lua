-- Opens a run: takes the session's live flag and starts a fresh stream with the run's `begin`.
-- KEYS: [1] live, [2] stream, [3] active, [4] durable, then to queue the job in the same step (one Redis only:
--   no cluster) [5] the scope's job stream, [6] the scope's queued set, [7] the queue's scopes, [8] its turn,
--   [9] its ready stream (see `add_job`); last: the session's runs (see `SessionKeys.runs`).
-- ARGV: [1] run_id, [2] lease_ms, [3] session_id, [4] now_ms, [5] maxlen, [6] retention_ms, [7] begin body,
--   [8] the start of the begin body that names this session and run, [9] nonce of this start, [10] '1' to
--   queue the run (its flag then says `queued:<run id>` until a worker adopts it), and when queueing the job:
--   [11] the run's member in the queued set (scored by when it stops waiting: when its flag expires),
--   [12] the scope's limit, [13..] the job's fields and values.
-- Returns {OpenState, begin id}. The stream already starting with this run's `begin` means the run exists
-- (live, queued, or ended and kept), unless that `begin` carries our nonce: then this call is a re-sent copy
-- of the one that wrote it (its reply was lost) and it opened the run. A run of the session's runs exists
-- too, though another run replaced its stream since.
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
if first then
  local body, nonce = field(first, 'body'), field(first, 'nonce')
  if body and string.sub(body, 1, #ARGV[8]) == ARGV[8] then
    if nonce == ARGV[9] then return {$OpenState.OPENED, first[1]} end
    if redis.call('GET', KEYS[1]) == $QUEUED .. ARGV[1] then return {$OpenState.QUEUED, first[1]} end
    return {$OpenState.EXISTS, first[1]}
  end
end
local runs = KEYS[#KEYS]
local started = redis.call('HGET', runs, ARGV[1])
if started then return {$OpenState.EXISTS, started} end
local queued = #KEYS > 5 and KEYS[6] or nil
if queued then redis.call('ZREMRANGEBYSCORE', queued, '-inf', '(' .. ARGV[4]) end  -- runs no longer waiting
if queued and not redis.call('ZSCORE', queued, ARGV[11]) and redis.call('ZCARD', queued) >= tonumber(ARGV[12]) then
  return {$OpenState.FULL, ''}
end
-- A durable run between two workers (its flag lapsed, its record kept for the next one) holds the session.
local d = redis.call('GET', KEYS[4])
if d and redis.call('EXISTS', KEYS[1]) == 0 then
  if string.sub(d, 1, #ARGV[1] + 1) == ARGV[1] .. ':' then return {$OpenState.EXISTS, first and first[1] or ''} end
  return {$OpenState.BUSY, ''}
end
local flag = ARGV[10] == '1' and $QUEUED .. ARGV[1] or ARGV[1]
if not redis.call('SET', KEYS[1], flag, 'NX', 'PX', ARGV[2]) then
  local v = redis.call('GET', KEYS[1])
  -- Our run, though its `begin` was trimmed away: it exists.
  for _, mark in ipairs({'', $CANCEL, $QUEUED, $INPUT}) do
    if is_run(v, mark .. ARGV[1]) then return {$OpenState.EXISTS, first and first[1] or ''} end
  end
  return {$OpenState.BUSY, ''}
end
-- The new run's ids come after every id of the stream it replaces (one written in this very millisecond
-- too): an id names one entry of the session, whichever run wrote it.
local id = '*'
local prev = last_entry(KEYS[2])
if prev then
  local ms, seq = string.match(prev[1], '^(%d+)-(%d+)$$')
  local t = redis.call('TIME')
  if tonumber(ms) >= tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) then
    id = ms .. '-' .. (tonumber(seq) + 1)
  end
end
redis.call('DEL', KEYS[2])
id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], id,
  'type', $BEGIN, 'origin', $ORIGIN, 'body', ARGV[7], 'nonce', ARGV[9])
written(KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('HSET', runs, ARGV[1], id)
redis.call('PEXPIRE', runs, ARGV[6])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
if ARGV[10] == '1' then
  redis.call('SET', KEYS[4], ARGV[1] .. ':1', 'PX', ARGV[2])
else
  redis.call('DEL', KEYS[4])
end
if queued then
  add_job(KEYS[5], KEYS[7], KEYS[8], KEYS[9], 13)
  redis.call('ZADD', queued, tonumber(ARGV[4]) + tonumber(ARGV[2]), ARGV[11])
end
return {$OpenState.OPENED, id}
