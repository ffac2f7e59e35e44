-- Answers some or all of the deferred calls a run waits on. Once every call has an answer, the run is queued to
-- go on: its flag says `queued:<run id>` as for a run accepted, its durable record starts a new count of
-- attempts, and its job (kept in the `input` hash) is added again, marked to continue.
-- KEYS: [1] live, [2] stream, [3] input, [4] durable, [5] runs, [6] active, then to queue the job in the same
--   step (one Redis only: no cluster) [7] the scope's job stream, [8] the queue's scopes, [9] its turn, [10] its
--   ready stream (see `add_job`).
-- ARGV: [1] run_id, [2] queue wait_ms, [3] keep_ms (how long the answers are kept once the run goes on),
--   [4] maxlen, [5] session_id, [6] retention_ms, [7] the `input expired` error body, then per answer its call id,
--   'approval' or 'result', and the answer (canonical JSON).
-- Returns {RespondState, ...}: HELD with the ids of the calls still without an answer; CONTINUED (also to a retry
-- of the answers that completed them), with the job's JSON; UNKNOWN_CALL or WRONG_KIND with the call's id
-- (nothing written); CONFLICT with the id of a call already answered otherwise; NOT_WAITING (the run runs,
-- ended, or its wait expired: then its stream is ended here); NOT_FOUND (the session never had this run).
local run = ARGV[1]
if redis.call('HGET', KEYS[3], 'run') ~= run then
  if redis.call('HEXISTS', KEYS[5], run) == 1 then return {$RespondState.NOT_WAITING} end
  return {$RespondState.NOT_FOUND}
end
local state = redis.call('HGET', KEYS[3], 'state')
if redis.call('GET', KEYS[1]) ~= $INPUT .. run then
  if state == 'waiting' then  -- its deadline passed: nobody ended it yet
    redis.call('HSET', KEYS[3], 'state', 'expired')
    if not is_end(last_entry(KEYS[2])) and redis.call('EXISTS', KEYS[1]) == 0 then
      end_run(KEYS[2], ARGV[4], ARGV[7], cjson.encode({run_id = run}), KEYS[6], ARGV[5], ARGV[6])
    end
    return {$RespondState.NOT_WAITING}
  end
  if state ~= 'answered' then return {$RespondState.NOT_WAITING} end
  for i = 8, #ARGV, 3 do
    if redis.call('HGET', KEYS[3], 'answer:' .. ARGV[i]) ~= ARGV[i + 2] then return {$RespondState.NOT_WAITING} end
  end
  return {$RespondState.CONTINUED, redis.call('HGET', KEYS[3], 'job')}
end
for i = 8, #ARGV, 3 do
  local call = redis.call('HGET', KEYS[3], 'call:' .. ARGV[i])
  if not call then return {$RespondState.UNKNOWN_CALL, ARGV[i]} end
  if (cjson.decode(call).kind == 'approval') ~= (ARGV[i + 1] == 'approval') then
    return {$RespondState.WRONG_KIND, ARGV[i]}
  end
  local given = redis.call('HGET', KEYS[3], 'answer:' .. ARGV[i])
  if given and given ~= ARGV[i + 2] then return {$RespondState.CONFLICT, ARGV[i]} end
end
for i = 8, #ARGV, 3 do redis.call('HSET', KEYS[3], 'answer:' .. ARGV[i], ARGV[i + 2]) end
local pending = {$RespondState.HELD}
local fields = redis.call('HKEYS', KEYS[3])
for _, f in ipairs(fields) do
  if string.sub(f, 1, 5) == 'call:' and redis.call('HEXISTS', KEYS[3], 'answer:' .. string.sub(f, 6)) == 0 then
    pending[#pending + 1] = string.sub(f, 6)
  end
end
if #pending > 1 then return pending end
redis.call('HSET', KEYS[3], 'state', 'answered')
redis.call('SET', KEYS[1], $QUEUED .. run, 'PX', ARGV[2])
redis.call('SET', KEYS[4], run .. ':1', 'PX', ARGV[2])
if redis.call('PTTL', KEYS[3]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[3], ARGV[3]) end
local job = redis.call('HGET', KEYS[3], 'job')
if #KEYS > 6 then
  local values = {}
  for f, value in pairs(cjson.decode(job)) do values[#values + 1] = f; values[#values + 1] = value end
  values[#values + 1] = 'continues'; values[#values + 1] = '1'
  add_job_fields(KEYS[7], KEYS[8], KEYS[9], KEYS[10], values)
end
return {$RespondState.CONTINUED, job}
