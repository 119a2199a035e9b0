--[[
  Adds to buckets what a replica gives back (budgets it did not spend, tokens estimated above the
  usage reported) or takes what it owes (usage reported above the estimate). A bucket holds at
  most its limit and owes at most one limit.

  Input:
    KEYS[1..n] buckets (hash: l level, t time of that level, epoch ms of Redis' clock)

    ARGV[1..] for each key in the order of KEYS, two values: limit per minute, amount (negative: take)

  Output:
    each bucket's level after it, as strings
]]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local reply = {}
for i = 1, #KEYS do
  local at = 1 + (i - 1) * 2
  local limit, amount = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
  local state = redis.call('HMGET', KEYS[i], 'l', 't')
  local level = limit
  if state[1] then level = math.min(limit, tonumber(state[1]) + math.max(0, now - tonumber(state[2])) * limit / 60000) end
  level = math.max(-limit, math.min(limit, level + amount))
  redis.call('HSET', KEYS[i], 'l', level, 't', now)
  redis.call('PEXPIRE', KEYS[i], math.ceil((limit - level) * 60000 / limit) + 1000)
  reply[#reply + 1] = tostring(level)
end
return reply
