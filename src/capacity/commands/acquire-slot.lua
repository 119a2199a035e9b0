--[[
  Takes one slot in every scope of a request (its candidate, its provider), or in none: a lease
  that expires unless renewed, so the slots of a replica that died come back by themselves.

  Input:
    KEYS[1..n] leases of each scope (sorted set: lease id -> expiry, epoch ms of Redis' clock)

    ARGV[1] lease id ('<instance>:<n>')
    ARGV[2] life of the lease (ms)
    ARGV[3] announcement channel
    ARGV[4] announcement published on a refusal (a 'want': holders of idle leases give them back)
    ARGV[5..4+n] limit of each scope, in the order of KEYS

  Output:
    {1}                 granted: the lease is in every scope
    {0, ms, id, ...}    refused: ms until the earliest lease of a full scope expires, and the
                        ids of the leases in the full scopes (their holders)
]]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local life = tonumber(ARGV[2])
local full = {}
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  if redis.call('ZCARD', KEYS[i]) >= tonumber(ARGV[4 + i]) then full[#full + 1] = KEYS[i] end
end
if #full == 0 then
  for i = 1, #KEYS do
    redis.call('ZADD', KEYS[i], now + life, ARGV[1])
    -- The set lives as long as its longest lease.
    if redis.call('PTTL', KEYS[i]) < life then redis.call('PEXPIRE', KEYS[i], life) end
  end
  return {1}
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
local reply = {0, 0}
local earliest
for _, key in ipairs(full) do
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if first[2] and (earliest == nil or tonumber(first[2]) < earliest) then earliest = tonumber(first[2]) end
  for _, id in ipairs(redis.call('ZRANGE', key, 0, -1)) do reply[#reply + 1] = id end
end
if earliest then reply[2] = earliest - now end
return reply
