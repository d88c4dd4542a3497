-- metrics_read: the global figures /metrics exports, read at one instant (read-only).
--
-- Every figure is O(1) or O(log N): the counters hash, the queued index's first entry, and
-- ZCOUNTs by the Redis clock (unexpired leases, live waiters, live workers). Nothing is purged
-- here: an ended lease or a dead waiter is simply not counted.
--
-- KEYS[1] counters     HASH queued, running (current), done, failed (since the store began)
-- KEYS[2] state_index  the queued index: ZSET queued task id -> entry time (s, worker clock)
-- KEYS[3] workers      ZSET worker id -> heartbeat deadline (ms)
-- KEYS[4] sem_holders  ZSET token -> lease end (ms)
-- KEYS[5] sem_waiters  ZSET waiting token -> liveness deadline (ms)
-- KEYS[6] sem_state    HASH limit, set_by, fencing, ticket
-- ARGV: none
-- Returns: {now_ms, queued, running, done, failed, oldest_queued_entry (s, "" when none),
--          workers_alive, in_use, waiters, limit ("" when none is stored)}; the counts as
--          stored (false when absent).

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local counts = redis.call('HMGET', KEYS[1], 'queued', 'running', 'done', 'failed')
local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local live = '(' .. now
return {
    now,
    counts[1], counts[2], counts[3], counts[4],
    oldest[2] or '',
    redis.call('ZCOUNT', KEYS[3], live, '+inf'),
    redis.call('ZCOUNT', KEYS[4], live, '+inf'),
    redis.call('ZCOUNT', KEYS[5], live, '+inf'),
    redis.call('HGET', KEYS[6], 'limit') or '',
}
