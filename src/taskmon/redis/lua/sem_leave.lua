-- sem_leave: take a waiter that gives up (timeout, close) out of the queue; a grant handed to
-- this very wait meanwhile (its inbox and nonce; not yet picked up) is given back, never a
-- permit the token holds otherwise; the permits free go to the next in line.
--
-- Purges ended leases and dead waiters too. Repeating the call is harmless.
-- Time comes from Redis TIME only (ms).
--
-- KEYS[1] sem_holders    ZSET token -> lease end (ms)
-- KEYS[2] sem_info       HASH token -> fencing \t worker \t task_id
-- KEYS[3] sem_queue      ZSET waiting token -> ticket
-- KEYS[4] sem_waiters    ZSET waiting token -> liveness deadline (ms)
-- KEYS[5] sem_inboxes    HASH waiting token -> inbox \t nonce \t grant_ms \t worker \t task_id
-- KEYS[6] sem_state      HASH limit, fencing, ticket
-- ARGV[1] token          the owner token that stops waiting
-- ARGV[2] channel        the grants channel (sem_lib)
-- ARGV[3] inbox          the inbox id of the wait that gives up
-- ARGV[4] nonce          its nonce
-- Returns: 1 when the token was queued and has left; 2 when this wait had been granted a
--          permit meanwhile, now given back; 0 when it was neither.

--!include sem_lib

local k = {holders = KEYS[1], info = KEYS[2], queue = KEYS[3], waiters = KEYS[4],
    inboxes = KEYS[5], state = KEYS[6], channel = ARGV[2]}
local token = ARGV[1]
local now = sem_now()
local left = redis.call('ZREM', k.queue, token)
redis.call('ZREM', k.waiters, token)
redis.call('HDEL', k.inboxes, token)
if left == 0 then
    local record = redis.call('HGET', k.info, token)
    local h = record and sem_fields(record) or {}
    if h[4] == ARGV[3] and h[5] == ARGV[4] then
        redis.call('HDEL', k.info, token)
        redis.call('ZREM', k.holders, token)
        left = 2
    end
end
sem_purge_holders(k, now)
sem_purge_waiters(k, now)
sem_hand_over(k, now)
return left
