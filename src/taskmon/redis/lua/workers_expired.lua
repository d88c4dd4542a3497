-- workers_expired: the workers whose heartbeat deadline has passed (Redis clock).
--
-- KEYS[1] workers       ZSET worker id -> heartbeat deadline (ms)
-- ARGV[1] retention_ms  how long an expired worker stays listed: while it is, a task of its
--                       that appears late (a start that sat at a hung Redis when the worker
--                       died or left) is still reaped. Older entries are removed here.
-- Returns: the ids of the expired workers still within the retention.

local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now_ms - tonumber(ARGV[1])))
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms)
