-- sem_in_use: how many permits are held under unexpired leases, by the Redis clock.
--
-- Read-only: expired holders are not counted, and not purged. Time comes from Redis TIME (ms).
--
-- KEYS[1] sem_holders  ZSET token -> lease end (ms)
-- ARGV: none
-- Returns: the number of holders whose lease ends after now.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
