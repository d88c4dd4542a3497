-- sem_holders: the unexpired holders and the Redis time, read atomically in one round trip.
--
-- Read-only: expired holders are skipped, not purged. Time comes from Redis TIME only (ms).
--
-- KEYS[1] sem_holders  ZSET token -> lease end (ms)
-- KEYS[2] sem_info     HASH token -> fencing \t worker \t task_id
-- ARGV: none
-- Returns: {now_ms, token_1, lease_end_ms_1, info_1, token_2, ...} for every unexpired
--          holder (info is false, i.e. nil in Python, if the hash lost the entry).

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')
local out = {now}
for i = 1, #live, 2 do
    out[#out + 1] = live[i]
    out[#out + 1] = tonumber(live[i + 1])
    out[#out + 1] = redis.call('HGET', KEYS[2], live[i])
end
return out
