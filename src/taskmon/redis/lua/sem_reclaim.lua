-- sem_reclaim: re-register a permit a worker kept while Redis was away, over the limit if need
-- be (the failover layer calls it before admitting new work through Redis again).
--
-- A grant still live (unexpired) is kept, its lease extended; otherwise (it ended, or Redis
-- forgot it) the token is granted anew with a new fencing token, and leaves the queue if it
-- was waiting. Time comes from Redis TIME only (ms).
--
-- KEYS[1] sem_holders    ZSET token -> lease end (ms)
-- KEYS[2] sem_info       HASH token -> fencing \t worker \t task_id
-- KEYS[3] sem_queue      ZSET waiting token -> ticket
-- KEYS[4] sem_waiters    ZSET waiting token -> liveness deadline (ms)
-- KEYS[5] sem_inboxes    HASH waiting token -> inbox \t nonce \t grant_ms \t worker \t task_id
-- KEYS[6] sem_state      HASH limit, fencing, ticket
-- ARGV[1] token          the owner token
-- ARGV[2] worker         the holder's worker id
-- ARGV[3] task_id        the holder's task id
-- ARGV[4] lease_ms       lease length from now, in ms
-- Returns: {fencing, 0} when a live grant was kept; {fencing, 1} when granted anew.

--!include sem_lib

local k = {holders = KEYS[1], info = KEYS[2], queue = KEYS[3], waiters = KEYS[4],
    inboxes = KEYS[5], state = KEYS[6]}
local token = ARGV[1]
local now = sem_now()
local lease_end = tonumber(redis.call('ZSCORE', k.holders, token))
local record = redis.call('HGET', k.info, token)
if lease_end and record and lease_end > now then
    redis.call('ZADD', k.holders, 'XX', now + tonumber(ARGV[4]), token)
    return {sem_fencing_of(record), 0}
end

redis.call('ZREM', k.queue, token)
redis.call('ZREM', k.waiters, token)
redis.call('HDEL', k.inboxes, token)
local fencing = redis.call('HINCRBY', k.state, 'fencing', 1)
redis.call('ZADD', k.holders, now + tonumber(ARGV[4]), token)
redis.call('HSET', k.info, token, table.concat({fencing, ARGV[2], ARGV[3]}, '\t'))
return {fencing, 1}
