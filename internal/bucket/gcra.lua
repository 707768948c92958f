-- gcra.lua: charge several token buckets (in GCRA form), all or none.
-- It implements decide() of gcra.go; the two must stay identical.
--
-- KEYS[i]      bucket i; its value is its theoretical arrival time (TAT), an
--              integer in microseconds since the Unix epoch. Absent means full.
-- ARGV[2i-1]   bucket i's increment: cost × emission interval T, in µs
-- ARGV[2i]     bucket i's window W = T × maxTokens, in µs
--
-- Reply, a flat array of integers:
--   [1]        1 if every bucket held its cost and all were charged, else 0
--   [3i-1]     1 if bucket i lacked its cost, else 0
--   [3i]       µs of bucket i's window in use after the decision: newTAT−now
--              when charged, TAT−now when nothing was charged
--   [3i+1]     µs until bucket i holds its cost; 0 when it does now
--
-- Time is Redis TIME, so every replica of the processor shares one clock. Calling
-- TIME before writing is allowed because Redis >= 5 replicates scripts by their
-- effects (the SET commands), not by re-running them.
-- Lua 5.1 numbers are doubles, exact for integers below 2^53: now (~1.8e15) plus
-- windows of at most ten years (~3.2e14) stay exact. Numbers are handed to Redis
-- through string.format('%d') because redis.call would format them with %.14g.
local n = #KEYS
if #ARGV ~= 2 * n then
  return redis.error_reply('ERR gcra.lua: want 2 arguments per key, got ' .. #ARGV .. ' for ' .. n .. ' keys')
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local allowed = 1
local tats, newtats, retries = {}, {}, {}
for i = 1, n do
  local inc = tonumber(ARGV[2 * i - 1])
  local window = tonumber(ARGV[2 * i])
  if not inc or not window then
    return redis.error_reply('ERR gcra.lua: non-numeric argument for ' .. KEYS[i])
  end
  local tat = now
  local stored = redis.call('GET', KEYS[i])
  if stored then
    local v = tonumber(stored)
    if not v then
      return redis.error_reply('ERR gcra.lua: ' .. KEYS[i] .. ' does not hold a number')
    end
    if v > tat then
      tat = v
    end
  end
  -- Beyond now+W only after a clock step back or a smaller limit: the bucket is
  -- empty; it does not owe more than the current limit allows.
  if tat > now + window then
    tat = now + window
  end
  local newtat = tat + inc
  local allowat = newtat - window
  tats[i], newtats[i], retries[i] = tat, newtat, 0
  if allowat > now then
    allowed = 0
    retries[i] = allowat - now
  end
end

local reply = {allowed}
for i = 1, n do
  local denied, used = 0, newtats[i] - now
  if retries[i] > 0 then
    denied = 1
  end
  if allowed == 0 then
    -- Nothing is charged: report the level before the charge.
    used = tats[i] - now
  end
  reply[3 * i - 1], reply[3 * i], reply[3 * i + 1] = denied, used, retries[i]
end
if allowed == 0 then
  return reply
end

for i = 1, n do
  -- Expire when the bucket would be full again: from then on it equals an absent one.
  local px = math.ceil((newtats[i] - now) / 1000)
  redis.call('SET', KEYS[i], string.format('%d', newtats[i]), 'PX', string.format('%d', px))
end
return reply
