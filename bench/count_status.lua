-- wrk script: count the answers per HTTP status and print them at the end, as
--   statuses: 200=12345 502=17
-- (bench/run.py reads this line). With WRK_BASE_SCRIPT set to another wrk
-- script (an absolute path, e.g. bench/post_process.lua), that script runs
-- first and sets the request (method, headers, body).
-- Defining response() makes wrk read every answer's headers and body into Lua
-- (off wrk's fast path): the figures are a little lower than without it.

local base = os.getenv("WRK_BASE_SCRIPT")
if base and base ~= "" then
   dofile(base)
end

-- Each thread's own counts (in the thread's Lua state).
statuses = {}

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

-- The threads, collected in the main Lua state; done() reads their counts.
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function done(summary, latency, requests)
   local total = {}
   for _, thread in ipairs(threads) do
      for status, count in pairs(thread:get("statuses")) do
         total[status] = (total[status] or 0) + count
      end
   end
   local codes = {}
   for status in pairs(total) do
      table.insert(codes, status)
   end
   table.sort(codes)
   local parts = {}
   for _, status in ipairs(codes) do
      table.insert(parts, status .. "=" .. total[status])
   end
   io.write("statuses: " .. table.concat(parts, " ") .. "\n")
end
