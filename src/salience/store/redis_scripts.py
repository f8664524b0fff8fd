"""The Lua scripts of the Redis store: each one is a per-user or per-queue transaction.

A script runs atomically on the Redis server, so a read-check-write (is this job done
already? is this session still recent?) cannot interleave with another replica's.
User scripts touch only keys under one ``{tenant:user}`` hash tag; queue scripts only keys
under ``{queue}``; so each stays on one Cluster slot. Job-record keys that a queue script
derives from a stream entry are not declared in KEYS, but they share the queue's tag.
"""

# KEYS: sessions zset. ARGV: requested ('' for none), now, gap seconds, a fresh session id.
RESOLVE_SESSION = """
local sid = ARGV[1]
local now = tonumber(ARGV[2])
if sid == '' then
  local top = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if top[1] and now - tonumber(top[2]) <= tonumber(ARGV[3]) then sid = top[1] else sid = ARGV[4] end
end
redis.call('ZADD', KEYS[1], 'GT', now, sid)
return sid
"""

# KEYS: done marker, messages hash, memory order zset, meta hash, then one key per added
# memory and one per reinforced memory.
# ARGV: done ttl, (unused), #messages, id/json pairs..., #added, per added: id, #field-values,
# field-values..., #reinforced, per reinforced: #field-values, field-values...
COMMIT_EXTRACTION = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local i = 3
local m = tonumber(ARGV[i]); i = i + 1
for _ = 1, m do
  redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]); i = i + 2
end
local k = 5
local changed = false
local a = tonumber(ARGV[i]); i = i + 1
for _ = 1, a do
  local id = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  if redis.call('EXISTS', KEYS[k]) == 0 then
    redis.call('HSET', KEYS[k], unpack(ARGV, i + 2, i + 1 + n))
    redis.call('ZADD', KEYS[3], redis.call('HINCRBY', KEYS[4], 'seq', 1), id)
  end
  changed = true
  k = k + 1; i = i + 2 + n
end
local r = tonumber(ARGV[i]); i = i + 1
for _ = 1, r do
  local n = tonumber(ARGV[i])
  if redis.call('EXISTS', KEYS[k]) == 1 then
    redis.call('HSET', KEYS[k], unpack(ARGV, i + 1, i + n))
  end
  changed = true
  k = k + 1; i = i + 1 + n
end
if changed then redis.call('HINCRBY', KEYS[4], 'version', 1) end
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
return 1
"""

# Shared by the queue scripts: the pending counter of a job's user, and of everyone ('*').
_PENDING = """
local function pending(counts, rec, delta)
  local field = redis.call('HGET', rec, 'tenant') .. ':' .. redis.call('HGET', rec, 'user')
  if redis.call('HINCRBY', counts, field, delta) <= 0 then redis.call('HDEL', counts, field) end
  if redis.call('HINCRBY', counts, '*', delta) <= 0 then redis.call('HDEL', counts, '*') end
end
"""

# KEYS: job record, stream, pending counts. ARGV: job id, tenant, user, session, messages, now.
ENQUEUE = _PENDING + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local entry = redis.call('XADD', KEYS[2], '*', 'job', ARGV[1])
redis.call('HSET', KEYS[1], 'tenant', ARGV[2], 'user', ARGV[3], 'session', ARGV[4], 'messages', ARGV[5],
  'status', 'queued', 'attempts', 0, 'entry', entry, 'created_at', ARGV[6])
pending(KEYS[3], KEYS[1], 1)
return 1
"""

# KEYS: stream, delayed zset. ARGV: group, consumer, now, min idle ms, limit, job key prefix,
# leased until. Returns one {id, attempts, tenant, user, session, messages} per leased job.
CLAIM = """
local now = tonumber(ARGV[3])
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 100)) do
  local rec = ARGV[6] .. id
  redis.call('ZREM', KEYS[2], id)
  if redis.call('HGET', rec, 'status') == 'queued' then
    redis.call('HSET', rec, 'entry', redis.call('XADD', KEYS[1], '*', 'job', id))
  end
end
local limit = tonumber(ARGV[5])
local entries = {}
local stale = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[4], '0-0', 'COUNT', limit)
for _, e in ipairs(stale[2]) do
  if e and e[2] then table.insert(entries, e) end
end
if #entries < limit then
  local fresh = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', limit - #entries, 'STREAMS', KEYS[1], '>')
  if fresh then
    for _, e in ipairs(fresh[1][2]) do table.insert(entries, e) end
  end
end
local jobs = {}
for _, e in ipairs(entries) do
  local entry = e[1]
  local id = e[2][2]
  local rec = ARGV[6] .. id
  local status = redis.call('HGET', rec, 'status')
  if (status ~= 'queued' and status ~= 'leased') or redis.call('HGET', rec, 'entry') ~= entry then
    -- done, given up, or superseded: only the acknowledgement was missing
    redis.call('XACK', KEYS[1], ARGV[1], entry)
    redis.call('XDEL', KEYS[1], entry)
  else
    local attempts = redis.call('HINCRBY', rec, 'attempts', 1)
    redis.call('HSET', rec, 'status', 'leased', 'leased_until', ARGV[7])
    local f = redis.call('HMGET', rec, 'tenant', 'user', 'session', 'messages')
    table.insert(jobs, {id, tostring(attempts), f[1], f[2], f[3], f[4]})
  end
end
return jobs
"""

# KEYS: job record, stream, delayed zset, pending counts. ARGV: group, record ttl, job id.
FINISH = _PENDING + """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'leased' then return 0 end
local entry = redis.call('HGET', KEYS[1], 'entry')
if entry then
  redis.call('XACK', KEYS[2], ARGV[1], entry)
  redis.call('XDEL', KEYS[2], entry)
end
redis.call('ZREM', KEYS[3], ARGV[3])
pending(KEYS[4], KEYS[1], -1)
-- keep only what idempotency needs; rewritten rather than trimmed, so Redis can store the
-- small hash in its compact encoding again
local who = redis.call('HMGET', KEYS[1], 'tenant', 'user')
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'tenant', who[1], 'user', who[2], 'status', 'done')
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: job record, stream, delayed zset, pending counts.
# ARGV: group, error, available at ('' gives up), job id, record ttl after giving up.
RETRY = _PENDING + """
if redis.call('HGET', KEYS[1], 'status') ~= 'leased' then return 0 end
local entry = redis.call('HGET', KEYS[1], 'entry')
redis.call('XACK', KEYS[2], ARGV[1], entry)
redis.call('XDEL', KEYS[2], entry)
redis.call('HDEL', KEYS[1], 'entry', 'leased_until')
if ARGV[3] == '' then
  redis.call('HSET', KEYS[1], 'status', 'failed', 'last_error', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  pending(KEYS[4], KEYS[1], -1)
else
  redis.call('HSET', KEYS[1], 'status', 'queued', 'last_error', ARGV[2])
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
end
return 1
"""
