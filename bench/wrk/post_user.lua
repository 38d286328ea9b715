-- wrk script: POST /v1/users with a new, unique email on every request.
-- Reads the bearer token from BENCH_TOKEN. Emails are bench-<time>-<thread>-<random>-<n>@bench.example.com,
-- so neither two threads nor two runs (the warm-up and the measured run) ever collide.

local threads = 0

function setup(thread)
  -- Runs in the main Lua state once per thread: number the threads.
  threads = threads + 1
  thread:set("thread_id", threads)
end

local counter = 0
local tag = ""

function init(args)
  local id = thread_id or 0
  math.randomseed(os.time() * 1000 + id)
  tag = string.format("%d-%d-%06d", os.time(), id, math.random(0, 999999))
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. assert(os.getenv("BENCH_TOKEN"), "BENCH_TOKEN is not set")
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"email":"bench-%s-%d@bench.example.com","password":"correct-horse-battery","first_name":"B","last_name":"Ench"}',
    tag, counter)
  return wrk.format(nil, nil, nil, body)
end
