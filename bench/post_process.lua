-- wrk script: submit a processing task per request: WRK_ITERATIONS steps of
-- work (10, a small task, unless set).
local iterations = tonumber(os.getenv("WRK_ITERATIONS") or "") or 10
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"data": "benchmark payload", "iterations": ' .. iterations .. '}'
