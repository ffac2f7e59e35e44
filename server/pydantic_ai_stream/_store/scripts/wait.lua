-- Puts a run behind the session's run (also one between two workers).
-- KEYS: [1] live, [2] waiting, [3] durable.
-- ARGV: [1] run_id, [2] the waiting run (JSON with its `run_id`), [3] ttl_ms, [4] '1' to put it first in line.
-- Returns WaitState: WAITING if it now waits, ALREADY if it already did (a re-sent call), NO_RUN if the
-- session has no run (it ended meanwhile: start this one instead).
if redis.call('EXISTS', KEYS[1], KEYS[3]) == 0 then return $WaitState.NO_RUN end
for _, item in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  if cjson.decode(item).run_id == ARGV[1] then return $WaitState.ALREADY end
end
redis.call(ARGV[4] == '1' and 'LPUSH' or 'RPUSH', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return $WaitState.WAITING
