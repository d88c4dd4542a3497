-- task_finish: compare-and-set a live task into a terminal state (done or failed), and start
-- the retention of the task and of its Idempotency-Key. Python decides whether the move is
-- legal (domain.Task.transition); this only applies it.
--
-- KEYS[1] task              hash of the task
-- KEYS[2] counters          hash: queued, running, done, failed
-- KEYS[3] state_index       the index of the current state (sorted set of task ids)
-- KEYS[4] idempotency       only when the task has a key: the task's Idempotency-Key
-- ARGV[1] task_id           member of KEYS[3]
-- ARGV[2] op                a token unique to this call, kept in the task hash as field `op`
-- ARGV[3] expected_version  the version the caller read
-- ARGV[4] expected_state    the state the caller read (a counters field)
-- ARGV[5] new_state         done or failed (a counters field)
-- ARGV[6] ttl_s             retention in seconds, from now
-- ARGV[7] channel           the task's pub/sub channel
-- ARGV[8] event             the event JSON to publish on ARGV[7]
-- ARGV[9] idem_value        `<task_id> <fingerprint>`, the value KEYS[4] holds for this task
-- ARGV[10..] changes        field, value pairs that change
-- Returns: 1 when applied (or already applied by this same call: a client retry after a lost reply
--          finds its own `op`), 0 when the task is gone or not at the expected version and state (a
--          stale or repeated transition; a finished task stays finished): then nothing is written.

local stored = redis.call('HMGET', KEYS[1], 'version', 'state', 'op')
if stored[3] == ARGV[2] then
    return 1
end
if stored[1] ~= ARGV[3] or stored[2] ~= ARGV[4] then
    return 0
end

redis.call('HSET', KEYS[1], 'op', ARGV[2], unpack(ARGV, 10))
redis.call('ZREM', KEYS[3], ARGV[1])
-- Exactly one count moves, so queued + running + done + failed stays the number of tasks.
redis.call('HINCRBY', KEYS[2], ARGV[4], -1)
redis.call('HINCRBY', KEYS[2], ARGV[5], 1)
redis.call('EXPIRE', KEYS[1], ARGV[6])
-- The key lives as long as its task, so a replay within the TTL of the finish still finds it.
-- A key that outlived its TTL and now names another task is left alone.
if #KEYS == 4 and redis.call('GET', KEYS[4]) == ARGV[9] then
    redis.call('EXPIRE', KEYS[4], ARGV[6])
end
redis.call('PUBLISH', ARGV[7], ARGV[8])
return 1
