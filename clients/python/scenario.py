"""A real scenario with the generated Python client against a live Tenantry server.

Run with the client installed: `python scenario.py http://127.0.0.1:8000`. Exits non-zero (an
AssertionError) at the first step that does not behave as the spec promises.
"""

from __future__ import annotations

import sys
import uuid

from tenantry_client import AuthenticatedClient, Client
from tenantry_client.api.auth import auth_get_me, auth_login, auth_register
from tenantry_client.api.users import (
    users_create_user,
    users_delete_user,
    users_get_user,
    users_list_users,
    users_update_user,
)
from tenantry_client.models import (
    ErrorResponse,
    LoginRequest,
    RegisterRequest,
    TokenEnvelope,
    UserCreate,
    UserEnvelope,
    UserList,
    UserUpdate,
)


def main(base_url: str) -> None:
    """Registers a tenant, logs in, and creates, lists, updates and deletes users."""
    email = f"client-{uuid.uuid4().hex[:10]}@example.com"
    password = "correct-horse-battery"
    anonymous = Client(base_url=base_url, raise_on_unexpected_status=True)

    registered = auth_register.sync_detailed(client=anonymous, body=RegisterRequest(
        email=email, password=password, first_name="Ada", last_name="Lovelace", tenant_name="Client Co"))
    assert registered.status_code == 201, registered.content
    tenant_id = registered.parsed.data.tenant.id

    login = auth_login.sync(client=anonymous, body=LoginRequest(email=email, password=password, tenant_id=tenant_id))
    assert isinstance(login, TokenEnvelope), login
    client = AuthenticatedClient(base_url=base_url, token=login.data.access_token, raise_on_unexpected_status=True)

    me = auth_get_me.sync(client=client)
    assert isinstance(me, UserEnvelope) and me.data.email == email and me.data.role == "owner"

    created = users_create_user.sync(client=client, body=UserCreate(
        email=f"grace-{uuid.uuid4().hex[:8]}@example.com", password=password, first_name="Grace",
        last_name="Hopper", role="admin"))
    assert isinstance(created, UserEnvelope) and created.data.role == "admin", created
    user_id = created.data.id

    listed = users_list_users.sync(client=client, role="admin", limit=10)
    assert isinstance(listed, UserList), listed
    assert [u.id for u in listed.data] == [user_id] and listed.meta.pagination.total == 1

    updated = users_update_user.sync(user_id, client=client, body=UserUpdate(last_name="Murray Hopper"))
    assert isinstance(updated, UserEnvelope) and updated.data.last_name == "Murray Hopper", updated

    deleted = users_delete_user.sync_detailed(user_id, client=client)
    assert deleted.status_code == 204, deleted.content

    missing = users_get_user.sync(user_id, client=client)
    assert isinstance(missing, ErrorResponse) and missing.error.code == "RESOURCE_NOT_FOUND", missing

    invalid = users_list_users.sync_detailed(client=client, limit=500)
    assert invalid.status_code == 400, invalid.content
    assert isinstance(invalid.parsed, ErrorResponse) and invalid.parsed.error.code == "VALIDATION_ERROR"
    assert invalid.parsed.error.details[0].field == "limit"
    print("generated Python client scenario: ok")


if __name__ == "__main__":
    main(sys.argv[1])
