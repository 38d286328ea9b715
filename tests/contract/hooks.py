"""Schemathesis hooks for the contract run: authenticate as a fixture account (owner or operator).

Loaded through SCHEMATHESIS_HOOKS; the server, email, password and tenant come from environment
variables set by test_schemathesis.py. Every call's status is recorded, so the test can check
that the run got past authentication and reached each operation's success.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import threading
import time

import httpx
import schemathesis

LOGOUT = "/v1/auth/logout"


def _login() -> dict:
    """Logs the fixture account in; returns its token pair."""
    response = httpx.post(
        f"{os.environ['TENANTRY_CONTRACT_URL']}/v1/auth/login",
        json={
            "email": os.environ["TENANTRY_CONTRACT_EMAIL"],
            "password": os.environ["TENANTRY_CONTRACT_PASSWORD"],
            **({"tenant_id": tenant} if (tenant := os.environ.get("TENANTRY_CONTRACT_TENANT")) else {}),
        },
        timeout=30,
    )
    response.raise_for_status()
    return response.json()["data"]


def _usable_key() -> str:
    """Returns the run's API key, or a new one with the same permissions if the run revoked it.

    The fuzzer may revoke or rotate the very key it runs with (it lists the keys, and DELETE and
    rotate take any id it finds): the rest of the run would then be 401s that prove nothing.
    """
    global _key
    base = os.environ["TENANTRY_CONTRACT_URL"]
    if httpx.get(f"{base}/v1/keys", headers={"X-API-Key": _key}, timeout=30).status_code != 401:
        return _key
    token = _login()["access_token"]
    created = httpx.post(
        f"{base}/v1/keys",
        json={"name": "contract (renewed)", "permissions": ["admin"]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    created.raise_for_status()
    _key = created.json()["data"]["secret"]
    return _key


_key = os.environ.get("TENANTRY_CONTRACT_API_KEY", "")
_logouts = itertools.count()


def _cache_key(case: schemathesis.Case, _ctx: schemathesis.AuthContext) -> str:
    # Each logout gets a session of its own (a fresh login), so it never ends the run's session.
    return f"logout-{next(_logouts)}" if case.operation.path == LOGOUT else "run"


# Credentials are cached for 5 minutes (access tokens live 15) and fetched again at once when an
# authenticated call answers 401 (Schemathesis then replays it): an expired token, a session or
# key the fuzzer ended, never turn the rest of the run into 401s.
@schemathesis.auth(refresh_interval=300, cache_by_key=_cache_key, retry_on=[401])
class FixtureCredential:
    """The fixture account's bearer token, or its API key when the run uses one."""

    def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> str:
        if _key:
            return _usable_key()
        return _login()["access_token"]

    def set(self, case: schemathesis.Case, data: str, ctx: schemathesis.AuthContext) -> None:
        if data.startswith("sk_"):
            case.headers = {**(case.headers or {}), "X-API-Key": data}
        else:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


_record_lock = threading.Lock()


@schemathesis.hook
def after_call(ctx: schemathesis.HookContext, case: schemathesis.Case, response: object) -> None:
    """Records each call's operation and status (TENANTRY_CONTRACT_STATUSES), for the 2xx check."""
    path = os.environ.get("TENANTRY_CONTRACT_STATUSES")
    if not path:
        return
    line = json.dumps({"operation": f"{case.method.upper()} {case.operation.path}", "status": response.status_code})  # type: ignore[attr-defined]
    with _record_lock, open(path, "a") as handle:
        handle.write(line + "\n")
    _disarm_deny_policy(case, response)


def _disarm_deny_policy(case: schemathesis.Case, response: object) -> None:
    """Turns off a deny policy the run itself just saved as enabled.

    A random deny policy whose random conditions happen to hold (`user:create` when
    `subject.status == 'active'`, say) refuses that permission to the fixture account for the
    rest of the run: every later case of those operations would be a 403 that proves nothing,
    and whether that happens depends on the seed. The call itself is left as it was made and
    answered; only the tenant's state after it is put back. Deny policies are tested in
    tests/api/test_access.py and tests/unit/policies/.
    """
    if not case.operation.path.startswith("/v1/policies") or case.method.upper() not in {"POST", "PUT", "PATCH"}:
        return
    if not 200 <= response.status_code < 300:  # type: ignore[attr-defined]
        return
    try:
        policy = response.json()["data"]  # type: ignore[attr-defined]
    except (ValueError, KeyError, TypeError):
        return
    if isinstance(policy, dict) and policy.get("effect") == "deny" and policy.get("is_enabled") and policy.get("id"):
        httpx.patch(
            f"{os.environ['TENANTRY_CONTRACT_URL']}/v1/policies/{policy['id']}",
            json={"is_enabled": False},
            headers=_credential_headers(),
            timeout=30,
        )


