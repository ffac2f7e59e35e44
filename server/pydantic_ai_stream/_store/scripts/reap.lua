-- Ends the streams whose run died: no live flag, yet the last entry is not `end`; a durable run is not dead
-- while its durable key lives (a worker resumes it). A run whose wait for input passed its deadline (its flag
-- lapsed, its last entry is `input_required`, its wait not answered) ends with the `input expired` error.
-- KEYS: per session [5i-4] live, [5i-3] stream, [5i-2] active, [5i-1] durable, [5i] input.
-- ARGV: [1] maxlen, [2] grace_ms, [3] error body, [4] the expired wait's error body, [4+i] the session ids.
-- Returns per session -1 if it ended the stream, else how many ms its run lives on at least: the longer time to
-- live of its live flag and durable key (0: not known). Until then, only a deletion could find it dead.
local done = {}
for i = 1, #KEYS / 5 do
  local live, stream, active, durable, input = KEYS[5 * i - 4], KEYS[5 * i - 3], KEYS[5 * i - 2], KEYS[5 * i - 1],
    KEYS[5 * i]
  local lives = math.max(redis.call('PTTL', live), redis.call('PTTL', durable))
  done[i] = math.max(lives, 0)
  if lives == -2 then
    local last = last_entry(stream)
    if last and not is_end(last) then
      local error_body, end_body = ARGV[3], '{}'
      if field(last, 'type') == $EVENT and redis.call('HGET', input, 'state') == 'waiting' then
        local ok, body = pcall(cjson.decode, field(last, 'body') or '')
        if ok and type(body) == 'table' and body.event == $INPUT_REQUIRED then
          local run = redis.call('HGET', input, 'run')
          redis.call('HSET', input, 'state', 'expired')
          error_body, end_body = ARGV[4], cjson.encode({run_id = run})
        end
      end
      end_run(stream, ARGV[1], error_body, end_body, active, ARGV[i + 4], ARGV[2])
      done[i] = -1
    end
  end
end
return done
