-- sem_set_limit: change the cap every worker obeys from its next acquire, and wake the waiters
-- it lets in.
--
-- Holders over a lowered cap keep their permits (nobody is revoked). Purges expired holders and
-- dead waiters, then publishes the first `free` tokens of the queue on the wake-up channel.
-- Time comes from Redis TIME only (ms).
--
-- KEYS[1] sem_holders  ZSET token -> lease end (ms)
-- KEYS[2] sem_info     HASH token -> JSON {worker, task_id, fencing}
-- KEYS[3] sem_queue    ZSET waiting token -> ticket
-- KEYS[4] sem_waiters  ZSET waiting token -> liveness deadline (ms)
-- KEYS[5] sem_limit    STRING the cap
-- ARGV[1] limit        the new cap (an integer >= 1, checked by the caller)
-- ARGV[2] channel      pub/sub channel for wake-ups (JSON list of tokens)
-- Returns: the number of free permits under the new cap (negative when holders exceed it).

local holders, info, queue, waiters = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

redis.call('SET', KEYS[5], ARGV[1])

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

local free = tonumber(ARGV[1]) - redis.call('ZCOUNT', holders, '(' .. now, '+inf')
if free > 0 then
    local nexts = redis.call('ZRANGE', queue, 0, math.min(free, 1000) - 1)
    if #nexts > 0 then
        redis.call('PUBLISH', ARGV[2], cjson.encode(nexts))
    end
end
return free
