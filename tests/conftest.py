"""Fixtures: a live server on the chosen database, and helpers that build tenants and tokens."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.livesrv import (
    OPERATOR_EMAIL,
    LiveServer,
    backend,
    postgres_reachable,
    postgres_required,
    start_server,
)

PASSWORD = "correct-horse-battery"


def pytest_report_header() -> str:
    return f"tenantry database: {backend()}"


def _require_database() -> None:
    """Skips (or, on CI, fails) the test when its PostgreSQL is not reachable."""
    if backend() == "postgres" and not postgres_reachable():
        message = "PostgreSQL is not reachable: the PostgreSQL environment is skipped"
        if postgres_required():
            pytest.fail(message.replace("is skipped", "is required (CI)"), pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def server() -> Iterator[LiveServer]:
    """One live server for the session, on a fresh database."""
    _require_database()
    live = start_server()
    yield live
    live.stop()


@pytest.fixture(scope="session")
def shared_server() -> Iterator[Callable[..., LiveServer]]:
    """Returns `start(workers=1, **env)`: a live server with these settings (`start_server`'s
    arguments), started on first use and shared with every later test that asks for exactly the
    same ones, until the session ends.

    For tests that need a setting the session's server lacks but not a database of their own:
    each keeps to its own tenants, accounts and (behind a trusted proxy) client addresses. A test
    that needs a fresh database or server state (a breaker, a queue) starts its own.
    """
    servers: dict[tuple[int, tuple[tuple[str, str], ...]], LiveServer] = {}

    def start(workers: int = 1, **env: str) -> LiveServer:
        _require_database()
        key = (workers, tuple(sorted(env.items())))
        if key not in servers:
            servers[key] = start_server(workers=workers, **env)
        return servers[key]

    yield start
    for live in servers.values():
        live.stop()


@pytest.fixture
def api(server: LiveServer) -> Iterator[httpx.Client]:
    """An anonymous client for the live server."""
    with server.client() as client:
        yield client


@dataclass
class Account:
    """A tenant with a logged-in user in it."""

    tenant: dict[str, Any]
    user: dict[str, Any]
    email: str
    password: str
    token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        """Authorization headers for this account."""
        return {"Authorization": f"Bearer {self.token}"}


def unique_email(prefix: str = "user") -> str:
    """Returns an email no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"


def login(api: httpx.Client, email: str, password: str = PASSWORD, **extra: Any) -> dict[str, Any]:
    """Logs in and returns the token pair (asserting success)."""
    response = api.post("/v1/auth/login", json={"email": email, "password": password, **extra})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def register(api: httpx.Client, tenant_name: str = "Acme", **extra: Any) -> Account:
    """Signs up a new tenant and logs its owner in."""
    email = unique_email("owner")
    body = {
        "email": email,
        "password": PASSWORD,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "tenant_name": tenant_name,
        **extra,
    }
    response = api.post("/v1/auth/register", json=body)
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    tokens = login(api, email, tenant_id=data["tenant"]["id"])
    return Account(data["tenant"], data["user"], email, PASSWORD, tokens["access_token"], tokens["refresh_token"])


def add_user(api: httpx.Client, owner: Account, role: str = "member", **extra: Any) -> Account:
    """Creates a user in the owner's tenant and logs them in."""
    email = unique_email(role)
    body = {"email": email, "password": PASSWORD, "first_name": "Grace", "last_name": "Hopper", "role": role, **extra}
    response = api.post("/v1/users", json=body, headers=owner.headers)
    assert response.status_code == 201, response.text
    tokens = login(api, email, tenant_id=owner.tenant["id"])
    return Account(
        owner.tenant, response.json()["data"], email, PASSWORD, tokens["access_token"], tokens["refresh_token"]
    )


@pytest.fixture
def owner(api: httpx.Client) -> Account:
    """A fresh tenant and its logged-in owner."""
    return register(api)


@pytest.fixture
def operator(api: httpx.Client, server: LiveServer) -> dict[str, str]:
    """Authorization headers of the platform operator."""
    tokens = login(api, OPERATOR_EMAIL, server.operator_password)
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Asserts an error envelope with this status and code; returns the error object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "meta"}, body
    assert body["error"]["code"] == code, body
    assert body["meta"]["request_id"] == response.headers["x-request-id"]
    return body["error"]


# -- The split into unit and API tests (issue 14) ------------------------------------------------

#: In-process tests still inside API files (they share helpers with the live-server tests there).
UNIT_TESTS = frozenset(
    {
        "tests/api/test_auth.py::test_a_remembered_access_token_still_expires_and_a_changed_one_is_checked_again",
        "tests/api/test_bodies.py::test_the_depth_scan_is_linear_on_unterminated_strings",
        "tests/api/test_formats.py::test_every_declared_format_has_a_checker",
        "tests/api/test_formats.py::test_what_input_accepts_the_output_check_accepts",
    }
)
#: The fixtures that reach a live server: a unit test that asks for one is a mistake in the split.
LIVE_FIXTURES = frozenset({"server", "shared_server", "api", "owner", "operator"})
#: The fixture an in-process test takes a fresh database of TENANTRY_TEST_DB's kind through.
DATABASE_FIXTURES = frozenset({"db"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks each test `unit` (under tests/unit/: in-process, no live server) or `api` (the live-server
    tests under tests/api/); a unit test on a database is also `database`, so it runs on both
    databases while the other unit tests run once (scripts/on-both-databases). Refuses a unit test
    that uses a live server."""
    root = config.rootpath
    for item in items:
        path = item.path.relative_to(root).as_posix()
        name = getattr(item, "originalname", item.name)
        fixtures = set(getattr(item, "fixturenames", ()))
        unit = path.startswith("tests/unit/") or f"{path}::{name}" in UNIT_TESTS
        if unit and LIVE_FIXTURES & fixtures:
            raise pytest.UsageError(f"{item.nodeid} is a unit test but uses a live server fixture")
        item.add_marker(pytest.mark.unit if unit else pytest.mark.api)
        if unit and DATABASE_FIXTURES & fixtures:
            item.add_marker(pytest.mark.database)
