-- POST /v1/links/batch with BATCH fresh registrations per request: object
-- keys unique per thread and request, each linked to one of 100,000 leads.
local batch = tonumber(os.getenv("BATCH") or "500")
local token = os.getenv("TOKEN")
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  thread_id = tid
end

request = function()
  counter = counter + 1
  local parts = {}
  for i = 1, batch do
    local n = (counter * batch + i)
    parts[i] = string.format('{"object":"bench/t%d/%d/%d.json","entities":["lead:%d"]}',
      thread_id, counter, i, n % 100000 + 1)
  end
  local body = '{"links":[' .. table.concat(parts, ",") .. ']}'
  return wrk.format("POST", "/v1/links/batch",
    { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token }, body)
end
