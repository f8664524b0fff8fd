"""The per-user Lua scripts of the Redis store: each one a transaction on one user's keys.

A script runs atomically on the Redis server, so a read-check-write (is this job done
already? is this session still recent?) cannot interleave with another replica's.
These touch only keys under one ``{tenant:user}`` hash tag, so each stays on one Cluster slot.
The queue's and the outbox's scripts are in ``redis_queue_scripts``.
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

_BUMP_VERSION = """
-- A user's first version is the server clock in microseconds, later ones count up: a user
-- erased and seen again never repeats a version an in-process recall cache may still hold.
-- Returns the new version (the stamp of the memories written with it).
local function bump_version(meta)
  if redis.call('HEXISTS', meta, 'version') == 0 then
    local t = redis.call('TIME')
    redis.call('HSET', meta, 'version', t[1] .. string.format('%06d', tonumber(t[2])))
  else
    redis.call('HINCRBY', meta, 'version', 1)
  end
  return redis.call('HGET', meta, 'version')
end
-- The memories a write changed, stamped with its version in the ``written`` zset, so a cache
-- holding an older version reads only these (MEMORY_CHANGES).
local function stamp(written, version, ids)
  for _, id in ipairs(ids) do redis.call('ZADD', written, version, id) end
end
"""

# KEYS: done marker, messages hash, memory order zset, meta hash, written zset, then one key per
# added memory and one per reinforced memory.
# ARGV: done ttl, (unused), #messages, id/json pairs..., #added, per added: id, #field-values,
# field-values..., #reinforced, per reinforced: id, #field-values, field-values...
COMMIT_EXTRACTION = _BUMP_VERSION + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local i = 3
local m = tonumber(ARGV[i]); i = i + 1
for _ = 1, m do
  redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]); i = i + 2
end
local k = 6
local changed = false
local written = {}
local a = tonumber(ARGV[i]); i = i + 1
for _ = 1, a do
  local id = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  if redis.call('EXISTS', KEYS[k]) == 0 then
    redis.call('HSET', KEYS[k], unpack(ARGV, i + 2, i + 1 + n))
    redis.call('ZADD', KEYS[3], redis.call('HINCRBY', KEYS[4], 'seq', 1), id)
    table.insert(written, id)
  end
  changed = true
  k = k + 1; i = i + 2 + n
end
local r = tonumber(ARGV[i]); i = i + 1
for _ = 1, r do
  local id = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  if redis.call('EXISTS', KEYS[k]) == 1 then
    redis.call('HSET', KEYS[k], unpack(ARGV, i + 2, i + 1 + n))
    table.insert(written, id)
  end
  changed = true
  k = k + 1; i = i + 2 + n
end
if changed then stamp(KEYS[5], bump_version(KEYS[4]), written) end
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
return 1
"""

_WRITTEN_SINCE = """
-- The user's version (``meta``), their count (``count_command`` on ``counted``) and the ids a
-- ``written`` zset stamps after version ``since``: {version, count, ids}, ids nil when more than
-- ``limit``.
local function written_since(meta, count_command, counted, written, since, limit)
  local version = redis.call('HGET', meta, 'version') or '0'
  local count = redis.call(count_command, counted)
  local ids = redis.call('ZRANGEBYSCORE', written, '(' .. since, '+inf', 'LIMIT', 0, tonumber(limit) + 1)
  if #ids > tonumber(limit) then ids = nil end
  return version, count, ids
end
"""

# KEYS: meta hash, memory order zset, written zset. ARGV: since, limit, memory key prefix.
# Returns {version, count, changed}: changed is -1 when more than ``limit`` memories were written
# after version ``since``, else one {id, order, field-values} per memory. The memory hashes are
# derived from the ids, under the same tag.
MEMORY_CHANGES = _WRITTEN_SINCE + """
local version, count, ids = written_since(KEYS[1], 'ZCARD', KEYS[2], KEYS[3], ARGV[1], ARGV[2])
if not ids then return {version, count, -1} end
local changed = {}
for _, id in ipairs(ids) do
  local order = redis.call('ZSCORE', KEYS[2], id)
  if order then table.insert(changed, {id, order, redis.call('HGETALL', ARGV[3] .. id)}) end
end
return {version, count, changed}
"""

