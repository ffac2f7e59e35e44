"""Every Redis command the package sends: the session stream, its live lease, the active set.

Writes that must hold the run's lease are Lua scripts that check the live flag first (a fencing
token), so a run whose lease has expired can never write after the `end` someone else wrote.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NamedTuple, TypeAlias, TypeVar

from redis.asyncio import ConnectionPool, Redis, RedisCluster
from typing_extensions import TypeIs

from .._core.entry import Entry, StreamBounds, decode, entry_type, trimmed_past
from .._core.errors import CursorExpiredError
from .._core.keys import SessionKeys
from .._core.names import BEGIN, CANCEL_MARK, ORIGIN_STREAM, RUN_LOST, lua
from .scripts import READY_MAXLEN, LuaScript

__all__ = [
    "ADD_JOB_LUA",
    "READY_MAXLEN",
    "ActiveRun",
    "AsyncRedis",
    "CancelState",
    "Enqueue",
    "Held",
    "LeaseState",
    "LuaScript",
    "OpenState",
    "PendingEntry",
    "RawEntry",
    "Recovered",
    "Renewal",
    "SessionStream",
    "active_members",
    "active_sessions",
    "append_many",
    "is_cluster",
    "own_pool",
    "reap_many",
    "renew_many",
    "xread_entries_by_key",
]

AsyncRedis: TypeAlias = "Redis | RedisCluster"
_T = TypeVar("_T")
_R = TypeVar("_R")


# Lua `add_job(jobs, scopes, turn, ready, first)`: adds the job whose fields and values are ARGV[first..] to
# the scope's job stream `jobs`; a scope that had none waiting takes its turn after every other scope's (the
# sorted set `scopes`, scored by the counter `turn`), and one worker waiting on the stream `ready` wakes.
ADD_JOB_LUA = f"""
local function add_job(jobs, scopes, turn, ready, first)
  redis.call('XADD', jobs, '*', unpack(ARGV, first))
  if not redis.call('ZSCORE', scopes, jobs) then redis.call('ZADD', scopes, redis.call('INCR', turn), jobs) end
  redis.call('XADD', ready, 'MAXLEN', '~', {READY_MAXLEN}, '*', 'job', '1')
end
"""

# KEYS: live, stream, active, durable, and to queue the job too (one Redis only: no cluster) the scope's job
# stream, the scope's queued set, and the queue's scopes, turn and ready keys (see `add_job`).
# ARGV: run_id, lease_ms, session_id, now_ms, maxlen, retention_ms, begin body, the
# start of the begin body that names this session and run, nonce of this start, '1' to queue the run (its
# flag then says `queued:<run id>` until a worker adopts it), the run's member in the queued set (scored by
# when it stops waiting: when its flag expires), the scope's limit, then the job's fields and values. The last
# key is the session's runs (see `SessionKeys.runs`).
# Returns {OpenState, begin id}. The stream already starting with this run's `begin` means the run
# exists (live, queued, or ended and kept), unless that `begin` carries our nonce: then this call is a
# re-sent copy of the one that wrote it (its reply was lost) and it opened the run. A run of the session's
# runs exists too, though another run replaced its stream since.
_OPEN = LuaScript(
    lua(
        ADD_JOB_LUA
        + """
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
if first then
  local fields, body, nonce = first[2], nil, nil
  for f = 1, #fields, 2 do
    if fields[f] == 'body' then body = fields[f + 1] elseif fields[f] == 'nonce' then nonce = fields[f + 1] end
  end
  if body and string.sub(body, 1, #ARGV[8]) == ARGV[8] then
    if nonce == ARGV[9] then return {1, first[1]} end
    if redis.call('GET', KEYS[1]) == $QUEUED .. ARGV[1] then return {3, first[1]} end
    return {2, first[1]}
  end
end
local runs = KEYS[#KEYS]
local started = redis.call('HGET', runs, ARGV[1])
if started then return {2, started} end
local queued = #KEYS > 5 and KEYS[6] or nil
if queued then redis.call('ZREMRANGEBYSCORE', queued, '-inf', '(' .. ARGV[4]) end  -- runs no longer waiting
if queued and not redis.call('ZSCORE', queued, ARGV[11]) and redis.call('ZCARD', queued) >= tonumber(ARGV[12]) then
  return {4, ''}
end
-- A durable run between two workers (its flag lapsed, its record kept for the next one) holds the session.
local d = redis.call('GET', KEYS[4])
if d and redis.call('EXISTS', KEYS[1]) == 0 then
  if string.sub(d, 1, #ARGV[1] + 1) == ARGV[1] .. ':' then return {2, first and first[1] or ''} end
  return {0, ''}
end
local flag = ARGV[10] == '1' and $QUEUED .. ARGV[1] or ARGV[1]
if not redis.call('SET', KEYS[1], flag, 'NX', 'PX', ARGV[2]) then
  local v = redis.call('GET', KEYS[1])
  -- Our run, though its `begin` was trimmed away: it exists.
  for _, mark in ipairs({'', $CANCEL, $QUEUED}) do
    local run = mark .. ARGV[1]
    if v == run or string.sub(v, 1, #run + 1) == run .. ':' then return {2, first and first[1] or ''} end
  end
  return {0, ''}
end
-- The new run's ids come after every id of the stream it replaces (one written in this very millisecond
-- too): an id names one entry of the session, whichever run wrote it.
local id = '*'
local prev = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
if prev then
  local ms, seq = string.match(prev[1], '^(%d+)-(%d+)$$')
  local t = redis.call('TIME')
  if tonumber(ms) >= tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) then
    id = ms .. '-' .. (tonumber(seq) + 1)
  end
end
redis.call('DEL', KEYS[2])
id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], id,
  'type', $BEGIN, 'origin', $ORIGIN, 'body', ARGV[7], 'nonce', ARGV[9])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('HSET', runs, ARGV[1], id)