_calls = itertools.count()
_cases = itertools.count()
_known: dict[str, tuple[float, list]] = {}
#: Whether the run made its webhook endpoint yet (the one that turns a new member into a delivery job).
_webhook_made: list[int] = []


def _credential_headers() -> dict[str, str]:
    if _key:
        return {"X-API-Key": _usable_key()}
    return {"Authorization": f"Bearer {_login()['access_token']}"}


def _real(what: str) -> list:
    """Returns real ids of the fixture tenant's rows (`what`), read through the API at most every 10 s."""
    at, values = _known.get(what, (0.0, []))
    if time.monotonic() - at < 10:
        return values
    base, headers = os.environ["TENANTRY_CONTRACT_URL"], _credential_headers()

    def data(path: str) -> list:
        response = httpx.get(f"{base}{path}", params={"limit": 100}, headers=headers, timeout=30)
        return response.json()["data"] if response.status_code == 200 else []

    if what == "entry_id":
        values = [e["id"] for e in data("/v1/audit-logs")]
    elif what == "permission_name":
        values = [p["name"] for p in data("/v1/permissions") if not p["is_builtin"]]
    elif what == "role_id":
        values = [r["id"] for r in data("/v1/roles") if not r["is_builtin"]]
    elif what == "event_id":
        values = [e["id"] for e in data("/v1/events")]
    elif what == "user_id":
        values = [u["id"] for u in data("/v1/users") if u["role"] != "owner"]
    elif what == "assignment":
        values = [(u["id"], r["id"]) for u in data("/v1/users") for r in u["roles"] if not r["is_builtin"]]
    _known[what] = (time.monotonic(), values)
    return values


