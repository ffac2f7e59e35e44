-- Up to `count` jobs, now `consumer`'s: first those already in the queue (added by a version without scopes'
-- turns), then one of the scope whose turn is next, at a time, each moved into the queue; the scope's next
-- turn comes after every other scope's. Wakes another worker when jobs are left and this one took all it could.
-- KEYS[1] queue: the stream of jobs claimed (one consumer group); KEYS[2] scopes: the scopes with jobs waiting
-- (a sorted set of their job streams, by turn); KEYS[3] turn: the turn counter; KEYS[4] ready: the wake-ups
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] count
-- Returns the jobs as XREADGROUP gives them: {{id, {field, value, ...}}, ...}.
local n = tonumber(ARGV[3])
local function read(count)
  local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', count, 'STREAMS', KEYS[1], '>')
  return reply and reply[1][2] or {}
end
local jobs = read(n)
local moved = 0
while #jobs + moved < n do
  local turn = redis.call('ZPOPMIN', KEYS[2])
  if not turn[1] then break end
  local scope = turn[1]
  local job = redis.call('XRANGE', scope, '-', '+', 'COUNT', 1)[1]
  if job then
    redis.call('XDEL', scope, job[1])
    redis.call('XADD', KEYS[1], '*', unpack(job[2]))
    moved = moved + 1
  end
  if redis.call('XLEN', scope) > 0 then
    redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), scope)
  else
    redis.call('DEL', scope)
  end
end
if moved > 0 then
  for _, job in ipairs(read(moved)) do jobs[#jobs + 1] = job end
end
if #jobs == n and redis.call('ZCARD', KEYS[2]) > 0 then
  wake(KEYS[4])
end
return jobs
