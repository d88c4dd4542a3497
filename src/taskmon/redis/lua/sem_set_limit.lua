-- sem_set_limit: store the cap every worker obeys from its next acquire, and hand the permits
-- it frees over to the head of the queue.
--
-- Two sources: an operator's live change (`admin`, PUT /api/admin/concurrency) always wins;
-- a worker's configured default (`config`, at start-up) is stored unless an operator's cap is,
-- so the newest configuration applies to every worker and no worker keeps a cap of its own.
-- A restore (`restore-admin`, `restore-config`: a Redis that forgot its cap is given it back)
-- is stored only when no cap is, with the source it names.
-- Holders over a lowered cap keep their permits (nobody is revoked). Purges ended leases and
-- dead waiters, then grants in queue order, each grant announced to its waiter (sem_lib).
-- Time comes from Redis TIME only (ms).
--
-- KEYS[1] sem_holders  ZSET token -> lease end (ms)
-- KEYS[2] sem_info     HASH token -> fencing \t worker \t task_id
-- KEYS[3] sem_queue    ZSET waiting token -> ticket
-- KEYS[4] sem_waiters  ZSET waiting token -> liveness deadline (ms)
-- KEYS[5] sem_inboxes  HASH waiting token -> inbox \t nonce \t grant_ms \t worker \t task_id
-- KEYS[6] sem_state    HASH limit, set_by (admin | config), fencing, ticket
-- ARGV[1] limit        the new cap (an integer >= 1, checked by the caller)
-- ARGV[2] channel      the grants channel (sem_lib)
-- ARGV[3] source       admin, config, restore-admin or restore-config (above)
-- Returns: {the cap in force, free permits under it before the hand-over (negative when
--          holders exceed it), 1 when this call stored its cap else 0}.

--!include sem_lib

local k = {holders = KEYS[1], info = KEYS[2], queue = KEYS[3], waiters = KEYS[4],
    inboxes = KEYS[5], state = KEYS[6], channel = ARGV[2]}
local now = sem_now()
local source = ARGV[3]
local stored = 0
if source == 'restore-admin' or source == 'restore-config' then
    if redis.call('HEXISTS', k.state, 'limit') == 0 then
        redis.call('HSET', k.state, 'limit', ARGV[1], 'set_by', string.sub(source, 9))
        stored = 1
    end
elseif source == 'admin' or redis.call('HGET', k.state, 'set_by') ~= 'admin' then
    redis.call('HSET', k.state, 'limit', ARGV[1], 'set_by', source)
    stored = 1
end
local limit = tonumber(redis.call('HGET', k.state, 'limit'))
sem_purge_holders(k, now)
sem_purge_waiters(k, now)
local free = limit - redis.call('ZCARD', k.holders)
sem_hand_over(k, now)
return {limit, free, stored}