# KEYS: meta hash, signals hash, signals-written zset. ARGV: message id, sealed signal, ... pairs.
# One version for the write; each signal stamped with it, so a person model holding an older
# version reads only these (SIGNAL_CHANGES).
SAVE_SIGNALS = _BUMP_VERSION + """
local version = bump_version(KEYS[1])
local ids = {}
for i = 1, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  table.insert(ids, ARGV[i])
end
stamp(KEYS[3], version, ids)
return version
"""

# KEYS: meta hash, signals hash, signals-written zset. ARGV: since, limit.
# Returns {version, count, changed}: changed is -1 when more than ``limit`` were written after
# version ``since``, else the sealed signals written since.
SIGNAL_CHANGES = _WRITTEN_SINCE + """
local version, count, ids = written_since(KEYS[1], 'HLEN', KEYS[2], KEYS[3], ARGV[1], ARGV[2])
if not ids then return {version, count, -1} end
local changed = {}
if #ids > 0 then
  for _, doc in ipairs(redis.call('HMGET', KEYS[2], unpack(ids))) do
    if doc then table.insert(changed, doc) end
  end
end
return {version, count, changed}
"""


# -- memories and safety: per-user scripts ---------------------------------------------------

# KEYS: the user's trace index hash (trace id -> the ids it holds), its expiry zset. ARGV: trace
# id, the ids it holds (space separated), now and the trace's time to live, in seconds. Redis 7.0
# cannot expire a hash field: the entries of traces already gone are dropped on each write, and
# both keys expire with the newest trace. Returns how many entries were dropped.
INDEX_TRACE = """
local now = tonumber(ARGV[3])
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, id in ipairs(gone) do redis.call('HDEL', KEYS[1], id) end
if #gone > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return #gone
"""

# KEYS: memory hash, memory order zset, meta hash, written zset. ARGV: memory id.
DELETE_MEMORY = _BUMP_VERSION + """
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
bump_version(KEYS[3])
return 1
"""

# KEYS: the memory's entity set (mement:<mid>), entities hash, meta hash, then ent:<eid> per
# linked entity. ARGV: memory id, then the entity ids in the same order. Drops the links and
# every entity left with no memory (erasure of a memory's derived data).
UNLINK_MEMORY = _BUMP_VERSION + """
local gone = 0
for i = 4, #KEYS do
  redis.call('SREM', KEYS[i], ARGV[1])
  if redis.call('SCARD', KEYS[i]) == 0 then
    gone = gone + redis.call('HDEL', KEYS[2], ARGV[i - 2])
  end
end
redis.call('DEL', KEYS[1])
bump_version(KEYS[3])
return gone
"""

# KEYS: meta hash. The version bump the person model's writes share with every other write.
BUMP_VERSION = _BUMP_VERSION + """
bump_version(KEYS[1])
return 1
"""

# KEYS: safety hash, memory order zset, meta hash, written zset, then one key per pinned memory.
# ARGV: record json, updated at, #pinned, per pinned: id, #field-values, field-values...
# A pinned memory is replaced whole (a field it no longer has, like ``emb``, goes) and moves to
# the end of the order, as SQLite's INSERT OR REPLACE gives it a new rowid.
SAVE_SAFETY = _BUMP_VERSION + """
redis.call('HSET', KEYS[1], 'record', ARGV[1], 'updated_at', ARGV[2])
local p = tonumber(ARGV[3])
local i = 4
local written = {}
for k = 1, p do
  local id = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  redis.call('DEL', KEYS[4 + k])
  redis.call('HSET', KEYS[4 + k], unpack(ARGV, i + 2, i + 1 + n))
  redis.call('ZADD', KEYS[2], redis.call('HINCRBY', KEYS[3], 'seq', 1), id)
  table.insert(written, id)
  i = i + 2 + n
end
if p > 0 then stamp(KEYS[4], bump_version(KEYS[3]), written) end
return 1
"""

# -- compliance ------------------------------------------------------------------------------

# KEYS: memory hash, memory order zset, meta hash, messages hash, written zset. ARGV: memory id,
# then the source message ids to remove. Returns {deleted, had embedding, messages removed}.
ERASE_MEMORY = _BUMP_VERSION + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0, 0} end
local emb = redis.call('HEXISTS', KEYS[1], 'emb')
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
local removed = 0
for i = 2, #ARGV do removed = removed + redis.call('HDEL', KEYS[4], ARGV[i]) end
bump_version(KEYS[3])
return {1, emb, removed}
"""
