-- sem_acquire: grant a permit at once when nobody waits and one is free, else queue the token.
--
-- The fast path, for a token nobody queued: purge ended leases (one read when none ended), a
-- held token gets its permit back unchanged (same fencing, lease not extended, so a retried
-- call is a no-op), and with an empty queue and a free permit the grant is made: no ticket,
-- queue or waiter writes. Otherwise the token is queued once (its ticket kept across calls),
-- its liveness deadline and its inbox id are refreshed, the free permits are handed over to the
-- head of the queue (sem_lib), and the token learns whether that granted it. A grant made here
-- or by another script's hand-over is the same stored grant: a waiter whose announcement was
-- lost finds it at its next call. Time comes from Redis TIME only (ms).
--
-- KEYS[1] sem_holders    ZSET token -> lease end (ms)
-- KEYS[2] sem_info       HASH token -> fencing \t worker \t task_id
-- KEYS[3] sem_queue      ZSET waiting token -> ticket
-- KEYS[4] sem_waiters    ZSET waiting token -> liveness deadline (ms)
-- KEYS[5] sem_inboxes    HASH waiting token -> inbox \t nonce \t grant_ms \t worker \t task_id
-- KEYS[6] sem_state      HASH limit, fencing (grant counter), ticket (queue counter)
-- ARGV[1] token          the owner token
-- ARGV[2] worker         the holder's worker id (shown, never checked)
-- ARGV[3] task_id        the holder's task id (shown, never checked)
-- ARGV[4] lease_ms       lease length of a grant made to this token here, in ms
-- ARGV[5] waiter_ttl_ms  how long a waiter stays queued without another call, in ms
-- ARGV[6] grant_ms       first lease of a grant handed over while queued, in ms
-- ARGV[7] inbox          the id of the inbox list of the caller's process
-- ARGV[8] nonce          this wait's id, echoed in its grant's announcement (a stale one is told apart)
-- ARGV[9] channel        the grants channel (sem_lib)
-- Returns: {1, fencing, worker, task_id, lease_ms} when the token holds a permit (new or
--          already held; lease_ms its lease from now); {0, rank, free} when it waits (0-based
--          rank in the queue, free permits); {-1} when no limit is stored (the caller stores
--          its default once and calls again).

--!include sem_lib

local k = {holders = KEYS[1], info = KEYS[2], queue = KEYS[3], waiters = KEYS[4],
    inboxes = KEYS[5], state = KEYS[6], channel = ARGV[9]}
local token = ARGV[1]
local now = sem_now()
sem_purge_holders(k, now)

local held = redis.call('HGET', k.info, token)
if held then
    local lease_end = tonumber(redis.call('ZSCORE', k.holders, token))
    local h = sem_fields(held)
    if lease_end and #h >= 3 and tonumber(h[1]) then
        return {1, tonumber(h[1]), h[2], h[3], lease_end - now}
    end
    -- A record without its holder, or not ours (damaged from outside, an older version's):
    -- forget both, then treat the token as new.
    redis.call('HDEL', k.info, token)
    redis.call('ZREM', k.holders, token)
end

local limit = tonumber(redis.call('HGET', k.state, 'limit'))
if not limit then
    return {-1}
end
if redis.call('ZCARD', k.queue) == 0 and redis.call('ZCARD', k.holders) < limit then
    local fencing = redis.call('HINCRBY', k.state, 'fencing', 1)
    redis.call('ZADD', k.holders, now + tonumber(ARGV[4]), token)
    redis.call('HSET', k.info, token, table.concat({fencing, ARGV[2], ARGV[3]}, '\t'))
    return {1, fencing, ARGV[2], ARGV[3], tonumber(ARGV[4])}
end

if not redis.call('ZSCORE', k.queue, token) then
    redis.call('ZADD', k.queue, redis.call('HINCRBY', k.state, 'ticket', 1), token)
end
redis.call('ZADD', k.waiters, now + tonumber(ARGV[5]), token)
redis.call('HSET', k.inboxes, token,
    table.concat({ARGV[7], ARGV[8], ARGV[6], ARGV[2], ARGV[3]}, '\t'))
sem_purge_waiters(k, now)
-- The safety net of every other script's hand-over: permits free with waiters ahead (a lease
-- that simply ended, an announcement lost) are granted here, this token's included (not announced: it
-- learns from this reply).
sem_hand_over(k, now, token, tonumber(ARGV[4]))

local granted = redis.call('HGET', k.info, token)
if granted then
    local h = sem_fields(granted)
    local lease_end = tonumber(redis.call('ZSCORE', k.holders, token))
    return {1, tonumber(h[1]), h[2], h[3], lease_end - now}
end
return {0, redis.call('ZRANK', k.queue, token), limit - redis.call('ZCARD', k.holders)}
