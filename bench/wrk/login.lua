-- wrk script: POST /v1/auth/login with the same JSON body on every request.
-- Reads the body ({"email": ..., "password": ..., "tenant_id": ...}) from BENCH_LOGIN_BODY.

wrk.method = "POST"
wrk.body = assert(os.getenv("BENCH_LOGIN_BODY"), "BENCH_LOGIN_BODY is not set")
wrk.headers["Content-Type"] = "application/json"
