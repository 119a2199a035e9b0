--[[
  Forgets an open breaker and its counts, releases the probe lock of the replica whose probe
  succeeded, and announces the close, in one step.

  Input:
    KEYS[1] open record of the candidate
    KEYS[2] probe lock of the candidate
    KEYS[3] attempt counts of the candidate

    ARGV[1] token of the probe lock to release, or ''
    ARGV[2] announcement channel
    ARGV[3] announcement

  Output:
    1
]]
redis.call('DEL', KEYS[1], KEYS[3])
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
