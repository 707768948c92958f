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
-- through string.format('%d'): how redis.call formats a Lua number differs
-- between Redis versions.
--
-- Redis spends most of a decision's CPU here (INFO commandstats usec_per_call),
-- so the script is written for it: locals instead of global lookups, one reply
-- table filled as it goes, and SET ... PXAT rather than PX, which Redis rewrites
-- into a new PXAT argument vector on every call for propagation.
local n = #KEYS
if #ARGV ~= 2 * n then
  return redis.error_reply('ERR gcra.lua: want 2 arguments per key, got ' .. #ARGV .. ' for ' .. n .. ' keys')
end
local call, tonumber, format = redis.call, tonumber, string.format

local t = call('TIME')
-- TIME's two digit strings convert by Lua's arithmetic coercion.
local now = t[1] * 1000000 + t[2]

local reply, newtats = {1}, {}
for i = 1, n do
  local inc, window = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  if not inc or not window then
    return redis.error_reply('ERR gcra.lua: non-numeric argument for ' .. KEYS[i])
  end
  local tat = now
  local stored = call('GET', KEYS[i])
  if stored then
    local v = tonumber(stored)
    if not v then
      return redis.error_reply('ERR gcra.lua: ' .. KEYS[i] .. ' does not hold a number')
    end
    if v > now then
      tat = v
    end
  end
  -- Beyond now+W only after a clock step back or a smaller limit: the bucket is
  -- empty; it does not owe more than the current limit allows.
  if tat > now + window then
    tat = now + window
  end
  local newtat = tat + inc
  local wait = newtat - window - now
  newtats[i] = newtat
  local j = 3 * i
  if wait > 0 then
    reply[1] = 0
    reply[j - 1], reply[j], reply[j + 1] = 1, tat - now, wait
  else
    reply[j - 1], reply[j], reply[j + 1] = 0, tat - now, 0
  end
end
if reply[1] == 0 then
  -- Nothing is charged: the reply holds each bucket's level before the charge.
  return reply
end

for i = 1, n do
  local newtat = newtats[i]
  reply[3 * i] = newtat - now
  -- Expire when the bucket is full again (at its new TAT): from then on it
  -- equals an absent one. PXAT needs Redis >= 6.2.
  call('SET', KEYS[i], format('%d', newtat), 'PXAT', format('%d', math.ceil(newtat / 1000)))
end
return reply
