--[[
  Extends a probe lock held under the token, and the open record with it.

  Input:
    KEYS[1] open record of the candidate
    KEYS[2] probe lock of the candidate

    ARGV[1] token of the holder
    ARGV[2] new life of the lock (ms)

  Output:
    1 renewed
    0 the lock is not held under that token (it expired, or another replica holds it)
]]

-- The open record outlives its reset time while a probe is pending, so a replica that starts
-- between the reset time and the verdict still skips the candidate. (Same in claim-probe.lua.)
local function keep(key, ms)
  local ttl = redis.call('PTTL', key)
  if ttl >= 0 and ttl < ms then redis.call('PEXPIRE', key, ms) end
end

if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
keep(KEYS[1], 2 * tonumber(ARGV[2]))
return 1
