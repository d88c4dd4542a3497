-- sem_leave: take a waiter that gives up (timeout, close) out of the FIFO queue, and wake the
-- tokens that may now take a permit so the next in line is not delayed.
--
-- Purges expired holders and dead waiters too. Repeating the call is harmless.
-- Time comes from Redis TIME only (ms).
--
-- KEYS[1] sem_holders    ZSET token -> lease end (ms)
-- KEYS[2] sem_info       HASH token -> JSON {worker, task_id, fencing}
-- KEYS[3] sem_queue      ZSET waiting token -> ticket
-- KEYS[4] sem_waiters    ZSET waiting token -> liveness deadline (ms)
-- KEYS[5] sem_limit      STRING the cap; absent means ARGV[2]
-- ARGV[1] token          the owner token that stops waiting
-- ARGV[2] default_limit  the cap when KEYS[5] is absent
-- ARGV[3] channel        pub/sub channel for wake-ups (JSON list of tokens)
-- Returns: 1 when the token was queued and has left; 0 when it was not queued.

local holders, info, queue, waiters = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local left = redis.call('ZREM', queue, ARGV[1])
redis.call('ZREM', waiters, ARGV[1])

local expired = redis.call('ZRANGEBYSCORE', holders, '-inf', now, 'LIMIT', 0, 100)
if #expired > 0 then
    redis.call('ZREM', holders, unpack(expired))
    redis.call('HDEL', info, unpack(expired))
end
local dead = redis.call('ZRANGEBYSCORE', waiters, '-inf', now, 'LIMIT', 0, 100)
if #dead > 0 then
    redis.call('ZREM', waiters, unpack(dead))
    redis.call('ZREM', queue, unpack(dead))
end

local limit = tonumber(redis.call('GET', KEYS[5]) or ARGV[2])
local free = limit - redis.call('ZCOUNT', holders, '(' .. now, '+inf')
if free > 0 then
    local nexts = redis.call('ZRANGE', queue, 0, math.min(free, 1000) - 1)
    if #nexts > 0 then
        redis.call('PUBLISH', ARGV[3], cjson.encode(nexts))
    end
end
return left
