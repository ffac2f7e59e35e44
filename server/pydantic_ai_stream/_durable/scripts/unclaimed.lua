-- Jobs no worker has claimed yet: those of every scope's job stream, and those in the queue not delivered to
-- a worker.
-- KEYS[1] queue: the stream of jobs claimed; KEYS[2] scopes: the scopes with jobs waiting (their job streams)
-- ARGV[1] group
-- Returns their number.
local n = 0
for _, scope in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do n = n + redis.call('XLEN', scope) end
local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1])
local claimed = type(pending) == 'table' and not pending.err and pending[1] or 0
return n + math.max(0, redis.call('XLEN', KEYS[1]) - claimed)
