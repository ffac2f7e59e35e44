-- Appends to several sessions' streams, each fenced by its run's lease; the fences and the re-sent check are
-- one read each for all of them (MGET, XREAD), so a write costs 3 commands beside its XADDs, not 2 a stream.
-- KEYS: per session [2i-1] live, [2i] stream.
-- ARGV: [1] maxlen, [2] retention_ms (kept by the lease's renewal, not by every write), then per session its
--   run_id, the id of the last entry its writer knows it wrote, its entry count n and n (type, origin, body)
--   triples.
-- Returns per session the last id written, or '' if the run no longer holds the lease (then nothing is
-- written to that stream). Only the run holding the lease writes to its stream, so a stream that goes on past
-- the known id already holds this batch: the call is a copy re-sent by a retrying client after its reply was
-- lost, and writes nothing again.
local CHUNK = 1000 -- keys per read: `unpack` puts them all on Lua's stack
local sessions = {} -- per session: {stream key, run_id, known id, index of its first triple, n}
local a = 3
for k = 1, #KEYS, 2 do
  local n = tonumber(ARGV[a + 2])
  sessions[#sessions + 1] = {KEYS[k + 1], ARGV[a], ARGV[a + 1], a + 3, n}
  a = a + 3 + 3 * n
end
local held, ahead = {}, {}
for first = 1, #sessions, CHUNK do
  local last = math.min(first + CHUNK - 1, #sessions)
  local live = {}
  for i = first, last do live[#live + 1] = KEYS[2 * i - 1] end
  local flags = redis.call('MGET', unpack(live))
  local streams, known = {}, {}
  for i = first, last do
    local s = sessions[i]
    if holds(flags[i - first + 1], s[2]) then
      held[i] = true
      streams[#streams + 1], known[#known + 1] = s[1], s[3] ~= '' and s[3] or '0-0'
    end
  end
  if #streams > 0 then
    for _, id in ipairs(known) do streams[#streams + 1] = id end -- XREAD takes the keys, then their ids
    for _, stream in ipairs(redis.call('XREAD', 'COUNT', 1, 'STREAMS', unpack(streams)) or {}) do
      ahead[stream[1]] = true
    end
  end
end
local results = {}
for i, s in ipairs(sessions) do
  local id = ''
  if held[i] then
    if ahead[s[1]] then
      id = last_entry(s[1])[1]
    else
      -- Nothing follows the known id (or the stream is empty): the entries follow on from it. (A Redis Cluster's
      -- scripts tell nobody: nothing to carry.)
      local carried = $PUBLISH_WRITES == 1 and {s[3] ~= '' and s[3] or '0-0', bytes = 0} or nil
      for j = s[4], s[4] + 3 * (s[5] - 1), 3 do
        id = redis.call('XADD', s[1], 'MAXLEN', '~', ARGV[1], '*', 'type', ARGV[j], 'origin', ARGV[j + 1], 'body', ARGV[j + 2])
        carried = carry(carried, id, ARGV[j], ARGV[j + 1], ARGV[j + 2])
      end
      written(s[1], carried and table.concat(carried, '\0'))
    end
  end
  results[i] = id
end
return results
