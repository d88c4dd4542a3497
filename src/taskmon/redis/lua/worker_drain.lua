-- worker_drain: order a live worker to drain (stop admitting new tasks), or cancel the order.
--
-- The worker reads the order at its next heartbeat (worker_heartbeat). A worker past its
-- heartbeat deadline, or not in the registry, is not alive: nothing is written.
--
-- KEYS[1] workers        ZSET worker id -> heartbeat deadline (ms)
-- KEYS[2] workers_drain  HASH worker id -> requested_ms
-- ARGV[1] worker         the worker id to drain
-- ARGV[2] drain          1: order the drain; 0: cancel it
-- Returns: {-1, false} when the worker is not alive; else {1, requested_ms} after an order
--          (the first order's time when one was already given), {0, false} after a cancel.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
if not deadline or deadline <= now then
    return {-1, false}
end
if ARGV[2] == '1' then
    redis.call('HSETNX', KEYS[2], ARGV[1], now)
    return {1, redis.call('HGET', KEYS[2], ARGV[1])}
end
redis.call('HDEL', KEYS[2], ARGV[1])
return {0, false}
