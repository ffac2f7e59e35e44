-- Appends to several sessions' streams, each fenced by its run's lease.
-- KEYS: per session [2i-1] live, [2i] stream.
-- ARGV: [1] maxlen, [2] retention_ms (kept by the lease's renewal, not by every write), then per session its
--   run_id, the id of the last entry its writer knows it wrote, its entry count n and n (type, origin, body)
--   triples.
-- Returns per session the last id written, or '' if the run no longer holds the lease (then nothing is
-- written to that stream). Only the run holding the lease writes to its stream, so a stream that ends past
-- the known id already holds this batch: the call is a copy re-sent by a retrying client after its reply was
-- lost, and writes nothing again.
local results = {}
local a = 3
for k = 1, #KEYS, 2 do
  local run_id, known, n = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  a = a + 3
  local id = ''
  if holds(redis.call('GET', KEYS[k]), run_id) then
    local last = last_entry(KEYS[k + 1])
    if last and last[1] ~= known then
      id = last[1]
    else
      for i = a, a + 3 * (n - 1), 3 do
        id = redis.call('XADD', KEYS[k + 1], 'MAXLEN', '~', ARGV[1], '*',
          'type', ARGV[i], 'origin', ARGV[i + 1], 'body', ARGV[i + 2])
      end
    end
  end
  a = a + 3 * n
  results[#results + 1] = id
end
return results
