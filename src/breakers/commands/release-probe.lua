--[[
  Releases a probe lock, only when it is held under the token.

  Input:
    KEYS[1] probe lock of the candidate

    ARGV[1] token of the holder

  Output:
    1 released
    0 not held under that token
]]
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
