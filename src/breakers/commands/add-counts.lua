--[[
  Adds one replica's attempt counts to the current bucket of a candidate's rolling window, drops
  the buckets that left the window, and sums the rest.

  Input:
    KEYS[1] attempt counts of the candidate (hash: '<bucket>:f' fires, '<bucket>:x' failures)

    ARGV[1] current bucket (epoch ms / bucket length)
    ARGV[2] fires to add
    ARGV[3] failures to add
    ARGV[4] oldest bucket still in the window
    ARGV[5] life of the hash (ms): the window's length

  Output:
    {fires, failures} over the window
]]
if tonumber(ARGV[2]) > 0 then redis.call('HINCRBY', KEYS[1], ARGV[1] .. ':f', ARGV[2]) end
if tonumber(ARGV[3]) > 0 then redis.call('HINCRBY', KEYS[1], ARGV[1] .. ':x', ARGV[3]) end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local all = redis.call('HGETALL', KEYS[1])
local oldest = tonumber(ARGV[4])
local fires, failures = 0, 0
for i = 1, #all, 2 do
  local field = all[i]
  local sep = string.find(field, ':', 1, true)
  local bucket = tonumber(string.sub(field, 1, sep - 1))
  if bucket < oldest then
    redis.call('HDEL', KEYS[1], field)
  elseif string.sub(field, sep + 1) == 'f' then
    fires = fires + tonumber(all[i + 1])
  else
    failures = failures + tonumber(all[i + 1])
  end
end
return {fires, failures}
