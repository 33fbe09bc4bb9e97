-- wrk script: every request carries Authorization: Bearer <WRK_API_KEY>.
-- The key comes from the environment, not from wrk's command line (-H), so
-- that it never shows in a process list. With WRK_NEXT_SCRIPT set to another
-- wrk script (an absolute path, e.g. bench/post_process.lua), that script
-- runs next and may set the rest of the request or count the answers.
-- Setting a header alone keeps wrk on its fast path.

local key = os.getenv("WRK_API_KEY")
if not key or key == "" then
   error("WRK_API_KEY is not set")
end
wrk.headers["Authorization"] = "Bearer " .. key

local next_script = os.getenv("WRK_NEXT_SCRIPT")
if next_script and next_script ~= "" then
   dofile(next_script)
end
