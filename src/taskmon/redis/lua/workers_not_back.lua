-- workers_not_back: how many workers that were alive when an outage began have not said since
-- that they are back (worker_promoted). The asker's own mark must still be the one it wrote:
-- if it is gone (Redis restarted empty, flushed) the registry cannot tell, so the answer is -1.
--
-- KEYS[1] workers           ZSET worker id -> heartbeat deadline (ms)
-- KEYS[2] workers_promoted  ZSET worker id -> when it last came back (ms, Redis clock)
-- ARGV[1] worker            the asker's full identity, `<X-Worker-Id>/<boot>`
-- ARGV[2] alive_from_ms     a worker whose heartbeat deadline is this or later counts as alive
--                           when the outage began (earlier than began_ms by one heartbeat TTL:
--                           a worker cut off first may have beaten last well before)
-- ARGV[3] began_ms          when the asker's outage began (ms, Redis clock)
-- ARGV[4] mark_ms           the asker's own mark, as worker_promoted returned it
-- Returns: the number of other workers alive from alive_from_ms without a mark after
--          began_ms; -1 when the asker's own mark is not the one it wrote.

local own = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not own or tonumber(own) ~= tonumber(ARGV[4]) then
    return -1
end
local began = tonumber(ARGV[3])
local missing = 0
for _, worker in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[2], '+inf')) do
    if worker ~= ARGV[1] then
        local back = redis.call('ZSCORE', KEYS[2], worker)
        if not back or tonumber(back) <= began then
            missing = missing + 1
        end
    end
end
return missing
