-- Lists which of a user's active sessions still have a run, and drops the others from the active set (in the
-- same script as the check, so a session that starts again meanwhile is kept).
-- KEYS: [1] active, then per session [3i-1] its live flag, [3i] durable key, [3i+1] checkpoint.
-- ARGV: [i] the session ids.
-- Returns per session its ActiveState (LIVE; CANCELLING, also a durable run between two workers marked
-- cancelled: the next one ends it; QUEUED; WAITING for input (answers to its deferred tool calls); RESUMING, a durable run between two workers: its worker died or
-- handed it back, and the next one has not taken it over yet; GONE: removed from the active set), then per
-- session its flag's run id (for RESUMING, `<run id>:<attempt>` of the attempt that ran last).
local states, runs = {}, {}
for i = 1, #ARGV do
  local v = redis.call('GET', KEYS[3 * i - 1])
  local state, run = $ActiveState.LIVE, v
  if not v then
    run = redis.call('GET', KEYS[3 * i])
    if run then
      state = $ActiveState.RESUMING
      local sep = string.find(run, ':', 1, true)
      if sep and redis.call('HEXISTS', KEYS[3 * i + 1], 'cancel:' .. string.sub(run, 1, sep - 1)) == 1 then
        state = $ActiveState.CANCELLING
      end
    else
      redis.call('ZREM', KEYS[1], ARGV[i])
      state, run = $ActiveState.GONE, ''
    end
  elseif string.sub(v, 1, #$CANCEL) == $CANCEL then
    state, run = $ActiveState.CANCELLING, string.sub(v, #$CANCEL + 1)
  elseif string.sub(v, 1, #$QUEUED) == $QUEUED then
    state, run = $ActiveState.QUEUED, string.sub(v, #$QUEUED + 1)
  elseif string.sub(v, 1, #$INPUT) == $INPUT then
    state, run = $ActiveState.WAITING, string.sub(v, #$INPUT + 1)
  end
  states[i], runs[i] = state, run
end
for i = 1, #runs do states[#ARGV + i] = runs[i] end
return states
