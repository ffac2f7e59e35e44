-- Asks a session's run to stop.
-- KEYS: [1] live, [2] stream, [3] active, [4] rollback, [5] durable, [6] checkpoint, [7] input.
-- ARGV: [1] cancel channel, [2] maxlen, [3] retention_ms, [4] session_id, [5] the `canceled` error body,
--   [6] '1' to roll the run back, [7] the only run id to cancel ('': whichever run).
-- Returns {CancelState, run id}. A running run's flag is marked cancelled and its process told (rolled back:
-- its id is kept in the rollback key, so it saves nothing): SIGNALLED. A durable run is also marked in its
-- checkpoint hash (`cancel:<run id>`: `keep` or `rollback`), which outlives its worker's lease: the worker that
-- takes it over ends it rather than resume it; so is one whose worker died, its flag lapsed (also SIGNALLED).
-- A queued run, or one waiting for input (its wait marked `cancelled`, or `rolled_back`: the next run drops its
-- saved messages), is ended here and now (`error` + `end`,
-- flag released): ENDED. A cancel naming a run already
-- cancelled (a retry whose reply was lost): ALREADY. Else (no run, another run than the one named, or one
-- already asked): {NONE, ''}.
local named = ARGV[7]
local d = redis.call('GET', KEYS[5])
local durable = d and string.find(d, ':', 1, true) and string.sub(d, 1, string.find(d, ':', 1, true) - 1)
local v = redis.call('GET', KEYS[1])
if not v then
  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 2)
  if durable and last[1] and not is_end(last[1]) and (named == '' or named == durable) then
    if redis.call('HGET', KEYS[6], 'cancel:' .. durable) then
      return named == '' and {$CancelState.NONE, ''} or {$CancelState.ALREADY, durable}
    end
    v = durable
  elseif named ~= '' and #last == 2 and is_end(last[1]) and field(last[2], 'type') == $ERROR
      and cjson.decode(field(last[1], 'body') or '{}').run_id == named
      and cjson.decode(field(last[2], 'body') or '{}').msg == 'canceled' then
    return {$CancelState.ALREADY, named}
  else
    return {$CancelState.NONE, ''}
  end
elseif string.sub(v, 1, #$CANCEL) == $CANCEL then
  if named ~= '' and is_run(string.sub(v, #$CANCEL + 1), named) then return {$CancelState.ALREADY, named} end
  return {$CancelState.NONE, ''}
else
  if named ~= '' then
    local held = v
    if string.sub(held, 1, #$QUEUED) == $QUEUED then held = string.sub(held, #$QUEUED + 1) end
    if string.sub(held, 1, #$INPUT) == $INPUT then held = string.sub(held, #$INPUT + 1) end
    if not is_run(held, named) then return {$CancelState.NONE, ''} end
  end
  if string.sub(v, 1, #$INPUT) == $INPUT then
    local run = string.sub(v, #$INPUT + 1)
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[7], 'state', ARGV[6] == '1' and 'rolled_back' or 'cancelled')
    end_run(KEYS[2], ARGV[2], ARGV[5], cjson.encode({run_id = run}), KEYS[3], ARGV[4], ARGV[3])
    return {$CancelState.ENDED, run}
  end
  if string.sub(v, 1, #$QUEUED) == $QUEUED then
    local run = string.sub(v, #$QUEUED + 1)
    redis.call('DEL', KEYS[1], KEYS[5])
    end_run(KEYS[2], ARGV[2], ARGV[5], cjson.encode({run_id = run}), KEYS[3], ARGV[4], ARGV[3])
    return {$CancelState.ENDED, run}
  end
  if ARGV[6] == '1' then redis.call('SET', KEYS[4], v, 'PX', ARGV[3]) end
  redis.call('SET', KEYS[1], $CANCEL .. v, 'KEEPTTL')
  redis.call('PUBLISH', ARGV[1], KEYS[1])
end
if durable and is_run(v, durable) then
  redis.call('HSET', KEYS[6], 'cancel:' .. durable, ARGV[6] == '1' and 'rollback' or 'keep')
  local ttl = redis.call('PTTL', KEYS[5])
  if redis.call('PTTL', KEYS[6]) < 0 and ttl > 0 then redis.call('PEXPIRE', KEYS[6], ttl) end
end
return {$CancelState.SIGNALLED, v}
