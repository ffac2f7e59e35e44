-- Lets go of a durable run without ending it (its worker stops and hands it back): another worker resumes it
-- within `wait_ms` (its durable key and checkpoint live that long from now). The hand-back is counted (in the
-- checkpoint hash, under the run's id) so that it does not use up one of the run's attempts.
-- KEYS: [1] live, [2] checkpoint, [3] durable, [4] checkpoint messages.
-- ARGV: [1] the lease's token, [2] run_id, [3] wait_ms.
-- Returns LeaseState.HELD if the lease was still this token's (and is let go now), else LeaseState.LOST.
if not holds(redis.call('GET', KEYS[1]), ARGV[1]) then return $LeaseState.LOST end
redis.call('DEL', KEYS[1])
redis.call('HINCRBY', KEYS[2], 'handed:' .. ARGV[2], 1)
for k = 2, 4 do redis.call('PEXPIRE', KEYS[k], ARGV[3]) end
return $LeaseState.HELD
