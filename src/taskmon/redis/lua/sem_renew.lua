-- sem_renew: extend leases by a full TTL, each only when that very grant (token AND fencing)
-- holds its permit under an unexpired lease: one call renews all of a worker's leases.
--
-- Ended leases are purged first (all of them), so an ended lease cannot be revived however
-- many ended with it; the permits that frees are handed over to the head of the queue, each
-- grant announced to its waiter (sem_lib): a lease that simply ends wakes the next in
-- line at the next renewal of any worker. Repeating the call is harmless (it extends again).
-- Time comes from Redis TIME only (ms).
--
-- KEYS[1] sem_holders    ZSET token -> lease end (ms)
-- KEYS[2] sem_info       HASH token -> fencing \t worker \t task_id
-- KEYS[3] sem_queue      ZSET waiting token -> ticket
-- KEYS[4] sem_waiters    ZSET waiting token -> liveness deadline (ms)
-- KEYS[5] sem_inboxes    HASH waiting token -> inbox \t nonce \t grant_ms \t worker \t task_id
-- KEYS[6] sem_state      HASH limit, fencing, ticket
-- ARGV[1] lease_ms       new lease length from now, in ms
-- ARGV[2] channel        the grants channel (sem_lib)
-- ARGV[3..] pairs        token, fencing of each grant to renew
-- Returns: a list with, per pair in order, 1 when extended, 0 when that grant no longer held
--          its permit.

--!include sem_lib

local k = {holders = KEYS[1], info = KEYS[2], queue = KEYS[3], waiters = KEYS[4],
    inboxes = KEYS[5], state = KEYS[6], channel = ARGV[2]}
local now = sem_now()
if sem_purge_holders(k, now) > 0 then
    sem_purge_waiters(k, now)
    sem_hand_over(k, now)
end
local lease_end = now + tonumber(ARGV[1])
local renewed = {}
local grants = {unpack(ARGV, 3)}
for i = 1, #grants - 1, 2 do
    local token = grants[i]
    local record = redis.call('HGET', k.info, token)
    local ok = 0
    if record and sem_fencing_of(record) == tonumber(grants[i + 1])
            and redis.call('ZSCORE', k.holders, token) then
        redis.call('ZADD', k.holders, 'XX', lease_end, token)
        ok = 1
    end
    renewed[#renewed + 1] = ok
end
return renewed
