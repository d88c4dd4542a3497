-- metrics_keyspace_store: store one step of the namespace's key count, unless another worker
-- stored a step of the same pass first (a compare-and-set on the cursor the step began from).
--
-- The step itself (SCAN) runs in the client, bounded in time; only its result is written
-- here, so two workers stepping at once never count a key twice: the one that comes second
-- finds the cursor moved and writes nothing, and the pass never goes back.
--
-- KEYS[1] metrics_keyspace  HASH: cursor and scan_* (the pass under way), keys... (the last)
-- ARGV[1] began_at          the cursor the step began from ('0': a new pass)
-- ARGV[2..] pairs           field, value of each field to write
-- Returns: 1 when written, 0 when another step of the pass came first.

local stored = redis.call('HGET', KEYS[1], 'cursor') or '0'
if stored ~= ARGV[1] then
    return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
