-- sem_waiting: the tokens waiting for a permit, in queue order, with the Redis time.
--
-- Read-only: waiters past their liveness deadline are skipped, not purged.
--
-- KEYS[1] sem_queue    ZSET waiting token -> ticket
-- KEYS[2] sem_waiters  ZSET waiting token -> liveness deadline (ms)
-- KEYS[3] sem_inboxes  HASH waiting token -> inbox \t nonce \t grant_ms \t worker \t task_id
-- ARGV: none
-- Returns: {now_ms, token_1, ticket_1, inbox_record_1, token_2, ...} for every live waiter
--          (the record is false, i.e. nil in Python, if the hash lost the entry).

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local queued = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local out = {now}
for i = 1, #queued, 2 do
    local alive = tonumber(redis.call('ZSCORE', KEYS[2], queued[i]))
    if alive and alive > now then
        out[#out + 1] = queued[i]
        out[#out + 1] = tonumber(queued[i + 1])
        out[#out + 1] = redis.call('HGET', KEYS[3], queued[i])
    end
end
return out
