-- Counts the run `member` as queued in its scope until `wait_ms` from now, unless the scope has `limit` queued
-- already (runs whose wait is over no longer count); also when it was counted already (a re-sent submit, a
-- waiting run that starts).
-- KEYS[1] queued: the scope's queued runs (a sorted set: member -> when its wait ends, in ms)
-- ARGV[1] member, ARGV[2] limit, ARGV[3] now_ms, ARGV[4] wait_ms
-- Returns $Reservation.COUNTED, or $Reservation.FULL (nothing written but the lapsed runs' removal).
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
local deadline = tonumber(ARGV[3]) + tonumber(ARGV[4])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], deadline, ARGV[1])
  return $Reservation.COUNTED
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return $Reservation.FULL end
redis.call('ZADD', KEYS[1], deadline, ARGV[1])
return $Reservation.COUNTED
