-- worker_heartbeat: a worker says it is alive until now + ttl (Redis clock), publishes its
-- state for the other workers to show, and reads whether an operator ordered it to drain.
--
-- A worker that leaves (ttl 0) removes its state and its drain order. State records and drain
-- orders of workers not heard from for stale_ms are removed here too (a worker killed without
-- leaving keeps its record that long, shown as not heard from).
--
-- KEYS[1] workers        ZSET worker id -> heartbeat deadline (ms)
-- KEYS[2] workers_state  HASH worker id -> last_seen_ms \t state JSON
-- KEYS[3] workers_drain  HASH worker id -> requested_ms
-- ARGV[1] worker         the worker's full identity, `<X-Worker-Id>/<boot>` (domain.worker_key)
-- ARGV[2] ttl_ms         how long from now it counts as alive, in ms (0: it leaves now)
-- ARGV[3] state          the worker's state (JSON, opaque here; empty: nothing published)
-- ARGV[4] stale_ms       how long a record of a worker not heard from is kept, in ms
-- Returns: {deadline (ms, Redis clock), drain order of this worker (requested_ms) or false}.

local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local worker = ARGV[1]
local deadline = now_ms + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], deadline, worker)
if tonumber(ARGV[2]) == 0 then
    redis.call('HDEL', KEYS[2], worker)
    redis.call('HDEL', KEYS[3], worker)
    return {deadline, false}
end
local state = ARGV[3]
if state ~= '' then
    redis.call('HSET', KEYS[2], worker, table.concat({now_ms, state}, '\t'))
end
local oldest = now_ms - tonumber(ARGV[4])
local records = redis.call('HGETALL', KEYS[2])
for i = 1, #records, 2 do
    local seen = tonumber(string.match(records[i + 1], '^(%d+)'))
    if not seen or seen < oldest then
        redis.call('HDEL', KEYS[2], records[i])
        redis.call('HDEL', KEYS[3], records[i])
    end
end
return {deadline, redis.call('HGET', KEYS[3], worker)}
