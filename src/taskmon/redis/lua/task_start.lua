-- task_start: record a new queued task, atomically with its Idempotency-Key when it has one.
--
-- KEYS[1] task         hash of the new task (redis/codec.py); no TTL while the task is live
-- KEYS[2] state_index  the queued index: sorted set of queued task ids, by creation time
-- KEYS[3] counters     hash: queued, running, done, failed
-- KEYS[4] recent       sorted set of the newest task ids by creation time, kept to ARGV[9]
-- KEYS[5] idempotency  only when the task has a key: string `<task_id> <fingerprint>`
-- ARGV[1] task_id      the new task's id (member of KEYS[2])
-- ARGV[2] op           a token unique to this call, kept in the task hash as field `op`
-- ARGV[3] created_at   score in KEYS[2] and KEYS[4]
-- ARGV[4] channel      the task's pub/sub channel
-- ARGV[5] event        the event JSON to publish on ARGV[4]
-- ARGV[6] idem_value   `<task_id> <fingerprint>` to store in KEYS[5] ("" without a key)
-- ARGV[7] ttl_s        TTL of KEYS[5] in seconds ("" without a key)
-- ARGV[8] stale        a claim of KEYS[5] whose task the caller found gone: treated as free
-- ARGV[9] recent_max   how many ids KEYS[4] keeps (the newest by creation time)
-- ARGV[10..] fields    field, value pairs of the task hash
-- Returns: {"created"} when written, or already written by this same call (a client retry
--          after a lost reply finds its own `op`); {"claimed", <value of KEYS[5]>} when the key
--          names another task; {"exists"} when KEYS[1] already holds another task, or the bar that
--          task_settle_start leaves when this call arrives after its caller gave up. Only "created"
--          writes anything.

if redis.call('HGET', KEYS[1], 'op') == ARGV[2] then
    return {'created'}
end
if #KEYS == 5 then
    local claim = redis.call('GET', KEYS[5])
    if claim and claim ~= ARGV[8] then
        return {'claimed', claim}
    end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
    return {'exists'}
end

if #KEYS == 5 then
    redis.call('SET', KEYS[5], ARGV[6], 'EX', ARGV[7])
end
redis.call('HSET', KEYS[1], 'op', ARGV[2], unpack(ARGV, 10))
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
-- Bounded here, where it grows: the index never holds more than ARGV[9] ids.
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -(tonumber(ARGV[9]) + 1))
redis.call('HINCRBY', KEYS[3], 'queued', 1)
redis.call('PUBLISH', ARGV[4], ARGV[5])
return {'created'}
