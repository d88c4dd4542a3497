-- sem_upgrade: carry what an older version's semaphore kept in keys of their own into the state
-- hash, once: the fencing counter (so fencing tokens keep growing across the upgrade) and an
-- operator's cap (kept as an operator's). Nothing is read when the state already has them.
--
-- KEYS[1] sem_state           HASH limit, set_by, fencing, ticket
-- KEYS[2] sem_legacy_fencing  STRING the older version's fencing counter
-- KEYS[3] sem_legacy_limit    STRING the older version's cap, set by PUT /api/admin/concurrency
-- ARGV: none
-- Returns: {fencing carried (0 or 1), limit carried (0 or 1)}.

local state = KEYS[1]
local carried = {0, 0}
if redis.call('HEXISTS', state, 'fencing') == 0 then
    local fencing = tonumber(redis.call('GET', KEYS[2]))
    if fencing then
        redis.call('HSET', state, 'fencing', fencing)
        carried[1] = 1
    end
end
if redis.call('HEXISTS', state, 'limit') == 0 then
    local limit = tonumber(redis.call('GET', KEYS[3]))
    if limit then
        redis.call('HSET', state, 'limit', limit, 'set_by', 'admin')
        carried[2] = 1
    end
end
return carried
