--[[
  Extends the leases a replica holds. A lease that expired meanwhile (the replica stalled longer
  than its life) is not brought back: another replica may hold that slot now.

  Input:
    KEYS[1..n] leases of each scope (sorted set: lease id -> expiry)

    ARGV[1] new life of the leases (ms)
    ARGV[2..] for each key in the order of KEYS: how many leases, then their ids

  Output:
    the ids of the leases that were lost, once each
]]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local life = tonumber(ARGV[1])
local lost, seen = {}, {}
local at = 2
for i = 1, #KEYS do
  local count = tonumber(ARGV[at])
  for j = at + 1, at + count do
    local id = ARGV[j]
    local expiry = redis.call('ZSCORE', KEYS[i], id)
    if expiry and tonumber(expiry) > now then
      redis.call('ZADD', KEYS[i], 'XX', now + life, id)
    elseif not seen[id] then
      seen[id] = true
      lost[#lost + 1] = id
    end
  end
  if count > 0 and redis.call('PTTL', KEYS[i]) < life then redis.call('PEXPIRE', KEYS[i], life) end
  at = at + count + 1
end
return lost
