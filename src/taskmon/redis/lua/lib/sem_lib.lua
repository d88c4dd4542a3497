-- sem_lib: what the semaphore scripts share, pasted where a script says `--!include sem_lib`.
--
-- Functions only, no KEYS or ARGV of its own: each takes the keys it touches in `k`, a table
-- the including script builds from its KEYS (holders, info, queue, waiters, inboxes, state)
-- and, for the hand-over, the grants channel from its ARGV. Time comes from Redis TIME (ms).
--
-- Records, tab-separated (no JSON to encode or decode on the hot path):
--   info[token]    = fencing \t worker \t task_id [\t inbox \t nonce]  (a holder; the wait
--                    it was handed to, when granted by a hand-over)
--   inboxes[token] = inbox \t nonce \t grant_ms \t worker \t task_id  (a waiter)
--   a grant announced = inbox \t token \t fencing \t grant_ms \t nonce
-- Returns: nothing (a library).

local function sem_now()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function sem_fields(record)
    local out = {}
    for field in string.gmatch(record .. '\t', '([^\t]*)\t') do
        out[#out + 1] = field
    end
    return out
end

local function sem_fencing_of(record)
    return tonumber(string.match(record, '^(%d+)'))
end

-- The members of a sorted set scored by a deadline (ms) that it has passed, all of them: only
-- the oldest is read when none has (one command).
local function sem_ended(zset, now)
    local oldest = redis.call('ZRANGE', zset, 0, 0, 'WITHSCORES')
    if #oldest == 0 or tonumber(oldest[2]) > now then
        return {}
    end
    return redis.call('ZRANGEBYSCORE', zset, '-inf', now)
end

-- Remove `members` from each {command, key} of `removals`, in batches the Lua stack allows.
local function sem_remove(members, removals)
    for i = 1, #members, 1000 do
        local last = math.min(i + 999, #members)
        for _, removal in ipairs(removals) do
            redis.call(removal[1], removal[2], unpack(members, i, last))
        end
    end
    return #members
end

-- Every holder whose lease has ended goes, however many.
local function sem_purge_holders(k, now)
    return sem_remove(sem_ended(k.holders, now), {{'ZREM', k.holders}, {'HDEL', k.info}})
end

-- Every waiter past its liveness deadline leaves the queue, the same way.
local function sem_purge_waiters(k, now)
    return sem_remove(sem_ended(k.waiters, now),
        {{'ZREM', k.waiters}, {'ZREM', k.queue}, {'HDEL', k.inboxes}})
end

-- Grant the permits free now (holders purged first) to the head of the queue, in order: each
-- grant is stored (holders, info) with the waiter's short first lease, then announced on the
-- grants channel to the waiter's process (its inbox id), which wakes the waiting thread with
-- it: no second acquire. An announcement that is lost (a subscriber away) loses nothing: the
-- waiter finds the stored grant at its next call. A waiter past its deadline is dropped.
-- `caller`, when given, is a token that learns of its grant from the script's reply: it is
-- not announced, and its lease is `caller_ms` (it is alive and told at once). A record that is
-- not five fields (damaged, or an older version's) drops its waiter. Returns the grants made.
local function sem_hand_over(k, now, caller, caller_ms)
    if redis.call('ZCARD', k.queue) == 0 then
        return 0
    end
    local limit = tonumber(redis.call('HGET', k.state, 'limit'))
    if not limit then
        return 0
    end
    local free = limit - redis.call('ZCARD', k.holders)
    local granted = 0
    while free > 0 do
        local head = redis.call('ZRANGE', k.queue, 0, 0)[1]
        if not head then
            break
        end
        local alive = tonumber(redis.call('ZSCORE', k.waiters, head))
        local record = redis.call('HGET', k.inboxes, head)
        redis.call('ZREM', k.queue, head)
        redis.call('ZREM', k.waiters, head)
        redis.call('HDEL', k.inboxes, head)
        local w = record and sem_fields(record) or {}
        if alive and alive > now and #w == 5 then
            local fencing = redis.call('HINCRBY', k.state, 'fencing', 1)
            local lease_ms = tonumber(w[3])
            if head == caller then
                lease_ms = caller_ms
            end
            redis.call('ZADD', k.holders, now + lease_ms, head)
            redis.call('HSET', k.info, head, table.concat({fencing, w[4], w[5], w[1], w[2]}, '\t'))
            if head ~= caller then
                redis.call('PUBLISH', k.channel,
                    table.concat({w[1], head, fencing, w[3], w[2]}, '\t'))
            end
            free = free - 1
            granted = granted + 1
        end
    end
    return granted
end
