-- worker_heartbeat: a worker says it is alive until now + ttl (Redis clock).
--
-- KEYS[1] workers  ZSET worker id -> heartbeat deadline (ms)
-- ARGV[1] worker   the worker's full identity, `<X-Worker-Id>/<boot>` (domain.worker_key)
-- ARGV[2] ttl_ms   how long from now it counts as alive, in ms (0: it leaves now)
-- Returns: the new deadline (ms, Redis clock).

local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local deadline = now_ms + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], deadline, ARGV[1])
return deadline
