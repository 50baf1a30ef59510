-- POST /v1/links with one fresh registration per request (the peer of the
-- batch endpoint: what an integration service does without batching).
local token = os.getenv("TOKEN")
local counter = 0
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

request = function()
  counter = counter + 1
  local body = string.format('{"object":"single/t%d/%d.json","entities":["lead:%d"]}',
    tid, counter, counter % 100000 + 1)
  return wrk.format("POST", "/v1/links",
    { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token }, body)
end
