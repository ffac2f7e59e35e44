-- A conversation's record and its history (from the record's head, or from the head given), in one call.
-- KEYS[1] entries (id -> message), KEYS[2] parents (id -> parent id): the user's; KEYS[3] the conversation's
-- record, to read it too (optional)
-- ARGV[1] limit (-1: all), ARGV[2] the head (without a record)
-- Returns {} without a record; {$ReadState.LEGACY, value} for a record the previous release stored; else
-- {$ReadState.OK or $ReadState.MISSING, record or '', then id, parent, message of each entry, oldest first}.
local record, head = '', ARGV[2]
if KEYS[3] then
  record = redis.call('GET', KEYS[3])
  if not record then return {} end
  if string.sub(record, 1, 1) == '[' then return {$ReadState.LEGACY, record} end
  head = cjson.decode(record)['head_id']
  if type(head) ~= 'string' then head = '' end
end
local out = {$ReadState.OK, record}
local ids, ps = walk(KEYS[2], head, tonumber(ARGV[1]))
if not ids or not triples(KEYS[1], ids, ps, out) then return {$ReadState.MISSING, record} end
return out
