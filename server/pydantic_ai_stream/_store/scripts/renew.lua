-- Extends the leases still held, their streams' retention, and by `wait_ms` the runs waiting behind them and
-- a durable run's record (what a worker resumes it from if this one dies): those live as long as the run,
-- not as `wait_ms` from its start.
-- KEYS: per session [6i-5] live, [6i-4] stream, [6i-3] waiting, [6i-2] durable, [6i-1] checkpoint,
--   [6i] checkpoint messages.
-- ARGV: [1] lease_ms, [2] retention_ms, [3] wait_ms, then per session [2i+2] its run_id and [2i+3] '1' if
--   the run is durable.
-- Returns {a LeaseState per session, per session the ids of the runs waiting behind it}.
local states, waiting = {}, {}
for i = 1, #KEYS / 6 do
  local k = 6 * (i - 1)
  local v = redis.call('GET', KEYS[k + 1])
  local run_id = ARGV[2 * i + 2]
  local state = $LeaseState.LOST
  if v == run_id then state = $LeaseState.HELD elseif v == $CANCEL .. run_id then state = $LeaseState.CANCEL_REQUESTED end
  local behind = {}
  if state ~= $LeaseState.LOST then
    redis.call('PEXPIRE', KEYS[k + 1], ARGV[1])
    redis.call('PEXPIRE', KEYS[k + 2], ARGV[2])
    if redis.call('PEXPIRE', KEYS[k + 3], ARGV[3]) == 1 then
      for _, item in ipairs(redis.call('LRANGE', KEYS[k + 3], 0, -1)) do
        behind[#behind + 1] = cjson.decode(item).run_id
      end
    end
    if ARGV[2 * i + 3] == '1' then
      for d = 4, 6 do redis.call('PEXPIRE', KEYS[k + d], ARGV[3]) end
    end
  end
  states[i], waiting[i] = state, behind
end
return {states, waiting}
