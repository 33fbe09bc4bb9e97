-- wrk script: submit a small processing task per request.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"data": "benchmark payload", "iterations": 10}'
