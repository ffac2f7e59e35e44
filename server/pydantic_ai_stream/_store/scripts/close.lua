-- Ends a run: writes its `end`, releases the live flag and keeps the stream `grace_ms`.
-- KEYS: [1] live, [2] stream, [3] active, [4] durable, [5] checkpoint, [6] checkpoint messages.
-- ARGV: [1] run_id (the lease's token), [2] maxlen, [3] grace_ms, [4] session_id, [5] end body.
-- Returns the id of `end`, also to a re-sent copy of the call that wrote it; false if the lease was lost.
if not holds(redis.call('GET', KEYS[1]), ARGV[1]) then
  local last = last_entry(KEYS[2])
  if is_end(last) and field(last, 'body') == ARGV[5] then return last[1] end
  return false
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
  'type', $END, 'origin', $ORIGIN, 'body', ARGV[5])
written(KEYS[2])
redis.call('DEL', KEYS[1], KEYS[4], KEYS[5], KEYS[6])
redis.call('ZREM', KEYS[3], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return id
