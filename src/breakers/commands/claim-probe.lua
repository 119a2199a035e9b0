--[[
  Claims the probe lock of an open candidate: granted when the open record's until has passed
  (or there is none) and no one holds the lock.

  Input:
    KEYS[1] open record of the candidate (hash: openedAt, until, replica)
    KEYS[2] probe lock of the candidate

    ARGV[1] now (epoch ms)
    ARGV[2] token of the claimant
    ARGV[3] life of the lock (ms)

  Output:
    'granted' the lock is the claimant's for ARGV[3] ms
    until     (epoch ms) the record's window is not due yet
    ''        someone else holds the lock
]]

-- The open record outlives its reset time while a probe is pending, so a replica that starts
-- between the reset time and the verdict still skips the candidate. (Same in renew-probe.lua.)
local function keep(key, ms)
  local ttl = redis.call('PTTL', key)
  if ttl >= 0 and ttl < ms then redis.call('PEXPIRE', key, ms) end
end

local u = redis.call('HGET', KEYS[1], 'until')
if u and tonumber(u) > tonumber(ARGV[1]) then return u end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then
  keep(KEYS[1], 2 * tonumber(ARGV[3]))
  return 'granted'
end
return ''
