"""Auth: self-signup, login, token refresh, logout and the caller's own account."""

from __future__ import annotations

from typing import Any

from flask import Response, request

from models import Domain, Session, Tenant, User, accounts, mfa
from tenantry import audit
from tenantry.access import user_view
from tenantry.aliases import check_confirmation, either, split_full_name
from tenantry.authz import current_principal
from tenantry.context import settings
from tenantry.envelope import no_content, one, page
from tenantry.errors import (
    AuthenticationFailed,
    Detail,
    MfaChannelUnavailable,
    SignupDisabled,
    TenantRequired,
    TenantSuspended,
    UserSuspended,
    ValidationFailed,
)
from tenantry.mutation import before_transaction
from tenantry.security import hash_password, needs_rehash, prehash, token_service, verify_password

_BAD_LOGIN = "The email or password is incorrect."


def _token_pair(session: Session, refresh_token: str, user: User) -> dict[str, Any]:
    service = token_service()
    return {
        "access_token": service.issue(user.id, user.tenant_id, session.id),
        "refresh_token": refresh_token,
        "token_type": "Bearer",
        "expires_in": service.access_ttl,
        "user": user_view(user),
    }


def _check_active(user: User) -> None:
    tenant = Tenant.get_or_none(Tenant.id == user.tenant_id) if user.tenant_id else None
    if tenant is not None and tenant.status != "active":
        raise TenantSuspended()
    if user.status != "active":
        raise UserSuspended()


def register(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Creates a tenant and its owner (201), unless self-signup is off (403)."""
    if not settings().self_signup:
        raise SignupDisabled()
    check_confirmation(body, "password", "password_confirm")
    first_name, last_name = split_full_name(body)
    owner = User.build(None, body["email"], hash_password(body["password"]), first_name, last_name, role="owner")
    tenant, user = accounts.register(body["tenant_name"], body.get("tenant_domain"), owner, settings().default_plan)
    return one({"user": user_view(user), "tenant": tenant.as_dict()}, 201)


def _login_candidates(body: dict[str, Any]) -> list[User]:
    """The accounts the login names: its email in the tenant it names, or in every tenant."""
    tenant_id = (
        body.get("tenant_id") or request.headers.get("X-Tenant-ID") or Domain.verified_tenant_for_host(request.host)
    )
    return User.candidates_for_login(either(body, "email", "username", required=True), tenant_id)


def _matching(candidates: list[User], password: str) -> list[User]:
    """The candidates whose password it is; with none, one verification all the same (equal time)."""
    matches = [u for u in candidates if verify_password(u.password_hash, password)]
    if not candidates:
        verify_password(None, password)  # spend the same time as a wrong password
    return matches


def _check_password_before_lock(body: dict[str, Any]) -> None:
    # argon2 (about 20 ms a verification) runs here, before the transaction takes the write lock;
    # login() verifies the same stored hashes again inside it, answered from the request's cache
    # (a hash changed in between is verified anew). An outdated hash's replacement is made here too.
    for user in _matching(_login_candidates(body), body["password"]):
        if needs_rehash(user.password_hash):
            prehash([body["password"]])


@before_transaction(_check_password_before_lock)
def login(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Starts a session for a correct email and password; the same 401 for either being wrong."""
    candidates = _login_candidates(body)
    if len(candidates) == 1:  # a failed attempt is then on that tenant's audit trail
        audit.note(tenant_id=candidates[0].tenant_id, resource_id=candidates[0].id)
    matches = _matching(candidates, body["password"])
    if not matches:
        raise AuthenticationFailed(_BAD_LOGIN)
    if len(candidates) > 1:
        raise TenantRequired("This email has accounts in several tenants; name one with tenant_id.")
    user = matches[0]
    _check_active(user)
    mfa.check_login(user, body.get("mfa_code"))
    session, refresh = Session.start(
        user,
        settings().refresh_token_ttl,
        request.remote_addr,
        request.headers.get("User-Agent"),
    )
    user.record_login(hash_password(body["password"]) if needs_rehash(user.password_hash) else None)
    return one(_token_pair(session, refresh, user))


def refresh_token(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Rotates a refresh token: a new pair for the same session; a replay revokes the session."""
    session, refresh = accounts.rotate_refresh_token(either(body, "refresh_token", "refresh", required=True))
    user = User.get_by_id(session.user_id)
    _check_active(user)
    return one(_token_pair(session, refresh, user))


def logout(body: dict[str, Any] | None = None) -> Response:
    """Revokes the caller's session, or the caller's session a given refresh token belongs to (204)."""
    principal = current_principal()
    token = either(body, "refresh_token", "refresh") if body else None
    Session.revoke(principal.session_id if token is None else accounts.own_session_of(token, principal.user.id))
    return no_content()


def get_me() -> tuple[dict[str, Any], int, dict[str, str]]:
    """The caller's own account."""
    return one(user_view(current_principal().user, current_principal().access))


def update_me(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Changes the caller's own profile: names and phone (email, role, status and metadata are an admin's)."""
    principal = current_principal()
    accounts.change_user(principal.user, body)
    return one(user_view(principal.user, principal.access))


def _check_current_password_before_lock(body: dict[str, Any]) -> None:
    # argon2 runs here, outside the write transaction; change_password's own check is then
    # answered from the request's cache (tenantry.security.password_work).
    verify_password(current_principal().user.password_hash, body["current_password"])


@before_transaction(_check_current_password_before_lock)
def change_password(body: dict[str, Any]) -> Response:
    """Sets a new password given the current one; every other session of the caller ends (204)."""
    principal = current_principal()
    user = principal.user
    if not verify_password(user.password_hash, body["current_password"]):
        raise ValidationFailed("The current password is incorrect.", [Detail("is incorrect", "current_password")])
    accounts.change_user(user, {}, hash_password(body["new_password"]), keep_session=principal.session_id)
    return no_content()


def list_sessions(limit: int = 20, offset: int = 0) -> dict[str, Any]:
    """The caller's live sessions, newest first; `current` marks the one making this request."""
    principal = current_principal()
    return page(
        Session.live_for_user(principal.user.id), limit, offset, lambda session: session.as_dict(principal.session_id)
    )


def revoke_session(session_id: str) -> Response:
    """Ends one of the caller's own sessions (204); another user's is a 404."""
    Session.revoke(Session.own(current_principal().user.id, session_id).id)
    return no_content()


def setup_mfa(body: Any = None) -> tuple[dict[str, Any], int, dict[str, str]]:
    """A pending TOTP secret for the caller (422 for channels that do not exist yet); no body means totp."""
    kind = body.get("type", "totp") if isinstance(body, dict) else "totp"  # no body: Connexion passes bytes
    if kind != "totp":
        raise MfaChannelUnavailable(f"{kind} has no delivery channel yet; use totp.")
    secret, uri = mfa.start_totp(current_principal().user)
    return one({"type": "totp", "secret": secret, "otpauth_uri": uri})


def verify_mfa(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Turns MFA on with a first code; answers the recovery codes once."""
    return one({"recovery_codes": mfa.verify_and_enable(current_principal().user, body["code"])})


def disable_mfa(body: dict[str, Any]) -> Response:
    """Turns MFA off, given a current code (204)."""
    mfa.disable(current_principal().user, body["code"])
    return no_content()
