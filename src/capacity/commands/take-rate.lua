--[[
  Takes the cost of one request from every bucket that limits it (its key's and its source's,
  requests and tokens), or from none; and leases to the caller a budget from each bucket that
  stays at or above its reserve after it, to spend without asking again. A bucket refills
  continuously at its limit per minute, up to its limit.

  Input:
    KEYS[1..n] buckets (hash: l level, t time of that level, epoch ms of Redis' clock)

    ARGV[1] announcement channel
    ARGV[2] instance of the caller
    ARGV[3..] for each key in the order of KEYS, four values: limit per minute, cost, budget
              to lease (0: none), reserve

  Output:
    {1, level, budget, level, budget, ...}   granted: each bucket's level after it, and the budget leased
    {0, i, ms, level, level, ...}            refused, first by KEYS[i]: ms until every refusing bucket
                                             holds the cost (-1: never, the cost is above the limit),
                                             and each bucket's level
  Levels are strings (they have fractions). A bucket that falls below its reserve, or refuses, is
  announced 'low': replicas holding budgets of it give them back.
]]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local levels, low = {}, {}
local refused, wait = 0, 0
for i = 1, #KEYS do
  local at = 3 + (i - 1) * 4
  local limit, cost = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
  local state = redis.call('HMGET', KEYS[i], 'l', 't')
  local level = limit
  if state[1] then level = math.min(limit, tonumber(state[1]) + math.max(0, now - tonumber(state[2])) * limit / 60000) end
  levels[i] = level
  if level < cost then
    if refused == 0 then refused = i end
    low[#low + 1] = KEYS[i]
    if cost > limit then
      wait = -1
    elseif wait >= 0 then
      wait = math.max(wait, math.ceil((cost - level) * 60000 / limit))
    end
  end
end

local function announce()
  if #low > 0 then redis.call('PUBLISH', ARGV[1], cjson.encode({ type = 'low', from = ARGV[2], buckets = low })) end
end

if refused > 0 then
  announce()
  local reply = { 0, refused, wait }
  for i = 1, #KEYS do reply[#reply + 1] = tostring(levels[i]) end
  return reply
end

local reply = { 1 }
for i = 1, #KEYS do
  local at = 3 + (i - 1) * 4
  local limit, cost, budget, reserve = tonumber(ARGV[at]), tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
  local level = levels[i] - cost
  local leased = 0
  if budget > 0 and level - budget >= reserve then
    level = level - budget
    leased = budget
  end
  if levels[i] >= reserve and level < reserve then low[#low + 1] = KEYS[i] end
  redis.call('HSET', KEYS[i], 'l', level, 't', now)
  -- A bucket left alone is full again by then: the key may go.
  redis.call('PEXPIRE', KEYS[i], math.ceil((limit - level) * 60000 / limit) + 1000)
  reply[#reply + 1] = tostring(level)
  reply[#reply + 1] = leased
end
announce()
return reply
