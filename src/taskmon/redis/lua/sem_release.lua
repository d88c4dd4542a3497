-- sem_release: give a permit back, only when this very grant (token AND fencing) still holds
-- it under an unexpired lease, and hand the permits free over to the head of the queue.
--
-- With nobody queued it is the owner check and two removals. A lease that already ended is
-- not released but reported (returns 0), nothing counted. With waiters, ended leases and dead
-- waiters are purged and the free permits granted in queue order, each grant announced to
-- its waiter (sem_lib). Time comes from Redis TIME only (ms).
--
-- KEYS[1] sem_holders    ZSET token -> lease end (ms)
-- KEYS[2] sem_info       HASH token -> fencing \t worker \t task_id
-- KEYS[3] sem_queue      ZSET waiting token -> ticket
-- KEYS[4] sem_waiters    ZSET waiting token -> liveness deadline (ms)
-- KEYS[5] sem_inboxes    HASH waiting token -> inbox \t nonce \t grant_ms \t worker \t task_id
-- KEYS[6] sem_state      HASH limit, fencing, ticket
-- ARGV[1] token          the owner token
-- ARGV[2] fencing        the fencing token of the grant being released
-- ARGV[3] channel        the grants channel (sem_lib)
-- Returns: 1 when the permit was released; 0 when this grant no longer held it.

--!include sem_lib

local k = {holders = KEYS[1], info = KEYS[2], queue = KEYS[3], waiters = KEYS[4],
    inboxes = KEYS[5], state = KEYS[6], channel = ARGV[3]}
local token = ARGV[1]
local now = sem_now()
local released = 0
local record = redis.call('HGET', k.info, token)
if record and sem_fencing_of(record) == tonumber(ARGV[2]) then
    local lease_end = tonumber(redis.call('ZSCORE', k.holders, token))
    if lease_end and lease_end > now then
        redis.call('ZREM', k.holders, token)
        redis.call('HDEL', k.info, token)
        released = 1
    end
end
if redis.call('ZCARD', k.queue) > 0 then
    sem_purge_holders(k, now)
    sem_purge_waiters(k, now)
    sem_hand_over(k, now)
end
return released
