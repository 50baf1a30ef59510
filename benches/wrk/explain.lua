-- GET /v1/entities/lead:N/explain over many leads.
local token = os.getenv("TOKEN")
local leads = tonumber(os.getenv("LEADS") or "3000")
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", string.format("/v1/entities/lead:%d/explain", counter % leads + 1),
    { ["Authorization"] = "Bearer " .. token })
end
