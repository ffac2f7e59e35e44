-- A durable run stops for answers to its deferred tool calls and waits in Redis, held by no process: its flag
-- becomes `input:<run id>` until the wait's deadline, the wait is kept in the `input` hash, and its durable
-- record and checkpoint go (the stored conversation holds its messages). Its `input_required` event is written
-- here, with the wait: whoever reads it can answer at once. The stream is not ended.
-- KEYS: [1] live, [2] stream, [3] input, [4] durable, [5] checkpoint, [6] checkpoint messages, [7] runs.
-- ARGV: [1] the lease's token, [2] run_id, [3] wait_ms (until the deadline), [4] keep_ms (the deadline plus the
--   stream retention), [5] idx (the node), [6] deadline (ms since the epoch), [7] waited (messages stored),
--   [8] the job that goes on once answered (JSON: its fields), [9] maxlen, [10] the `input_required` body (JSON),
--   [11..] per call its id and `{tool_name, kind}`.
-- Returns LeaseState.HELD (it waits now, its event written), CANCEL_REQUESTED (a cancel came first: nothing
-- written, the run is to be ended as cancelled) or LOST (the lease is not this token's: nothing written).
local v = redis.call('GET', KEYS[1])
if not holds(v, ARGV[1]) then return $LeaseState.LOST end
if v ~= ARGV[1] then return $LeaseState.CANCEL_REQUESTED end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[9], '*', 'type', $EVENT, 'origin', $ORIGIN, 'body', ARGV[10])
written(KEYS[2])
redis.call('SET', KEYS[1], $INPUT .. ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5], KEYS[6])
redis.call('HSET', KEYS[3], 'run', ARGV[2], 'idx', ARGV[5], 'deadline', ARGV[6], 'waited', ARGV[7], 'job', ARGV[8],
  'state', 'waiting')
for i = 11, #ARGV, 2 do redis.call('HSET', KEYS[3], 'call:' .. ARGV[i], ARGV[i + 1]) end
for k = 2, 3 do redis.call('PEXPIRE', KEYS[k], ARGV[4]) end
if redis.call('PTTL', KEYS[7]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[7], ARGV[4]) end
return $LeaseState.HELD
