-- workers_expired: the workers whose heartbeat deadline has passed (Redis clock).
-- KEYS[1] workers  sorted set: worker id -> heartbeat deadline (ms)
-- returns the list of expired worker ids (not removed: the reaper removes each one only
--         after failing its tasks, so a reaper that dies half-way leaves work for the next)
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms)
