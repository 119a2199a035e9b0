--[[
  Stores an open breaker's record, releases the probe lock of the replica whose probe failed,
  and announces the record, in one step.

  Input:
    KEYS[1] open record of the candidate (hash: openedAt, until, replica)
    KEYS[2] probe lock of the candidate

    ARGV[1] openedAt (epoch ms)
    ARGV[2] until (epoch ms)
    ARGV[3] replica
    ARGV[4] life of the record (ms)
    ARGV[5] token of the probe lock to release, or ''
    ARGV[6] '1': keep a stored record whose until is not earlier; '0': always overwrite
    ARGV[7] announcement channel
    ARGV[8] announcement

  Output:
    1 stored and announced
    0 a record with a later until is kept (ARGV[6] '1'); nothing changed
]]
if ARGV[6] == '1' then
  local current = redis.call('HGET', KEYS[1], 'until')
  if current and tonumber(current) >= tonumber(ARGV[2]) then return 0 end
end
redis.call('HSET', KEYS[1], 'openedAt', ARGV[1], 'until', ARGV[2], 'replica', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if ARGV[5] ~= '' and redis.call('GET', KEYS[2]) == ARGV[5] then redis.call('DEL', KEYS[2]) end
redis.call('PUBLISH', ARGV[7], ARGV[8])
return 1
