-- worker_promoted: a worker says it is back on Redis after an outage, everything it kept
-- written back and every permit it holds re-registered; marks past the retention are dropped.
--
-- KEYS[1] workers_promoted  ZSET worker id -> when it last came back (ms, Redis clock)
-- ARGV[1] worker            the worker id (X-Worker-Id)
-- ARGV[2] retention_ms      marks older than this are dropped as it goes
-- Returns: the mark written (ms, Redis clock): the worker's own proof that its mark stands.

local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[1], now_ms, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - tonumber(ARGV[2]))
return now_ms
