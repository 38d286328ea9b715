"""A real scenario with the generated Python client against a live Tenantry server.

The client is what `openapi-python-client generate --url <server>/openapi.json` makes with its
default settings (no config file): package `tenantry_api_client`, a module per tag, a function
per operationId. Run with the client installed: `python scenario.py http://127.0.0.1:8000`. Exits non-zero (an
AssertionError) at the first step that does not behave as the spec promises.
"""

from __future__ import annotations

import sys
import uuid

from tenantry_api_client import AuthenticatedClient, Client
from tenantry_api_client.api.auth import get_me, login, register
from tenantry_api_client.api.meta import get_openapi_json, get_openapi_yaml
from tenantry_api_client.api.tenants import get_tenant
from tenantry_api_client.api.users import create_user, delete_user, get_user, list_users, update_user
from tenantry_api_client.models import (
    ErrorResponse,
    LoginRequest,
    OpenApiDocument,
    RegisterRequest,
    Role,
    TenantEnvelope,
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

    registered = register.sync_detailed(
        client=anonymous,
        body=RegisterRequest(
            email=email, password=password, first_name="Ada", last_name="Lovelace", tenant_name="Client Co"
        ),
    )
    assert registered.status_code == 201, registered.content
    tenant_id = registered.parsed.data.tenant.id

    tokens = login.sync(client=anonymous, body=LoginRequest(email=email, password=password, tenant_id=tenant_id))
    assert isinstance(tokens, TokenEnvelope), tokens
    client = AuthenticatedClient(base_url=base_url, token=tokens.data.access_token, raise_on_unexpected_status=True)

    me = get_me.sync(client=client)
    assert isinstance(me, UserEnvelope) and me.data.email == email and me.data.role == "owner"

    created = create_user.sync(
        client=client,
        body=UserCreate(
            email=f"grace-{uuid.uuid4().hex[:8]}@example.com",
            password=password,
            first_name="Grace",
            last_name="Hopper",
            role=Role.ADMIN,
        ),
    )
    assert isinstance(created, UserEnvelope) and created.data.role == "admin", created
    user_id = created.data.id

    listed = list_users.sync(client=client, role=Role.ADMIN, limit=10)
    assert isinstance(listed, UserList), listed
    assert [u.id for u in listed.data] == [user_id] and listed.meta.pagination.total == 1

    updated = update_user.sync(user_id, client=client, body=UserUpdate(last_name="Murray Hopper"))
    assert isinstance(updated, UserEnvelope) and updated.data.last_name == "Murray Hopper", updated

    deleted = delete_user.sync_detailed(user_id, client=client)
    assert deleted.status_code == 204, deleted.content

    missing = get_user.sync(user_id, client=client)
    assert isinstance(missing, ErrorResponse) and missing.error.code == "RESOURCE_NOT_FOUND", missing

    invalid = list_users.sync_detailed(client=client, limit=500)
    assert invalid.status_code == 400, invalid.content
    assert isinstance(invalid.parsed, ErrorResponse) and invalid.parsed.error.code == "VALIDATION_ERROR"
    assert invalid.parsed.error.details[0].field == "limit"

    # Fields that may be null come out as `X | None`, with X a named type.
    tenant = get_tenant.sync(tenant_id, client=client)
    assert isinstance(tenant, TenantEnvelope) and tenant.data.rate_limits is None, tenant
    assert tenant.data.settings.timezone == "UTC"

    # The contract itself, as a document and as YAML text.
    document = get_openapi_json.sync(client=anonymous)
    assert isinstance(document, OpenApiDocument) and document["openapi"] == "3.0.3", document
    assert get_openapi_yaml.sync(client=anonymous).startswith("openapi: 3.0.3")
    print("generated Python client scenario: ok")


if __name__ == "__main__":
    main(sys.argv[1])
