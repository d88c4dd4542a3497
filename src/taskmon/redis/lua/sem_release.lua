-- sem_release: give a permit back, only when this very grant (token AND fencing) still holds it.
--
-- Purges expired holders first, so a lease that already ended is not released but reported
-- (returns 0) and nothing is counted. A release, or a purge, publishes the next tokens in line
-- on the wake-up channel while permits are free. Time comes from Redis TIME only (ms).
--
-- KEYS[1] sem_holders    ZSET token -> lease end (ms)
-- KEYS[2] sem_info       HASH token -> JSON {worker, task_id, fencing}
-- KEYS[3] sem_queue      ZSET waiting token -> ticket
-- KEYS[4] sem_waiters    ZSET waiting token -> liveness deadline (ms)
-- KEYS[5] sem_limit      STRING the cap; absent means ARGV[3]
-- ARGV[1] token          the owner token
-- ARGV[2] fencing        the fencing token of the grant being released
-- ARGV[3] default_limit  the cap when KEYS[5] is absent
-- ARGV[4] channel        pub/sub channel for wake-ups (JSON list of tokens)
-- Returns: 1 when the permit was released; 0 when this grant no longer held it.

local holders, info, queue, waiters = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local token = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local changed = false

local expired = redis.call('ZRANGEBYSCORE', holders, '-inf', now, 'LIMIT', 0, 100)
if #expired > 0 then
    redis.call('ZREM', holders, unpack(expired))
    redis.call('HDEL', info, unpack(expired))
    changed = true
end
local dead = redis.call('ZRANGEBYSCORE', waiters, '-inf', now, 'LIMIT', 0, 100)
if #dead > 0 then
    redis.call('ZREM', waiters, unpack(dead))
    redis.call('ZREM', queue, unpack(dead))
end

local released = 0
if redis.call('ZSCORE', holders, token) then
    local raw = redis.call('HGET', info, token)
    if raw and cjson.decode(raw)['fencing'] == tonumber(ARGV[2]) then
        redis.call('ZREM', holders, token)
        redis.call('HDEL', info, token)
        released = 1
        changed = true
    end
end

if changed then
    local limit = tonumber(redis.call('GET', KEYS[5]) or ARGV[3])
    local free = limit - redis.call('ZCOUNT', holders, '(' .. now, '+inf')
    if free > 0 then
        local nexts = redis.call('ZRANGE', queue, 0, math.min(free, 1000) - 1)
        if #nexts > 0 then
            redis.call('PUBLISH', ARGV[4], cjson.encode(nexts))
        end
    end
end
return released
