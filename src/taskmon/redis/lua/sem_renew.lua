-- sem_renew: extend a lease by a full TTL, only when this very grant (token AND fencing) holds it.
--
-- Purges expired holders first, so a lease that already ended cannot be revived (returns 0).
-- A purge that frees permits publishes the next tokens in line on the wake-up channel.
-- Repeating the call is harmless (it extends again). Time comes from Redis TIME only (ms).
--
-- KEYS[1] sem_holders    ZSET token -> lease end (ms)
-- KEYS[2] sem_info       HASH token -> JSON {worker, task_id, fencing}
-- KEYS[3] sem_queue      ZSET waiting token -> ticket
-- KEYS[4] sem_limit      STRING the cap; absent means ARGV[4]
-- ARGV[1] token          the owner token
-- ARGV[2] fencing        the fencing token of the grant being renewed
-- ARGV[3] lease_ms       new lease length from now, in ms
-- ARGV[4] default_limit  the cap when KEYS[4] is absent
-- ARGV[5] channel        pub/sub channel for wake-ups (JSON list of tokens)
-- Returns: 1 when the lease was extended; 0 when this grant no longer held the permit.

local holders, info, queue = KEYS[1], KEYS[2], KEYS[3]
local token = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local expired = redis.call('ZRANGEBYSCORE', holders, '-inf', now, 'LIMIT', 0, 100)
if #expired > 0 then
    redis.call('ZREM', holders, unpack(expired))
    redis.call('HDEL', info, unpack(expired))
    local limit = tonumber(redis.call('GET', KEYS[4]) or ARGV[4])
    local free = limit - redis.call('ZCOUNT', holders, '(' .. now, '+inf')
    if free > 0 then
        local nexts = redis.call('ZRANGE', queue, 0, math.min(free, 1000) - 1)
        if #nexts > 0 then
            redis.call('PUBLISH', ARGV[5], cjson.encode(nexts))
        end
    end
end

if redis.call('ZSCORE', holders, token) then
    local raw = redis.call('HGET', info, token)
    if raw and cjson.decode(raw)['fencing'] == tonumber(ARGV[2]) then
        redis.call('ZADD', holders, 'XX', now + tonumber(ARGV[3]), token)
        return 1
    end
end
return 0
