-- Reads a durable run's last checkpoint.
-- KEYS: [1] checkpoint, [2] checkpoint messages.
-- ARGV: [1] run_id.
-- Returns {idx, messages...} of the run's last checkpoint, or {} if it has none.
local c = redis.call('HMGET', KEYS[1], 'run', 'idx', 'count')
if c[1] ~= ARGV[1] then return {} end
local reply = {c[2]}
for _, m in ipairs(redis.call('LRANGE', KEYS[2], 0, tonumber(c[3]) - 1)) do reply[#reply + 1] = m end
return reply
