-- task_restore: write back a copy of a task (kept by a worker while Redis was away, or forgotten
-- by a Redis restarted empty) unless Redis already has it at that version or a newer one, or has
-- it finished (a finish is final), with one exception: a reaper's `abandoned` is a presumption
-- (a heartbeat lapses alike when its worker died and when it was only cut off from Redis), so
-- the same worker's own `done` overrules it, at a version past the stored one. Counts,
-- live-state indexes, retention and the Idempotency-Key follow the copy.
--
-- KEYS[1] task         hash of the task
-- KEYS[2] counters     hash: queued, running, done, failed
-- KEYS[3] state_index  the queued index
-- KEYS[4] state_index  the running index
-- KEYS[5] recent       sorted set of the newest task ids by creation time, kept to ARGV[12]
-- KEYS[6] idempotency  only when the task has a key: string `<task_id> <fingerprint>`
-- ARGV[1] task_id      member of KEYS[3] or KEYS[4]
-- ARGV[2] version      the copy's version (a decimal integer)
-- ARGV[3] state        the copy's state (a counters field)
-- ARGV[4] score        the copy's score in its live index (the time it entered its state)
-- ARGV[5] ttl_s        retention in seconds from now, for a finished copy and for a key
-- ARGV[6] channel      the task's pub/sub channel
-- ARGV[7] event        the event JSON to publish on ARGV[6]
-- ARGV[8] idem_value   `<task_id> <fingerprint>` to store in KEYS[6] ("" without a key)
-- ARGV[9] worker       the copy's worker (the one whose `done` may overrule an `abandoned`)
-- ARGV[10] boot        the copy's worker's boot id: only the same process overrules; a stored
--                      record without one (an older version's) has the empty boot
-- ARGV[11] created_at  the task's creation time, its score in KEYS[5]
-- ARGV[12] recent_max  how many ids KEYS[5] keeps (the newest by creation time)
-- ARGV[13..] fields    field, value pairs of the whole task hash
-- Returns: {"kept", <stored version>} when Redis has this version or a newer one, or has the task
--          finished (nothing is written); {"behind", <stored version>} when the copy is its
--          worker's `done` of a task Redis holds failed `abandoned` at this version or a newer one
--          (nothing is written: send it again past that version); {"written", <"key_conflict" or
--          "">} when the copy was written, with "key_conflict" when KEYS[6] already names another
--          task (the key is left to it).

local stored = redis.call('HMGET', KEYS[1], 'version', 'state', 'void', 'error_code', 'worker',
    'boot')
local finished = stored[2] == 'done' or stored[2] == 'failed'
local presumed = stored[2] == 'failed' and stored[4] == 'abandoned' and ARGV[3] == 'done'
    and stored[5] == ARGV[9] and (stored[6] or '') == ARGV[10]
if stored[1] and not stored[3] and presumed and tonumber(stored[1]) >= tonumber(ARGV[2]) then
    return {'behind', stored[1]}
end
if stored[1] and not stored[3] and not presumed
    and (finished or tonumber(stored[1]) >= tonumber(ARGV[2])) then
    return {'kept', stored[1]}
end

if stored[1] and not stored[3] then
    -- An older copy: its count and index entry give way to the new one's.
    redis.call('HINCRBY', KEYS[2], stored[2], -1)
end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
-- Fields of the older copy (its `op`, a settle bar) must not survive into the new one.
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 13))
redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
if ARGV[3] == 'queued' then
    redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
elseif ARGV[3] == 'running' then
    redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
else
    redis.call('EXPIRE', KEYS[1], ARGV[5])
end

-- A task Redis forgot (or never had) is listed again; bounded as task_start bounds it.
redis.call('ZADD', KEYS[5], ARGV[11], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[5], 0, -(tonumber(ARGV[12]) + 1))

local conflict = ''
if #KEYS == 6 then
    local claim = redis.call('GET', KEYS[6])
    if not claim or claim == ARGV[8] then
        redis.call('SET', KEYS[6], ARGV[8], 'EX', ARGV[5])
    else
        conflict = 'key_conflict'
    end
end
redis.call('PUBLISH', ARGV[6], ARGV[7])
return {'written', conflict}
