-- A worker takes over a durable run whose worker's lease lapsed: the flag becomes `<run id>:<attempt>` (the
-- old attempt's writes are refused from now on) and a `resumed` event marks where the stream goes on: the
-- node of the run's last checkpoint (0 without one).
-- KEYS: [1] live, [2] stream, [3] active, [4] durable, [5] checkpoint, [6] checkpoint messages, [7] rollback.
-- ARGV: [1] run_id, [2] lease_ms, [3] max attempts, [4] maxlen, [5] retention_ms, [6] session_id, [7] wait_ms,
--   [8] the error body of a run out of attempts.
-- Returns {attempt, begin id, begin body, marker id, 0}; for a run marked cancelled (see `cancel.lua`), the
-- flag is `cancel:<run id>:<attempt>` for its worker to end it, nothing is written and the marker id is the
-- stream's last: {attempt, begin id, begin body, last id, 1}; {Recovery.HELD, ms left} if a worker still holds
-- its flag (in the same script, so a lease lapsing meanwhile is never taken for the run being over);
-- {Recovery.NOTHING} if there is nothing to resume (the run ended; out of attempts, it is ended with `error` +
-- `end`: attempts its workers handed back on shutdown do not count).
local d = redis.call('GET', KEYS[4])
if not d then return {$Recovery.NOTHING} end
local sep = string.find(d, ':', 1, true)
if not sep or string.sub(d, 1, sep - 1) ~= ARGV[1] then return {$Recovery.NOTHING} end
if redis.call('EXISTS', KEYS[1]) == 1 then return {$Recovery.HELD, math.max(redis.call('PTTL', KEYS[1]), 0)} end
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
local last = last_entry(KEYS[2])
if not last or is_end(last) then
  redis.call('DEL', KEYS[4], KEYS[5], KEYS[6])
  return {$Recovery.NOTHING}
end
local attempt = tonumber(string.sub(d, sep + 1)) + 1
local token = ARGV[1] .. ':' .. attempt
local body = field(first, 'body') or '{}'
local cancelled = redis.call('HGET', KEYS[5], 'cancel:' .. ARGV[1])
if cancelled then
  redis.call('SET', KEYS[1], $CANCEL .. token, 'PX', ARGV[2])
  redis.call('SET', KEYS[4], token, 'PX', ARGV[7])
  if cancelled == 'rollback' then redis.call('SET', KEYS[7], token, 'PX', ARGV[5]) end
  return {attempt, first[1], body, last[1], 1}
end
local handed = tonumber(redis.call('HGET', KEYS[5], 'handed:' .. ARGV[1]) or '0')
if attempt - handed > tonumber(ARGV[3]) then
  redis.call('DEL', KEYS[4], KEYS[5], KEYS[6])
  end_run(KEYS[2], ARGV[4], ARGV[8], cjson.encode({run_id = ARGV[1]}), KEYS[3], ARGV[6], ARGV[5])
  return {$Recovery.NOTHING}
end
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
redis.call('SET', KEYS[4], token, 'PX', ARGV[7])
redis.call('ZADD', KEYS[3], 'NX', string.match(first[1], '^%d+'), ARGV[6])  -- should a listing have dropped it
local checkpoint = redis.call('HMGET', KEYS[5], 'run', 'idx')
local idx = 0
if checkpoint[1] == ARGV[1] then idx = tonumber(checkpoint[2]) end
local marker = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'type', $EVENT, 'origin', $ORIGIN,
  'body', '{"idx":' .. idx .. ',"event":"resumed","attempt":' .. attempt .. '}')
written(KEYS[2])
return {attempt, first[1], body, marker, 0}