redis.call('PEXPIRE', runs, ARGV[6])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
if ARGV[10] == '1' then
  redis.call('SET', KEYS[4], ARGV[1] .. ':1', 'PX', ARGV[2])
else
  redis.call('DEL', KEYS[4])
end
if queued then
  add_job(KEYS[5], KEYS[7], KEYS[8], KEYS[9], 13)
  redis.call('ZADD', queued, tonumber(ARGV[4]) + tonumber(ARGV[2]), ARGV[11])
end
return {1, id}
"""
    )
)

# KEYS: (live, stream) of each session. ARGV: maxlen, retention_ms, then per session its run_id, the id
# of the last entry its writer knows it wrote, its entry count n and n (type, origin, body) triples.
# Returns per session the last id written, or '' if the run no longer holds the lease (then nothing is
# written to that stream). Only the run holding the lease writes to its stream, so a stream that ends
# past the known id already holds this batch: the call is a copy re-sent by a retrying client after
# its reply was lost, and writes nothing again. The stream's retention is kept by the lease renewal
# (RENEW), not by every write.
_APPEND = LuaScript(
    lua("""
local results = {}
local a = 3
for k = 1, #KEYS, 2 do
  local run_id, known, n = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  a = a + 3
  local v = redis.call('GET', KEYS[k])
  local id = ''
  if v == run_id or v == $CANCEL .. run_id then
    local last = redis.call('XREVRANGE', KEYS[k + 1], '+', '-', 'COUNT', 1)[1]
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
""")
)

# KEYS: live, stream, active, durable, checkpoint, checkpoint messages. ARGV: run_id (the lease's token), maxlen,
# grace_ms, session_id, end body. Returns the id of `end`, also to a re-sent copy of the call that wrote it;
# false if the lease was lost.
_CLOSE = LuaScript(
    lua("""
local v = redis.call('GET', KEYS[1])
if v ~= ARGV[1] and v ~= $CANCEL .. ARGV[1] then
  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
  if last then
    local fields, ours = last[2], 0
    for f = 1, #fields, 2 do
      if (fields[f] == 'type' and fields[f + 1] == $END) or (fields[f] == 'body' and fields[f + 1] == ARGV[5]) then
        ours = ours + 1
      end
    end
    if ours == 2 then return last[1] end
  end
  return false
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
  'type', $END, 'origin', $ORIGIN, 'body', ARGV[5])
