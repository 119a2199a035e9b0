--[[
  Gives a lease back in every scope it holds and announces the freed slot, so a waiter on any
  replica can take it at once.

  Input:
    KEYS[1..n] leases of each scope of the lease (sorted set: lease id -> expiry)

    ARGV[1] lease id
    ARGV[2] announcement channel
    ARGV[3] announcement (a 'freed')

  Output:
    the number of scopes the lease was still in
]]
local removed = 0
for i = 1, #KEYS do removed = removed + redis.call('ZREM', KEYS[i], ARGV[1]) end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return removed
