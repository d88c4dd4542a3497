-- worker_promoted: a worker says it is back on Redis after an outage, everything it kept
-- written back and every permit it holds re-registered; marks past the retention are dropped.
-- Nothing is written when the dataset is not the one the worker last saw (Redis lost its data
-- since): what the worker wrote back went to a store the registry no longer describes.
--
-- KEYS[1] workers_promoted  ZSET worker id -> when it last came back (ms, Redis clock)
-- KEYS[2] epoch             STRING the dataset's random id
-- ARGV[1] worker            the worker's full identity, `<X-Worker-Id>/<boot>`
-- ARGV[2] retention_ms      marks older than this are dropped as it goes
-- ARGV[3] epoch_seen        the dataset id the worker last read
-- Returns: the mark written (ms, Redis clock): the worker's own proof that its mark stands;
--          -1 when the dataset changed (nothing written).

if redis.call('GET', KEYS[2]) ~= ARGV[3] then
    return -1
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[1], now_ms, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - tonumber(ARGV[2]))
return now_ms
