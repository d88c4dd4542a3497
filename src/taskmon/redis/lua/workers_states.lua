-- workers_states: what every worker published at its last heartbeat, its heartbeat deadline
-- and its drain order, with the Redis time, read atomically in one round trip.
--
-- Read-only: stale records are removed by the heartbeats (worker_heartbeat).
--
-- KEYS[1] workers        ZSET worker id -> heartbeat deadline (ms)
-- KEYS[2] workers_state  HASH worker id -> last_seen_ms \t state JSON
-- KEYS[3] workers_drain  HASH worker id -> requested_ms
-- ARGV: none
-- Returns: {now_ms, worker_1, record_1, deadline_1, drain_1, worker_2, ...}: deadline is
--          false when the worker is not in the registry, drain false when none is ordered.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local records = redis.call('HGETALL', KEYS[2])
local out = {now}
for i = 1, #records, 2 do
    local worker = records[i]
    out[#out + 1] = worker
    out[#out + 1] = records[i + 1]
    local deadline = redis.call('ZSCORE', KEYS[1], worker)
    out[#out + 1] = deadline and tonumber(deadline) or false
    out[#out + 1] = redis.call('HGET', KEYS[3], worker)
end
return out
