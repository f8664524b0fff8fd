"""The Lua scripts of the Redis store's extraction queue (under ``{queue}``) and webhook outbox
(under ``{outbox}``): each one a transaction on one Cluster slot. Record keys a script derives
from a stream entry or a zset member are not declared in KEYS, but they share the script's tag.
The per-user scripts are in ``redis_scripts``.
"""

# -- the extraction queue: scripts on the ``{queue}`` tag ----------------------------------------

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

# -- the outbox: scripts on the ``{outbox}`` tag -------------------------------------------------
# An event record is queued -> leased -> delivered | failed (or back to queued on a retry). The
# ``due`` zset holds exactly the queued and leased events, scored by when each may be claimed:
# available_at while queued, leased_until while leased. So an expired lease is simply due again.

# Shared: the pending counts of one tenant ('t:<tenant>') and of everyone ('*').
_OUTBOX_PENDING = """
local function pending(counts, tenant, delta)
  for _, field in ipairs({'t:' .. tenant, '*'}) do
    if redis.call('HINCRBY', counts, field, delta) <= 0 then redis.call('HDEL', counts, field) end
  end
end
"""

# KEYS: due zset, pending counts, then one record key per event.
# ARGV: now, per event: id, tenant, kind, payload, created at. Returns how many were new.
OUTBOX_ENQUEUE = _OUTBOX_PENDING + """
local added = 0
for k = 3, #KEYS do
  local i = 2 + (k - 3) * 5
  if redis.call('EXISTS', KEYS[k]) == 0 then
    redis.call('HSET', KEYS[k], 'tenant', ARGV[i + 1], 'kind', ARGV[i + 2], 'payload', ARGV[i + 3],
      'created_at', ARGV[i + 4], 'status', 'queued', 'attempts', 0, 'available_at', ARGV[1])
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i])
    pending(KEYS[2], ARGV[i + 1], 1)
    added = added + 1
  end
end
return added
"""

# KEYS: due zset. ARGV: now, limit, leased until, record key prefix.
# Returns one {id, tenant, kind, payload, created_at, attempts} per leased event, oldest due first.
OUTBOX_CLAIM = """
local events = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))) do
  local rec = ARGV[4] .. id
  local status = redis.call('HGET', rec, 'status')
  if status == 'queued' or status == 'leased' then
    local attempts = redis.call('HINCRBY', rec, 'attempts', 1)
    redis.call('HSET', rec, 'status', 'leased', 'leased_until', ARGV[3])
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    local f = redis.call('HMGET', rec, 'tenant', 'kind', 'payload', 'created_at')
    table.insert(events, {id, f[1], f[2], f[3], f[4], tostring(attempts)})
  else
    redis.call('ZREM', KEYS[1], id)  -- finished or expired: nothing left to lease
  end
end
return events
"""

# KEYS: record, due zset, pending counts. ARGV: event id, delivered at, record ttl.
OUTBOX_ACK = _OUTBOX_PENDING + """
local f = redis.call('HMGET', KEYS[1], 'status', 'tenant', 'kind', 'created_at', 'attempts')
if not f[1] then return 0 end
if f[1] == 'queued' or f[1] == 'leased' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  pending(KEYS[3], f[2], -1)
end
-- keep only what idempotency needs (the payload may quote the user); rewritten rather than
-- trimmed, so Redis can store the small hash in its compact encoding again
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'status', 'delivered', 'tenant', f[2], 'kind', f[3], 'created_at', f[4],
  'attempts', f[5], 'delivered_at', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: record, due zset, pending counts.
# ARGV: event id, error, available at ('' gives up), record ttl after giving up.
OUTBOX_RETRY = _OUTBOX_PENDING + """
if redis.call('HGET', KEYS[1], 'status') ~= 'leased' then return 0 end
redis.call('HDEL', KEYS[1], 'leased_until')
if ARGV[3] == '' then
  redis.call('HSET', KEYS[1], 'status', 'failed', 'last_error', ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  pending(KEYS[3], redis.call('HGET', KEYS[1], 'tenant'), -1)
else
  redis.call('HSET', KEYS[1], 'status', 'queued', 'last_error', ARGV[2], 'available_at', ARGV[3])
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
end
return 1
"""

# KEYS: stream, delayed zset, pending counts. ARGV: group, job record key prefix, job ids...
# Drops each job whatever its state (queued, leased, done marker, failed); returns how many existed.
QUEUE_DROP = _PENDING + """
local dropped = 0
for i = 3, #ARGV do
  local rec = ARGV[2] .. ARGV[i]
  local status = redis.call('HGET', rec, 'status')
  if status then
    if status == 'queued' or status == 'leased' then
      local entry = redis.call('HGET', rec, 'entry')
      if entry then
        redis.call('XACK', KEYS[1], ARGV[1], entry)
        redis.call('XDEL', KEYS[1], entry)
      end
      pending(KEYS[3], rec, -1)
    end
    redis.call('ZREM', KEYS[2], ARGV[i])
    redis.call('DEL', rec)
    dropped = dropped + 1
  end
end
return dropped
"""

# KEYS: due zset, pending counts. ARGV: record key prefix, event ids... Returns how many existed.
OUTBOX_DROP = _OUTBOX_PENDING + """
local dropped = 0
for i = 2, #ARGV do
  local rec = ARGV[1] .. ARGV[i]
  local f = redis.call('HMGET', rec, 'status', 'tenant')
  if f[1] then
    if f[1] == 'queued' or f[1] == 'leased' then
      redis.call('ZREM', KEYS[1], ARGV[i])
      pending(KEYS[2], f[2], -1)
    end
    redis.call('DEL', rec)
    dropped = dropped + 1
  end
end
return dropped
"""
