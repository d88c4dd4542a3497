-- task_settle_start: decide for good whether a start whose reply never came took effect.
--
-- A start can reach Redis after its caller gave up (its reply lost, or the call still queued
-- in a socket of a hung server). Reading the task is not enough to decide: the read may run
-- before the late start. This script decides atomically instead: whichever of the two runs
-- first wins, and the other is a no-op.
--
-- KEYS[1] task   hash of the task (redis/codec.py)
-- ARGV[1] ttl_s  how long a bar lasts: as long as a task would be kept, so it outlives any
--                late start
-- Returns: 1 when the task is recorded (the start landed: the caller runs it); 0 when it is not and
--          never will be: the hash now holds only the field `void`, so a late task_start finds the
--          key taken ({"exists"}) and writes nothing. A second call returns what the first did.

if redis.call('EXISTS', KEYS[1]) == 1 then
    if redis.call('HEXISTS', KEYS[1], 'void') == 1 then
        return 0
    end
    return 1
end
redis.call('HSET', KEYS[1], 'void', '1')
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 0
