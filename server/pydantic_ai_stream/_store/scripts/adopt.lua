-- A worker takes a queued run's flag as its lease (the adopter kept in the checkpoint hash,
-- `adopted:<run id>`; the session listed as active, should a listing have dropped it meanwhile). The run's
-- attachments move into the checkpoint hash (`attachments:<run id>`), which lives as long as the run.
-- KEYS: [1] live, [2] stream, [3] durable, [4] checkpoint, [5] active, [6] the run's attachments, [7] input.
-- ARGV: [1] run_id, [2] lease_ms, [3] wait_ms, [4] the adopter (unique to one worker and job; '': none),
--   [5] session_id.
-- Returns {begin id, begin body, the stream's last id (its writer goes on after it: a run going on after a
-- wait for input has written more than its `begin`), '1' if the run goes on after its answered wait for input
-- (whichever of its jobs took it: one left unacknowledged by the worker it waited on may come first), else
-- '0'}, also to a re-sent copy of the call that took it (its reply was lost: the
-- same adopter finds the flag its own, the lease renewed, a cancel mark kept); {} if the run is no longer
-- queued (cancelled, expired, or adopted).
local v = redis.call('GET', KEYS[1])
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
if not first then return {} end
if v == $QUEUED .. ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  if ARGV[4] ~= '' then redis.call('HSET', KEYS[4], 'adopted:' .. ARGV[1], ARGV[4]) end
  local attachments = redis.call('GET', KEYS[6])
  if attachments then
    redis.call('HSET', KEYS[4], 'attachments:' .. ARGV[1], attachments)
    redis.call('DEL', KEYS[6])
  end
  if redis.call('EXISTS', KEYS[4]) == 1 and redis.call('PTTL', KEYS[4]) < 0 then
    redis.call('PEXPIRE', KEYS[4], ARGV[3])
  end
elseif ARGV[4] ~= '' and holds(v, ARGV[1]) and redis.call('HGET', KEYS[4], 'adopted:' .. ARGV[1]) == ARGV[4] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  return {}
end
redis.call('PEXPIRE', KEYS[3], ARGV[3])
redis.call('ZADD', KEYS[5], 'NX', string.match(first[1], '^%d+'), ARGV[5])
local input = redis.call('HMGET', KEYS[7], 'run', 'state')
local continues = (input[1] == ARGV[1] and input[2] == 'answered') and '1' or '0'
return {first[1], field(first, 'body') or '{}', last_entry(KEYS[2])[1], continues}
