-- Keeps a durable run's progress, fenced by its lease.
-- KEYS: [1] live, [2] checkpoint, [3] checkpoint messages, [4] durable.
-- ARGV: [1] the lease's token, [2] run_id, [3] the node the run would resume from, [4] ttl_ms, [5] how many
--   messages the last checkpoint kept, [6..] the messages after those (JSON).
-- Returns LeaseState.HELD (kept), or LeaseState.LOST if the lease is not this token's (nothing kept).
if not holds(redis.call('GET', KEYS[1]), ARGV[1]) then return $LeaseState.LOST end
if redis.call('HGET', KEYS[2], 'run') ~= ARGV[2] then
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[2], 'run', ARGV[2])
end
local kept = tonumber(ARGV[5])
if redis.call('LLEN', KEYS[3]) > kept then redis.call('LTRIM', KEYS[3], 0, kept - 1) end
if #ARGV > 5 then redis.call('RPUSH', KEYS[3], unpack(ARGV, 6)) end
redis.call('HSET', KEYS[2], 'idx', ARGV[3], 'count', kept + #ARGV - 5)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
redis.call('PEXPIRE', KEYS[4], ARGV[4])
return $LeaseState.HELD
