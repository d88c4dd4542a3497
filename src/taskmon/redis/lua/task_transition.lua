-- task_transition: compare-and-set a live task into the other live state (queued -> running).
-- Python decides whether the move is legal (domain.Task.transition); this only applies it.
--
-- KEYS[1] task              hash of the task
-- KEYS[2] counters          hash: queued, running, done, failed
-- KEYS[3] state_index       the index of the current state (sorted set of task ids)
-- KEYS[4] state_index       the index of the new state
-- ARGV[1] task_id           member of KEYS[3] and KEYS[4]
-- ARGV[2] op                a token unique to this call, kept in the task hash as field `op`
-- ARGV[3] expected_version  the version the caller read
-- ARGV[4] expected_state    the state the caller read (a counters field)
-- ARGV[5] new_state         the state to enter (a counters field)
-- ARGV[6] score             score of the task in KEYS[4] (the time it entered the state)
-- ARGV[7] channel           the task's pub/sub channel
-- ARGV[8] event             the event JSON to publish on ARGV[7]
-- ARGV[9..] changes         field, value pairs that change
-- Returns: 1 when applied (or already applied by this same call: a client retry after a lost reply
--          finds its own `op`), 0 when the task is gone or not at the expected version and state (a
--          stale or repeated transition): then nothing is written or published.

local stored = redis.call('HMGET', KEYS[1], 'version', 'state', 'op')
if stored[3] == ARGV[2] then
    return 1
end
if stored[1] ~= ARGV[3] or stored[2] ~= ARGV[4] then
    return 0
end

redis.call('HSET', KEYS[1], 'op', ARGV[2], unpack(ARGV, 9))
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[6], ARGV[1])
-- Exactly one count moves, so queued + running + done + failed stays the number of tasks.
redis.call('HINCRBY', KEYS[2], ARGV[4], -1)
redis.call('HINCRBY', KEYS[2], ARGV[5], 1)
redis.call('PUBLISH', ARGV[7], ARGV[8])
return 1
