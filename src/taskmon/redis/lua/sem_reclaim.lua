-- sem_reclaim: register a permit that a worker kept through a Redis outage, over the limit if
-- need be (like a holder kept over a lowered cap), so the global count includes it again before
-- that worker admits anything new through Redis. A token whose lease is still live keeps its
-- grant and gets a full lease from now; otherwise (its lease ended while Redis was away, or Redis
-- restarted empty) it is granted anew under a new fencing token. Time comes from Redis TIME (ms).
--
-- KEYS[1] sem_holders    ZSET token -> lease end (ms)
-- KEYS[2] sem_info       HASH token -> JSON {worker, task_id, fencing}
-- KEYS[3] sem_queue      ZSET waiting token -> ticket
-- KEYS[4] sem_waiters    ZSET waiting token -> liveness deadline (ms)
-- KEYS[5] sem_fencing    STRING counter of grants
-- ARGV[1] token          the owner token
-- ARGV[2] worker         the holder's worker id (shown, never checked)
-- ARGV[3] task_id        the holder's task id (shown, never checked)
-- ARGV[4] lease_ms       lease length from now, in ms
-- Returns: {fencing, 0} when the live grant was kept, {fencing, 1} when granted anew.

local holders, info = KEYS[1], KEYS[2]
local token = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local lease_end = redis.call('ZSCORE', holders, token)
local raw = redis.call('HGET', info, token)
if lease_end and raw and tonumber(lease_end) > now then
    redis.call('ZADD', holders, 'XX', now + tonumber(ARGV[4]), token)
    return {cjson.decode(raw)['fencing'], 0}
end

redis.call('ZREM', KEYS[3], token)
redis.call('ZREM', KEYS[4], token)
local fencing = redis.call('INCR', KEYS[5])
redis.call('ZADD', holders, now + tonumber(ARGV[4]), token)
redis.call('HSET', info, token, cjson.encode({worker = ARGV[2], task_id = ARGV[3], fencing = fencing}))
return {fencing, 1}