def _fresh(what: str) -> tuple[str, ...] | None:
    """Makes a new row for one case to act on, through the API: `user` (a member), `session` (a login of
    the run's account) or `domain`.

    For operations that use up or change the row they target (a deletion, an update of a user),
    a row read earlier may be gone or changed by the time the case runs; a new one is there.
    """
    base, headers = os.environ["TENANTRY_CONTRACT_URL"], _credential_headers()
    n = next(_calls)
    if what == "user":
        made = httpx.post(
            f"{base}/v1/users",
            headers=headers,
            timeout=30,
            json={
                "email": f"fresh-{os.getpid()}-{n}@contract.example.com",
                "first_name": "Fresh",
                "last_name": "Member",
                "password": "Contract-Passw0rd!",
                "role": "member",
            },
        )
        return (made.json()["data"]["id"],) if made.status_code == 201 else None
    if what == "session" and not _key:
        # A new login of the run's own account: a session of the caller's that the run's token is not.
        token = _login()["access_token"]
        listed = httpx.get(f"{base}/v1/auth/sessions", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        own = [s["id"] for s in listed.json().get("data", []) if s.get("current")] if listed.status_code == 200 else []
        return (own[0],) if own else None
    if what in ("job", "cancelled_job"):
        # A webhook endpoint of the tenant's (made once) hears of every new member, so a new member
        # is a new delivery job, queued: no worker runs beside the contract server. A job to retry
        # is one cancelled first (retry takes a dead or cancelled job).
        if not _webhook_made:
            made = httpx.post(
                f"{base}/v1/webhooks",
                headers=headers,
                timeout=30,
                json={"url": "http://127.0.0.1:9/contract-hook", "events": ["user.created"]},
            )
            _webhook_made.append(made.status_code)
        if _fresh("user") is None:
            return None
        listed = httpx.get(
            f"{base}/v1/jobs",
            params={"status": "queued", "kind": "webhook.deliver", "limit": 1},
            headers=headers,
            timeout=30,
        )
        queued = [j["id"] for j in listed.json().get("data", [])] if listed.status_code == 200 else []
        if not queued:
            return None
        if what == "cancelled_job":
            cancelled = httpx.post(f"{base}/v1/jobs/{queued[0]}/cancel", headers=headers, timeout=30)
            if cancelled.status_code != 200:
                return None
        return (queued[0],)
    if what == "domain":
        tenants = httpx.get(f"{base}/v1/tenants", params={"limit": 10}, headers=headers, timeout=30)
        active = (
            [t["id"] for t in tenants.json().get("data", []) if t.get("status") == "active"]
            if tenants.status_code == 200
            else []
        )
        for tenant_id in active:
            made = httpx.put(
                f"{base}/v1/tenants/{tenant_id}/domains",
                headers=headers,
                timeout=30,
                json={"domain": f"f{os.getpid()}x{n}.contract-fresh.example.com"},
            )
            if made.status_code == 201:
                return tenant_id, made.json()["data"]["id"]
    return None


def _role_name() -> str:
    """A role name no other role has (names are unique in a tenant)."""
    return f"Role{next(_calls)}x{os.getpid()}"


def _profile(user: dict) -> dict:
    """`user` with an email and an `external_id` no other user has, and metadata keys of 1 to 40 characters.

    The generator repeats its values (the example's email, `"0"` as every external_id) and makes keys
    of any length: left as they are, nearly every create after the first would be a 409 or a 400, by design
    (the uniqueness and the key bound, which OpenAPI 3.0 cannot state, are tested in
    tests/api/test_selfservice.py).
    """
    out = dict(user)
    email = out.get("email")
    if isinstance(email, str) and "@" in email and len(email) < 230:
        out["email"] = f"c{os.getpid()}x{next(_calls)}-{email}"
    if isinstance(out.get("external_id"), str):
        out["external_id"] = f"{out['external_id'][:200]}-{os.getpid()}-{next(_calls)}"
    if isinstance(out.get("metadata"), dict):
        out["metadata"] = {k: v for k, v in out["metadata"].items() if 1 <= len(k) <= 40}
    return out


@schemathesis.hook
def map_case(ctx: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    """Gives every other valid case of a few operations a real row of the fixture tenant.

    Their success needs a row the generator cannot make up or reach by a link: an audit entry
    (there is no create), a permission no role uses, a role of the tenant's own with a new name,
    a user and a role to assign, an assignment to remove, a domain to delete, a user to delete,
    a live refresh token to exchange or to log out with, a queued job to cancel and a cancelled one to retry;
    and a role's permissions must exist in the tenant, which a schema cannot say (random names
    are 400s), so role bodies get a real one and a new name. Only positive cases
    are changed (a negative case must stay invalid), and only every other one, so the
    generator's own values are still sent. Without this the run never saw these succeed.
    """
    meta = getattr(case, "meta", None)
    if meta is None or str(meta.generation.mode) != "positive" or next(_cases) % 2:
        return case
    label = f"{case.method.upper()} {case.operation.path}"
    path = dict(case.path_parameters or {})
    body = case.body if isinstance(case.body, dict) else None
    if label == "GET /v1/audit-logs/{entry_id}" and (ids := _real("entry_id")):
        path["entry_id"] = random.choice(ids)
    elif label == "DELETE /v1/permissions/{permission_name}" and (names := _real("permission_name")):
        path["permission_name"] = random.choice(names)
    elif label == "PUT /v1/roles/{role_id}" and body is not None and (ids := _real("role_id")):
        path["role_id"] = random.choice(ids)
        case.body = {**body, "name": _role_name(), "permissions": ["user:read"]}
    elif label == "POST /v1/roles" and body is not None:
        case.body = {**body, "name": _role_name(), "permissions": ["user:read"]}
    elif label == "PATCH /v1/roles/{role_id}" and body is not None and (ids := _real("role_id")):
        path["role_id"] = random.choice(ids)
        case.body = {
            **body,
            **({"name": _role_name()} if "name" in body else {}),
            **({"permissions": ["user:read"]} if "permissions" in body else {}),
        }
    elif label == "DELETE /v1/users/{user_id}" and (user := _fresh("user")):
        path["user_id"] = user[0]
    elif label == "PATCH /v1/users/{user_id}" and body is not None and (user := _fresh("user")):
        # A member made for this case, and of the generated changes the names only: an email
        # another account has, a role above the caller's or a password change through the admin
        # API are refusals by design, and a random body nearly always holds one.
        path["user_id"] = user[0]
        case.body = {k: v for k, v in body.items() if k in {"first_name", "last_name"}} or {"first_name": "Mapped"}
    elif (
        label == "POST /v1/users/{user_id}/roles"
        and body is not None
        and (users := _real("user_id"))
        and (roles := _real("role_id"))
    ):
        path["user_id"] = random.choice(users)
        case.body = {**body, "role_id": random.choice(roles)}
    elif label == "DELETE /v1/users/{user_id}/roles/{role_id}" and (pairs := _real("assignment")):
        path["user_id"], path["role_id"] = random.choice(pairs)
    elif label == "DELETE /v1/users/{user_id}/mfa" and (user := _fresh("user")):
        path["user_id"] = user[0]
    elif label == "DELETE /v1/auth/sessions/{session_id}" and (session := _fresh("session")):
        path["session_id"] = session[0]
    elif label == "POST /v1/auth/password" and body is not None:
        # The right current password, and the same one as the new: the run's account keeps its
        # password (the hooks log in with it), and the change still ends its other sessions.
        password = os.environ["TENANTRY_CONTRACT_PASSWORD"]
        case.body = {"current_password": password, "new_password": password}
    elif label == "DELETE /v1/tenants/{tenant_id}/domains/{domain_id}" and (pair := _fresh("domain")):
        path["tenant_id"], path["domain_id"] = pair
    elif label in ("POST /v1/auth/token", "POST /v1/auth/logout") and body is not None:
        # A live refresh token of the fixture account (a session of its own, from a fresh login),
        # under whichever of the names the case uses, `refresh_token` or its alias `refresh`
        # (issue 13): a random token is a 401 and two different ones a 400, by design.
        names = [name for name in ("refresh_token", "refresh") if name in body] or ["refresh_token"]
        token = _login()["refresh_token"]
        case.body = {**body, **dict.fromkeys(names, token)}
    elif label == "POST /v1/users/batch" and body is not None and isinstance(body.get("users"), list):
        # An API key acts as an admin at most, and a batch is refused whole when one item asks
        # for an owner: most random batches hold one, so a key run would rarely see a 201.
        case.body = {
            **body,
            "users": [
                _profile({**u, "role": "member"} if u.get("role") == "owner" else u) if isinstance(u, dict) else u
                for u in body["users"]
            ],
        }
    elif label == "POST /v1/users" and body is not None:
        case.body = _profile(body)
    elif label == "PUT /v1/users/{user_id}" and body is not None and (user := _fresh("user")):
        # A member made for the case, replaced as one (a role above the caller's, or suspending
        # oneself, are refusals by design).
        path["user_id"] = user[0]
        case.body = {**_profile(body), "role": "member"}
    elif label == "POST /v1/jobs/{job_id}/cancel" and (job := _fresh("job")):
        path["job_id"] = job[0]
    elif label == "POST /v1/jobs/{job_id}/retry" and (job := _fresh("cancelled_job")):
        path["job_id"] = job[0]
    elif label == "GET /v1/events/{event_id}" and (ids := _real("event_id")):
        path["event_id"] = random.choice(ids)
    else:
        return case
    case.path_parameters = path
    return case


@schemathesis.hook
def before_call(ctx: schemathesis.HookContext, case: schemathesis.Case, **kwargs: object) -> None:
    """Makes every Idempotency-Key the generator sends unique to its call, and keeps the fixture's password.

    The generator repeats header values across cases (the spec's example above all), and the
    same key with another request is a 422 IDEMPOTENCY_KEY_REUSED by design, or a replay of the
    first answer: left as generated, most POSTs of the run would test the key instead of the
    operation. A valid key stays valid (its first 200 characters and a suffix: at most 255); an
    invalid one is left as it is, to be refused. Reuse and replay are tested in tests/api/test_idempotency.py.
    """
    body = case.body if isinstance(case.body, dict) else None
    if (
        case.operation.path == "/v1/auth/password"
        and body is not None
        and body.get("current_password") == os.environ["TENANTRY_CONTRACT_PASSWORD"]
    ):
        # Every call, the spec's examples included (map_case does not see those): the example's
        # current password is the fixture's, and a change to another one would lock the hooks,
        # which log in with it, out for the rest of the run.
        case.body = {**body, "new_password": body["current_password"]}
    for name in ("Idempotency-Key", "X-Idempotency-Key"):
        value = (case.headers or {}).get(name)
        if isinstance(value, str) and 1 <= len(value) <= 255:
            case.headers[name] = f"{value[:200]}-{os.getpid()}-{next(_calls)}"
