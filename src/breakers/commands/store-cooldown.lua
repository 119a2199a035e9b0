--[[
  Stores a 429 cooldown unless a longer one is stored, and announces it.

  Input:
    KEYS[1] cooldown of the candidate (string: until)

    ARGV[1] until (epoch ms)
    ARGV[2] life of the key (ms)
    ARGV[3] announcement channel
    ARGV[4] announcement

  Output:
    1
]]
local current = redis.call('GET', KEYS[1])
if not current or tonumber(current) < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
