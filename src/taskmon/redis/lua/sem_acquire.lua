-- sem_acquire: grant a permit to a token, or keep its place in the FIFO queue.
--
-- Purges expired holders and dead waiters first. A token that already holds a permit gets it
-- back unchanged (same fencing, lease not extended), so a retried call is a no-op. Otherwise
-- the token is queued once (its ticket is kept across attempts), its liveness deadline is
-- refreshed, and it is granted a permit when its rank in the queue is below the free permits.
-- When permits stay free after this call changed something, the next tokens in line are
-- published on the wake-up channel. Time comes from Redis TIME only (ms).
--
-- KEYS[1] sem_holders    ZSET token -> lease end (ms)
-- KEYS[2] sem_info       HASH token -> JSON {worker, task_id, fencing}
-- KEYS[3] sem_queue      ZSET waiting token -> ticket
-- KEYS[4] sem_waiters    ZSET waiting token -> liveness deadline (ms)
-- KEYS[5] sem_limit      STRING the cap; absent means ARGV[6]
-- KEYS[6] sem_fencing    STRING counter of grants
-- KEYS[7] sem_ticket     STRING counter of queue tickets
-- ARGV[1] token          the owner token
-- ARGV[2] worker         the holder's worker id (shown, never checked)
-- ARGV[3] task_id        the holder's task id (shown, never checked)
-- ARGV[4] lease_ms       lease length in ms
-- ARGV[5] waiter_ttl_ms  how long a waiter stays queued without another attempt, in ms
-- ARGV[6] default_limit  the cap when KEYS[5] is absent
-- ARGV[7] channel        pub/sub channel for wake-ups (JSON list of tokens)
-- Returns: {1, fencing, worker, task_id} when the token holds a permit (new or already held);
--          {0, rank, free} when it waits (0-based rank in the queue, free permits now).

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
    changed = true
end

local function wake(free)
    if free <= 0 then
        return
    end
    local nexts = redis.call('ZRANGE', queue, 0, math.min(free, 1000) - 1)
    if #nexts > 0 then
        redis.call('PUBLISH', ARGV[7], cjson.encode(nexts))
    end
end

local limit = tonumber(redis.call('GET', KEYS[5]) or ARGV[6])
local live = redis.call('ZCOUNT', holders, '(' .. now, '+inf')
local free = limit - live

if redis.call('ZSCORE', holders, token) then
    local raw = redis.call('HGET', info, token)
    if raw then
        local held = cjson.decode(raw)
        if changed then
            wake(free)
        end
        return {1, held['fencing'], held['worker'], held['task_id']}
    end
    -- A holder without its info was damaged from outside: drop it, then treat as new.
    redis.call('ZREM', holders, token)
    free = free + 1
    changed = true
end

if not redis.call('ZSCORE', queue, token) then
    redis.call('ZADD', queue, redis.call('INCR', KEYS[7]), token)
end
redis.call('ZADD', waiters, now + tonumber(ARGV[5]), token)
local rank = redis.call('ZRANK', queue, token)

if rank < free then
    redis.call('ZREM', queue, token)
    redis.call('ZREM', waiters, token)
    local fencing = redis.call('INCR', KEYS[6])
    redis.call('ZADD', holders, now + tonumber(ARGV[4]), token)
    redis.call('HSET', info, token,
        cjson.encode({worker = ARGV[2], task_id = ARGV[3], fencing = fencing}))
    wake(free - 1)
    return {1, fencing, ARGV[2], ARGV[3]}
end

if changed then
    wake(free)
end
return {0, rank, free}