redis.call('DEL', KEYS[1], KEYS[4], KEYS[5], KEYS[6])
redis.call('ZREM', KEYS[3], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return id
""")
)

# KEYS: live, checkpoint, durable, checkpoint messages. ARGV: the lease's token, run_id, wait_ms. Lets go of a
# durable run without ending it (its worker stops and hands it back): another worker resumes it, within
# `wait_ms` (its durable key and checkpoint live that long from now). The hand-back is counted (in the
# checkpoint hash, under the run's id) so that it does not use up one of the run's attempts. Returns 1 if the
# lease was still this token's.
_HAND_BACK = LuaScript(
    lua("""
local v = redis.call('GET', KEYS[1])
if v ~= ARGV[1] and v ~= $CANCEL .. ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HINCRBY', KEYS[2], 'handed:' .. ARGV[2], 1)
for k = 2, 4 do redis.call('PEXPIRE', KEYS[k], ARGV[3]) end
return 1
""")
)

# KEYS: live, checkpoint, checkpoint messages, durable. ARGV: the lease's token, run_id, the node the run would
# resume from, ttl_ms, how many messages the last checkpoint kept, then the messages after those (JSON).
# Keeps a durable run's progress, fenced by its lease: returns 1, or 0 if the lease is not this token's.
_CHECKPOINT = LuaScript(
    lua("""
local v = redis.call('GET', KEYS[1])
if v ~= ARGV[1] and v ~= $CANCEL .. ARGV[1] then return 0 end
if redis.call('HGET', KEYS[2], 'run') ~= ARGV[2] then
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[2], 'run', ARGV[2])
end
local kept = tonumber(ARGV[5])
if redis.call('LLEN', KEYS[3]) > kept then redis.call('LTRIM', KEYS[3], 0, kept - 1) end
if #ARGV > 5 then redis.call('RPUSH', KEYS[3], unpack(ARGV, 6)) end
redis.call('HSET', KEYS[2], 'idx', ARGV[3], 'count', kept + #ARGV - 5)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
redis.call('PEXPIRE', KEYS[4], ARGV[4])
return 1
""")
)

# KEYS: checkpoint, checkpoint messages. ARGV: run_id. Returns {idx, messages...} of the run's last
# checkpoint, or {} if it has none.
_LOAD_CHECKPOINT = LuaScript(
    lua("""
local c = redis.call('HMGET', KEYS[1], 'run', 'idx', 'count')
if c[1] ~= ARGV[1] then return {} end
local reply = {c[2]}
for _, m in ipairs(redis.call('LRANGE', KEYS[2], 0, tonumber(c[3]) - 1)) do reply[#reply + 1] = m end
return reply
""")
)

# KEYS: live, waiting, durable. ARGV: run_id, the waiting run (JSON with its `run_id`), ttl_ms, '1' to put it
# first in line. Puts a run behind the session's run (also one between two workers): 1 if it now waits, 2 if it
# already did (a re-sent call), 0 if the session has no run (it ended meanwhile: start this one instead).
_WAIT = LuaScript(
    lua("""
if redis.call('EXISTS', KEYS[1], KEYS[3]) == 0 then return 0 end
for _, item in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  if cjson.decode(item).run_id == ARGV[1] then return 2 end
end
redis.call(ARGV[4] == '1' and 'LPUSH' or 'RPUSH', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
""")
)

# KEYS: (live, stream, waiting, durable, checkpoint, checkpoint messages) of each session. ARGV: lease_ms,
# retention_ms, wait_ms, then per session its run_id and '1' if the run is durable. Extends the leases still
# held, their streams' retention, and by `wait_ms` the runs waiting behind them and a durable run's record
# (what a worker resumes it from if this one dies): those live as long as the run, not as `wait_ms` from its
# start. Returns {a LeaseState per session, per session the ids of the runs waiting behind it}.
_RENEW = LuaScript(
    lua("""
local states, waiting = {}, {}
for i = 1, #KEYS / 6 do
  local k = 6 * (i - 1)
  local v = redis.call('GET', KEYS[k + 1])
  local run_id = ARGV[2 * i + 2]
  local state = 0
  if v == run_id then state = 1 elseif v == $CANCEL .. run_id then state = 2 end
  local behind = {}
  if state > 0 then
    redis.call('PEXPIRE', KEYS[k + 1], ARGV[1])
    redis.call('PEXPIRE', KEYS[k + 2], ARGV[2])
    if redis.call('PEXPIRE', KEYS[k + 3], ARGV[3]) == 1 then
      for _, item in ipairs(redis.call('LRANGE', KEYS[k + 3], 0, -1)) do
        behind[#behind + 1] = cjson.decode(item).run_id
      end
    end
    if ARGV[2 * i + 3] == '1' then
      for d = 4, 6 do redis.call('PEXPIRE', KEYS[k + d], ARGV[3]) end
    end
  end
  states[i], waiting[i] = state, behind
end
return {states, waiting}
""")
)

# KEYS: live, stream, active, rollback, durable, checkpoint. ARGV: cancel channel, maxlen, retention_ms,
# session_id, the `canceled` error body, '1' to roll the run back, the only run id to cancel ('': whichever run).
# A running run's flag is marked cancelled and its process told (rolled back: its id is kept in the rollback
# key, so it saves nothing): returns {1, run id}. A durable run is also marked in its checkpoint hash
# (`cancel:<run id>`: `keep` or `rollback`), which outlives its worker's lease: the worker that takes it
# over ends it rather than resume it; so is one whose worker died, its flag lapsed (also {1, run id}). A
# queued run is ended here and now (`error` + `end`, flag released): returns {2, run id}. A cancel naming a
# run already cancelled (a retry whose reply was lost) returns {3, run id}. Else (no run, another run than
# the one named, or one already asked): {0, ''}.
_CANCEL = LuaScript(
    lua("""
local named = ARGV[7]
local function is_run(value, run) return value == run or string.sub(value, 1, #run + 1) == run .. ':' end
local function field(entry, name)
  for f = 1, #entry[2], 2 do if entry[2][f] == name then return entry[2][f + 1] end end
  return nil
end
local d = redis.call('GET', KEYS[5])
local durable = d and string.find(d, ':', 1, true) and string.sub(d, 1, string.find(d, ':', 1, true) - 1)
local v = redis.call('GET', KEYS[1])
if not v then
  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 2)
  if durable and last[1] and field(last[1], 'type') ~= $END and (named == '' or named == durable) then
    if redis.call('HGET', KEYS[6], 'cancel:' .. durable) then return named == '' and {0, ''} or {3, durable} end
    v = durable
  elseif named ~= '' and #last == 2 and field(last[1], 'type') == $END and field(last[2], 'type') == $ERROR
      and cjson.decode(field(last[1], 'body') or '{}').run_id == named
      and cjson.decode(field(last[2], 'body') or '{}').msg == 'canceled' then
    return {3, named}
  else
    return {0, ''}
  end
elseif string.sub(v, 1, #$CANCEL) == $CANCEL then
  if named ~= '' and is_run(string.sub(v, #$CANCEL + 1), named) then return {3, named} end
  return {0, ''}
else
  if named ~= '' then
    local held = v
    if string.sub(held, 1, #$QUEUED) == $QUEUED then held = string.sub(held, #$QUEUED + 1) end
    if not is_run(held, named) then return {0, ''} end
  end
  if string.sub(v, 1, #$QUEUED) == $QUEUED then
    local run = string.sub(v, #$QUEUED + 1)
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'type', $ERROR, 'origin', $ORIGIN, 'body', ARGV[5])
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'type', $END, 'origin', $ORIGIN,
      'body', cjson.encode({run_id = run}))
    redis.call('DEL', KEYS[1], KEYS[5])
    redis.call('ZREM', KEYS[3], ARGV[4])
    redis.call('PEXPIRE', KEYS[2], ARGV[3])
    return {2, run}
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
return {1, v}
""")
)

# KEYS: live, stream, durable, checkpoint, active. ARGV: run_id, lease_ms, wait_ms, the adopter (unique to one
# worker and job; '': none), session_id. A worker takes a queued run's flag as its lease (the adopter kept in the
# checkpoint hash, `adopted:<run id>`; the session listed as active, should a listing have dropped it meanwhile).
# Returns {begin id, begin body}, also to a re-sent copy of the call that took it (its reply was lost: the same
# adopter finds the flag its own, the lease renewed, a cancel mark kept); {} if the run is no longer queued
# (cancelled, expired, or adopted).
_ADOPT = LuaScript(
    lua("""
local v = redis.call('GET', KEYS[1])
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
if not first then return {} end
if v == $QUEUED .. ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  if ARGV[4] ~= '' then
    redis.call('HSET', KEYS[4], 'adopted:' .. ARGV[1], ARGV[4])
    if redis.call('PTTL', KEYS[4]) < 0 then redis.call('PEXPIRE', KEYS[4], ARGV[3]) end
  end
elseif ARGV[4] ~= '' and (v == ARGV[1] or v == $CANCEL .. ARGV[1])
    and redis.call('HGET', KEYS[4], 'adopted:' .. ARGV[1]) == ARGV[4] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  return {}
end
redis.call('PEXPIRE', KEYS[3], ARGV[3])
redis.call('ZADD', KEYS[5], 'NX', string.match(first[1], '^%d+'), ARGV[5])
local body = '{}'
for f = 1, #first[2], 2 do
  if first[2][f] == 'body' then body = first[2][f + 1] end
end
return {first[1], body}
""")
)

# KEYS: live, stream, active, durable, checkpoint, checkpoint messages, rollback. ARGV: run_id, lease_ms, max
# attempts, maxlen, retention_ms, session_id, wait_ms, the error body of a run out of attempts. A worker takes
# over a durable run whose worker's lease lapsed: the flag becomes `<run id>:<attempt>` (the old attempt's
# writes are refused from now on) and a `resumed` event marks where the stream goes on: the node of the run's
# last checkpoint (0 without one). Returns {attempt, begin id, begin body, marker id, 0}; for a run marked
# cancelled (see `_CANCEL`), the flag is `cancel:<run id>:<attempt>` for its worker to end it, nothing is
# written and the marker id is the stream's last: {attempt, begin id, begin body, last id, 1}; {-1, ms left} if a
# worker still holds its flag (in the same script, so a lease lapsing meanwhile is never taken for the run
# being over); {0} if there is nothing to resume (the run ended; out of attempts, it is ended with
# `error` + `end`: attempts its workers handed back on shutdown do not count).
_RECOVER = LuaScript(
    lua("""
local d = redis.call('GET', KEYS[4])
if not d then return {0} end
local sep = string.find(d, ':', 1, true)
if not sep or string.sub(d, 1, sep - 1) ~= ARGV[1] then return {0} end
if redis.call('EXISTS', KEYS[1]) == 1 then return {-1, math.max(redis.call('PTTL', KEYS[1]), 0)} end
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
local ended = not last
if last then
  for f = 1, #last[2], 2 do
    if last[2][f] == 'type' and last[2][f + 1] == $END then ended = true end
  end
end
if ended then
  redis.call('DEL', KEYS[4], KEYS[5], KEYS[6])
  return {0}
end
local attempt = tonumber(string.sub(d, sep + 1)) + 1
local token = ARGV[1] .. ':' .. attempt
local body = '{}'
for f = 1, #first[2], 2 do
  if first[2][f] == 'body' then body = first[2][f + 1] end
end
local cancelled = redis.call('HGET', KEYS[5], 'cancel:' .. ARGV[1])
if cancelled then
  redis.call('SET', KEYS[1], $CANCEL .. token, 'PX', ARGV[2])
  redis.call('SET', KEYS[4], token, 'PX', ARGV[7])
  if cancelled == 'rollback' then redis.call('SET', KEYS[7], token, 'PX', ARGV[5]) end
  return {attempt, first[1], body, last[1], 1}
end
local handed = tonumber(redis.call('HGET', KEYS[5], 'handed:' .. ARGV[1]) or '0')
if attempt - handed > tonumber(ARGV[3]) then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'type', $ERROR, 'origin', $ORIGIN, 'body', ARGV[8])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'type', $END, 'origin', $ORIGIN,
    'body', cjson.encode({run_id = ARGV[1]}))
  redis.call('DEL', KEYS[4], KEYS[5], KEYS[6])
  redis.call('ZREM', KEYS[3], ARGV[6])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
  return {0}
end
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
redis.call('SET', KEYS[4], token, 'PX', ARGV[7])
redis.call('ZADD', KEYS[3], 'NX', string.match(first[1], '^%d+'), ARGV[6])  -- should a listing have dropped it
local checkpoint = redis.call('HMGET', KEYS[5], 'run', 'idx')
local idx = 0
if checkpoint[1] == ARGV[1] then idx = tonumber(checkpoint[2]) end
local marker = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'type', $EVENT, 'origin', $ORIGIN,
  'body', '{"idx":' .. idx .. ',"event":"resumed","attempt":' .. attempt .. '}')
return {attempt, first[1], body, marker, 0}
""")
)

# KEYS: (live, stream, active, durable) of each session. ARGV: maxlen, grace_ms, error body, then the
# session ids. Ends the streams whose run died: no live flag, yet the last entry is not `end`; a durable
# run is not dead while its durable key lives (a worker resumes it).
# Returns per session 1 if it ended the stream, else 0.
_REAP = LuaScript(
    lua("""
local done = {}
for i = 1, #KEYS / 4 do
  local live, stream, active, durable = KEYS[4 * i - 3], KEYS[4 * i - 2], KEYS[4 * i - 1], KEYS[4 * i]
  done[i] = 0
  if redis.call('EXISTS', live, durable) == 0 then
    local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
    local ended = #last == 0
    if not ended then
      local fields = last[1][2]
      for f = 1, #fields, 2 do
        if fields[f] == 'type' and fields[f + 1] == $END then ended = true end
      end
    end
    if not ended then
      redis.call('XADD', stream, 'MAXLEN', '~', ARGV[1], '*', 'type', $ERROR, 'origin', $ORIGIN,
        'body', ARGV[3])
      redis.call('XADD', stream, 'MAXLEN', '~', ARGV[1], '*', 'type', $END, 'origin', $ORIGIN,
        'body', '{}')
      redis.call('ZREM', active, ARGV[i + 3])
      redis.call('PEXPIRE', stream, ARGV[2])
      done[i] = 1
    end
  end
end
return done
""")
)


# KEYS: active, then each session's (live flag, durable key, checkpoint). ARGV: the session ids.
# Returns per session its state, 1 (live), 2 (cancel requested; also a durable run between two workers
# marked cancelled: the next one ends it), 3 (queued), 4 (a durable run between two workers: its worker died
# or handed it back, and the next one has not taken it over yet) or 0 (gone: removed from the active set),
# then per session its flag's run id (for 4, `<run id>:<attempt>` of the attempt that ran last).
_PRUNE = LuaScript(
    lua("""
local states, runs = {}, {}
for i = 1, #ARGV do
  local v = redis.call('GET', KEYS[3 * i - 1])
  local state, run = 1, v
  if not v then
    run = redis.call('GET', KEYS[3 * i])
    if run then
      state = 4
      local sep = string.find(run, ':', 1, true)
      if sep and redis.call('HEXISTS', KEYS[3 * i + 1], 'cancel:' .. string.sub(run, 1, sep - 1)) == 1 then
        state = 2
      end
    else
      redis.call('ZREM', KEYS[1], ARGV[i])
      state, run = 0, ''
    end
  elseif string.sub(v, 1, #$CANCEL) == $CANCEL then
    state, run = 2, string.sub(v, #$CANCEL + 1)
  elseif string.sub(v, 1, #$QUEUED) == $QUEUED then
    state, run = 3, string.sub(v, #$QUEUED + 1)
  end
  states[i], runs[i] = state, run
end
for i = 1, #runs do states[#ARGV + i] = runs[i] end
return states
""")
)


class OpenState(IntEnum):
    """What opening a run found."""

    BUSY = 0
    """Another run holds the session: nothing was written."""
    OPENED = 1
    """The run took the session and its `begin` is written."""
    EXISTS = 2
    """A run with this id is live or ended (its stream still kept): nothing was written."""
    QUEUED = 3
    """A run with this id waits in the run queue: nothing was written."""
    FULL = 4
    """The scope has as many runs queued as it may: nothing was written."""


class Recovered(NamedTuple):
    """A durable run taken over from a worker whose lease lapsed."""

    attempt: int
    token: str
    """The lease's token of this attempt, `<run id>:<attempt>`: the flag's value while it holds it."""
    begin: Entry
    marker_id: str
    """The `resumed` event that says where the stream goes on (the stream's last entry when `cancelled`)."""
    cancelled: bool = False
    """The run was cancelled while its worker was gone: this attempt ends it (its flag says so), not resume it."""


class Held(NamedTuple):
    """A durable run's flag still held by a worker (alive, or dead with its lease not yet lapsed)."""

    left_ms: int
    """How long the lease lasts unless it is renewed."""


class Enqueue(NamedTuple):
    """The job to add to the run queue in the same script that opens the run (one Redis, not a cluster)."""

    queue: str
    """The scope's job stream (see `add_job`)."""
    queued: str
    """The scope's set of queued runs."""
    member: str
    """The run in that set."""
    limit: int
    """Runs the scope may have queued."""
    fields: Mapping[str, str]
    """The job."""
    scopes: str
    """The queue's scopes with jobs waiting, its turn counter and its ready stream (see `add_job`)."""
    turn: str
    ready: str


class CancelState(IntEnum):
    """What a cancel found."""

    NONE = 0
    """No run, or one already asked to stop."""
    SIGNALLED = 1
    """A running run was asked to stop (its process stops it at once)."""
    ENDED = 2
    """A queued run was ended on the spot (`error` canceled + `end`)."""
    ALREADY = 3
    """The run named was cancelled already (by this very cancel, if it is a retry whose reply was lost)."""


class LeaseState(IntEnum):
    """What a lease renewal found."""

    LOST = 0
    HELD = 1
    CANCEL_REQUESTED = 2


class Renewal(NamedTuple):
    """What renewing a run's lease found."""

    state: LeaseState
    waiting: list[str]
    """The ids of the runs waiting behind it (their wait extended with it)."""


RawEntry: TypeAlias = tuple[bytes | str, dict[Any, Any]]
PendingEntry: TypeAlias = tuple[str, str, Mapping[str, Any] | None]
"""An entry to write: `(type, origin, body)`."""


def xread_entries_by_key(reply: Any) -> list[tuple[bytes | str, list[RawEntry]]]:
    """An `XREAD` reply as `[(stream key, [(entry id, fields), ...]), ...]`, for RESP2 and RESP3."""
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3: {key: [[(id, fields), ...]]}
        return [(key, [entry for entries in groups for entry in entries]) for key, groups in reply.items()]
    return [(key, list(entries)) for key, entries in reply]  # RESP2: [[key, [(id, fields), ...]]]


def _dump(body: Mapping[str, Any] | None) -> str:
    if body is not None and not isinstance(body, dict):
        body = dict(body)  # `json` dumps no other mapping: it would write its `str`
    # UTF-8 as is: ASCII escapes would triple non-Latin text (é -> \u00e9) past clients' message limits.
    return json.dumps(body or {}, separators=(",", ":"), default=str, ensure_ascii=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionStream:
    """The Redis side of one session: its event stream, live flag and entry in the active set."""

    redis: AsyncRedis
    keys: SessionKeys
    maxlen: int
    retention_ms: int

    async def open(
        self,
        *,
        run_id: str,
        lease_ms: int,
        begin: Mapping[str, Any],
        nonce: str,
        queued: bool = False,
        enqueue: Enqueue | None = None,
    ) -> tuple[OpenState, str]:
        """Take the live flag and start a fresh stream with `begin` (which must start with this session's
        and run's ids); returns what it found and the run's `begin` id (`""` when `BUSY` or `FULL`).

        `nonce`, unique to this start, lets a copy of the call re-sent by a retrying client see it opened.
        `queued`: the flag says the run waits for a worker (`adopt`), and lives `lease_ms` meanwhile;
        `enqueue`: its job is added to the run queue in the same step (not on a Redis Cluster).
        """
        own = _dump({"session_id": self.keys.session_id, "run_id": run_id})[:-1]
        keys = list(_run_keys(self.keys))
        args: list[str | int] = [run_id, lease_ms, self.keys.session_id, int(time.time() * 1000), self.maxlen,
                                 self.retention_ms, _dump(begin), own, nonce, "1" if queued else "0"]  # fmt: skip
        if enqueue is not None:
            keys += [enqueue.queue, enqueue.queued, enqueue.scopes, enqueue.turn, enqueue.ready]
            args += [enqueue.member, enqueue.limit, *(item for pair in enqueue.fields.items() for item in pair)]
        keys.append(self.keys.runs)
        state, entry_id = await _OPEN(self.redis, keys=keys, args=args)
        return OpenState(int(state)), decode(entry_id)

    async def adopt(self, *, run_id: str, lease_ms: int, wait_ms: int, adopter: str = "") -> Entry | None:
        """Take the flag of the queued run `run_id` as a `lease_ms` lease; its `begin` entry, or `None` if
        it is no longer queued (cancelled, expired, or adopted by another worker). `adopter`, unique to one
        worker and job, lets a re-sent copy of the call (its reply lost) find the run its own."""
        keys = self.keys
        reply = await _ADOPT(
            self.redis,
            keys=[keys.live, keys.stream, keys.durable, keys.checkpoint, keys.active],
            args=[run_id, lease_ms, wait_ms, adopter, keys.session_id],
        )
        if not reply:
            return None
        entry_id, body = reply
        return Entry.from_redis(entry_id, {"type": BEGIN, "origin": ORIGIN_STREAM, "body": body})

    async def recover(self, *, run_id: str, lease_ms: int, max_attempts: int, wait_ms: int) -> Recovered | Held | None:
        """Take over the durable run `run_id` whose worker's lease lapsed, as its next attempt; `Held` if a
        worker still holds it; `None` if there is nothing to take over (ended, or out of attempts: then
        ended as lost)."""
        keys = self.keys
        reply = await _RECOVER(
            self.redis,
            keys=[*_run_keys(keys), keys.checkpoint, keys.checkpoint_msgs, keys.rollback],
            args=[run_id, lease_ms, max_attempts, self.maxlen, self.retention_ms, keys.session_id, wait_ms,
                  _dump({"msg": "run lost", "reason": f"{max_attempts} attempts failed"})],
        )  # fmt: skip
        if int(reply[0]) == 0:
            return None
        if int(reply[0]) < 0:
            return Held(left_ms=int(reply[1]))
        attempt, begin_id, body, marker_id, cancelled = reply
        begin = Entry.from_redis(begin_id, {"type": BEGIN, "origin": ORIGIN_STREAM, "body": body})
        return Recovered(
            attempt=int(attempt),
            token=f"{run_id}:{int(attempt)}",
            begin=begin,
            marker_id=decode(marker_id),
            cancelled=bool(int(cancelled)),
        )

    async def close(self, *, run_id: str, grace_ms: int, end: Mapping[str, Any]) -> bool:
        """Write `end`, release the live flag and keep the stream `grace_ms`; `False` if the lease was lost."""
        entry_id = await _CLOSE(
            self.redis,
            keys=[*_run_keys(self.keys), self.keys.checkpoint, self.keys.checkpoint_msgs],
            args=[run_id, self.maxlen, grace_ms, self.keys.session_id, _dump(end)],
        )
        return entry_id is not None

    async def hand_back(self, *, token: str, run_id: str, wait_ms: int) -> bool:
        """Let go of the durable run `run_id` whose lease `token` holds, without ending it: another worker
        resumes it within `wait_ms` (this attempt not counted against `max_attempts`). `False` if the lease
        was no longer held."""
        keys = self.keys
        return bool(
            await _HAND_BACK(
                self.redis,
                keys=[keys.live, keys.checkpoint, keys.durable, keys.checkpoint_msgs],
                args=[token, run_id, wait_ms],
            )
        )

    async def checkpoint(
        self, *, token: str, run_id: str, idx: int, kept: int, messages: Sequence[bytes], ttl_ms: int
    ) -> bool:
        """Keep the durable run's progress: it resumes from node `idx` with the messages of its last
        checkpoint up to `kept`, then `messages` (each one message's JSON). `False` if the lease `token`
        is not held (the checkpoint is refused)."""
        keys = self.keys
        done = await _CHECKPOINT(
            self.redis,
            keys=[keys.live, keys.checkpoint, keys.checkpoint_msgs, keys.durable],
            args=[token, run_id, idx, ttl_ms, kept, *messages],
        )
        return bool(done)

    async def load_checkpoint(self, run_id: str) -> tuple[int, list[bytes]] | None:
        """The node the run resumes from and its messages (each one's JSON), or `None` without a checkpoint."""
        keys = [self.keys.checkpoint, self.keys.checkpoint_msgs]
        reply = await _LOAD_CHECKPOINT(self.redis, keys=keys, args=[run_id])
        if not reply:
            return None
        return int(reply[0]), [m if isinstance(m, bytes) else str(m).encode() for m in reply[1:]]

    async def wait_behind(self, *, run_id: str, run: Mapping[str, Any], ttl_ms: int, first: bool = False) -> int:
        """Put `run` (JSON with its `run_id`) behind the session's run (`first`: before the runs waiting there):
        1 if it waits now, 2 if it already did, 0 if the session has no run to wait for."""
        keys = [self.keys.live, self.keys.waiting, self.keys.durable]
        args: list[str | int] = [run_id, _dump(run), ttl_ms, "1" if first else "0"]
        return int(await _WAIT(self.redis, keys=keys, args=args))

    async def first_waiting(self) -> str | None:
        """The first run waiting behind the session's run (its JSON), or `None`."""
        item = await self.redis.lindex(self.keys.waiting, 0)
        return None if item is None else decode(item)

    async def started_waiting(self, item: str) -> None:
        """The waiting run `item` (as `first_waiting` gave it) started: it waits no more."""
        await self.redis.lrem(self.keys.waiting, 1, item)

    async def renew(self, *, run_id: str, lease_ms: int, wait_ms: int, durable: bool = False) -> LeaseState:
        """Extend the lease of `run_id` (see `renew_many`); says whether it is still held and whether a cancel
        was asked."""
        ((state, _),) = await renew_many(self.redis, [(self, run_id, durable)], lease_ms=lease_ms, wait_ms=wait_ms)
        return state

    async def cancel(
        self, channel: str, *, rollback: bool = False, run_id: str | None = None
    ) -> tuple[CancelState, str]:
        """Ask the live run to stop (a queued one is ended at once; a durable one whose worker died is ended by
        the worker that takes it over); what it found, and the run's id.

        `rollback`: the run's messages are not to be saved (see `rolled_back`). `run_id`: only if the live
        or queued run is that one (`ALREADY` if it was cancelled before: a retry's answer).
        """
        keys = self.keys
        state, run_id = await _CANCEL(
            self.redis,
            keys=[keys.live, keys.stream, keys.active, keys.rollback, keys.durable, keys.checkpoint],
            args=[channel, self.maxlen, self.retention_ms, keys.session_id, _dump({"msg": "canceled"}),
                  "1" if rollback else "0", run_id or ""],
        )  # fmt: skip
        return CancelState(int(state)), decode(run_id)

    async def rolled_back(self, run_id: str) -> bool:
        """Whether `run_id` was cancelled to be rolled back (so it must not save its messages)."""
        value = await self.redis.get(self.keys.rollback)
        return value is not None and decode(value) == run_id

    async def is_live(self) -> bool:
        """Whether a run holds the live flag and has not been asked to cancel."""
        value = await self.redis.get(self.keys.live)
        return value is not None and not decode(value).startswith(CANCEL_MARK)

    async def reap(self, *, grace_ms: int) -> bool:
        """End the stream of a run that died without writing `end`; `True` if it did."""
        (done,) = await reap_many(self.redis, [self], grace_ms=grace_ms)
        return done

    async def read(self, after: str, *, block_ms: int | None, count: int = 1000) -> list[Entry]:
        """Entries strictly after `after`, waiting up to `block_ms` for the first one."""
        reply = await self.redis.xread({self.keys.stream: after}, count=count, block=block_ms)
        by_key = xread_entries_by_key(reply)
        return [Entry.from_redis(entry_id, fields) for _, entries in by_key for entry_id, fields in entries]

    async def read_range(self, *, after: str, until: str = "+", count: int) -> list[Entry]:
        """Entries in (`after`, `until`], at most `count`; unlike `XREAD`, never silently past a trim.

        Raises `CursorExpiredError` if entries after `after` (`0-0`: the run's `begin`) may have been trimmed.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xrange(self.keys.stream, min=f"({after}", max=until, count=count)
            pipe.xrange(self.keys.stream, count=1)  # after the read: a trim before it shows here
            page, oldest = await pipe.execute()
        if oldest and trimmed_past(after, oldest=decode(oldest[0][0]), oldest_type=entry_type(oldest[0][1])):
            raise CursorExpiredError(after, decode(oldest[0][0]))
        return [Entry.from_redis(entry_id, fields) for entry_id, fields in page]

    async def bounds(self) -> StreamBounds | None:
        """The oldest and newest entries' ids and types; `None` if there is no stream."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xrange(self.keys.stream, count=1)
            pipe.xrevrange(self.keys.stream, count=1)
            oldest, newest = await pipe.execute()
        if not oldest or not newest:
            return None
        return StreamBounds(oldest=decode(oldest[0][0]), oldest_type=entry_type(oldest[0][1]),
                            newest=decode(newest[0][0]), newest_type=entry_type(newest[0][1]))  # fmt: skip


def own_pool(redis: Redis) -> ConnectionPool:
    """A pool of one connection with `redis`'s settings, for a blocking read that must not hold one of
    the shared pool's connections."""
    pool = redis.connection_pool
    return ConnectionPool(connection_class=pool.connection_class, max_connections=1, **pool.connection_kwargs)


def is_cluster(redis: AsyncRedis) -> TypeIs[RedisCluster]:
    """Whether `redis` is a Redis Cluster client: the one place plain and cluster clients part ways."""
    return isinstance(redis, RedisCluster)


async def _per_slot(
    redis: AsyncRedis, items: Sequence[_T], call: Callable[[Sequence[_T]], Awaitable[list[_R]]]
) -> list[_R]:
    """`call` for all `items` in one script call; on a Redis Cluster, whose scripts cannot span slots, one
    call per item, sent together."""
    if not is_cluster(redis):
        return await call(items)
    each = await asyncio.gather(*(call([item]) for item in items))
    return [result for results in each for result in results]


async def append_many(
    redis: AsyncRedis, writes: Sequence[tuple[SessionStream, str, str, Sequence[PendingEntry]]]
) -> list[str | None]:
    """Append to several sessions' streams in one script call, each fenced by its run's lease.

    `writes` holds `(stream, run_id, after, entries)`, `after` being the last entry id that run wrote
    (a re-sent call finds its entries written and writes nothing twice); returns per write the last
    entry id, or `None` if `run_id` no longer holds that session (nothing was written there).
    """
    return await _per_slot(redis, writes, lambda part: _append(redis, part))


async def _append(
    redis: AsyncRedis, writes: Sequence[tuple[SessionStream, str, str, Sequence[PendingEntry]]]
) -> list[str | None]:
    first = writes[0][0]
    keys: list[str] = []
    args: list[str | int] = [first.maxlen, first.retention_ms]
    for stream, run_id, after, entries in writes:
        keys += [stream.keys.live, stream.keys.stream]
        args += [run_id, after, len(entries)]
        for type_, origin, body in entries:
            args += [type_, origin, _dump(body)]
    ids = await _APPEND(redis, keys=keys, args=args)
    return [decode(entry_id) or None for entry_id in ids]


async def renew_many(
    redis: AsyncRedis, leases: Sequence[tuple[SessionStream, str, bool]], *, lease_ms: int, wait_ms: int
) -> list[Renewal]:
    """Extend several runs' leases (and their streams' retention) in one script call; the runs waiting behind
    them, and a durable run's record, `wait_ms` past now.

    `leases` holds `(stream, run_id, durable)`.
    """
    return await _per_slot(redis, leases, lambda part: _renew(redis, part, lease_ms=lease_ms, wait_ms=wait_ms))


async def _renew(
    redis: AsyncRedis, leases: Sequence[tuple[SessionStream, str, bool]], *, lease_ms: int, wait_ms: int
) -> list[Renewal]:
    keys = [
        key
        for stream, _, _ in leases
        for key in (stream.keys.live, stream.keys.stream, stream.keys.waiting, *_durable_keys(stream.keys))
    ]
    args: list[str | int] = [lease_ms, leases[0][0].retention_ms, wait_ms]
    for _, run_id, durable in leases:
        args += [run_id, "1" if durable else "0"]
    states, waiting = await _RENEW(redis, keys=keys, args=args)
    return [
        Renewal(LeaseState(int(state)), [decode(run_id) for run_id in behind])
        for state, behind in zip(states, waiting, strict=True)
    ]


def _durable_keys(keys: SessionKeys) -> tuple[str, str, str]:
    """The record of a durable run a worker resumes it from: its durable key, checkpoint and checkpoint's messages."""
    return keys.durable, keys.checkpoint, keys.checkpoint_msgs


async def reap_many(redis: AsyncRedis, streams: Sequence[SessionStream], *, grace_ms: int) -> list[bool]:
    """`reap` for several sessions in one script call."""
    return await _per_slot(redis, streams, lambda part: _reap(redis, part, grace_ms=grace_ms))


def _run_keys(keys: SessionKeys) -> tuple[str, str, str, str]:
    """The keys a run's start and end touch: live flag, stream, active set, durable key."""
    return keys.live, keys.stream, keys.active, keys.durable


async def _reap(redis: AsyncRedis, streams: Sequence[SessionStream], *, grace_ms: int) -> list[bool]:
    keys = [k for stream in streams for k in _run_keys(stream.keys)]
    body = _dump({"msg": RUN_LOST, "reason": "lease expired"})
    args: list[str | int] = [streams[0].maxlen, grace_ms, body, *(stream.keys.session_id for stream in streams)]
    done = await _REAP(redis, keys=keys, args=args)
    return [bool(int(flag)) for flag in done]


class ActiveRun(NamedTuple):
    """A session with a run queued or running (not being cancelled)."""

    session_id: str
    run_id: str
    queued: bool
    """Waiting for a worker; else running."""
    attempt: int = 1
    """Which attempt runs it (more than 1 once a worker died and another resumed it); of a run `resuming`,
    the attempt that ran last."""
    resuming: bool = False
    """Queued again: its worker died or handed it back, and another worker takes it over as its next attempt."""


async def active_sessions(redis: AsyncRedis, keys: Sequence[SessionKeys]) -> list[ActiveRun]:
    """Of the given sessions (one user's active set), those with a queued or live, uncancelled run; drops
    dead ones.

    The drop runs in the same script as the check, so a session that starts again meanwhile is kept.
    """
    if not keys:
        return []
    flags = [key for k in keys for key in (k.live, k.durable, k.checkpoint)]
    reply = await _PRUNE(redis, keys=[keys[0].active, *flags], args=[k.session_id for k in keys])
    states, runs = reply[: len(keys)], reply[len(keys) :]
    active = []
    for k, state, run in zip(keys, states, runs, strict=True):
        if int(state) in (1, 3, 4):
            run_id, _, attempt = decode(run).partition(":")  # the lease of attempt n > 1: `<run id>:<n>`
            resuming = int(state) == 4
            active.append(
                ActiveRun(k.session_id, run_id, queued=int(state) != 1, attempt=int(attempt or 1), resuming=resuming)
            )
    return active


async def active_members(redis: AsyncRedis, active_key: str) -> list[str]:
    """Session ids in a user's active set, oldest run first (may include runs that died)."""
    members = await redis.zrange(active_key, 0, -1)
    return [decode(m) for m in members if isinstance(m, bytes | str)]
