"""The one path every changing request (POST, PUT, PATCH, DELETE) takes through the core.

- One transaction: the handler's writes, and what the core records about them, commit together
  or not at all. An answer the handler chose (one of our 4xx errors) commits what it wrote on
  the way, such as a failed-attempt counter or a refresh-token reuse revocation; writes that
  must be all-or-nothing are inside the models' own atomic blocks, which roll back to their
  savepoint when their error crosses them. Anything unexpected rolls the whole request back.
- The audit entry (tenantry.audit) and the domain event (tenantry.events, the outbox, with its
  webhook deliveries), written in that same transaction.
- Idempotency (every POST): `Idempotency-Key` is claimed before the handler runs, and the
  answer is stored in the request's transaction; a retry replays it (tenantry/idempotency
  docs in the spec's info).
- Slow work before the lock: the argon2 hashes of the body's `x-hashed` fields (at any depth) are
  made before the transaction begins, as is the work a handler declares with
  `before_transaction` (login's password check), so on SQLite no request holds the write lock
  while it hashes. Contention that still outlasts the busy timeout is a 503 DATABASE_BUSY.
- The deadline (tenantry.deadline): past its operation's time limit the transaction refuses to
  commit and rolls back; the event loop has answered 504 GATEWAY_TIMEOUT.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import peewee
from cryptography.fernet import InvalidToken
from flask import Response, current_app, g, request

from models.base import database
from models.idempotency import IdempotencyRecord, Scope
from tenantry import audit, deadline, events
from tenantry.db import drop_connection
from tenantry.envelope import to_response
from tenantry.errors import ApiError, DeadlineExceeded, IdempotencyInProgress, api_error_response
from tenantry.security import password_work, prehash, secret_box
from tenantry.spec import hashed_fields, operations, values_at

log = logging.getLogger("tenantry.mutation")

#: Response headers a replay repeats; the rest are stamped afresh on every response.
_KEPT_HEADERS = frozenset({"content-type", "location", "retry-after", "www-authenticate"})


def idempotency_key() -> str | None:
    """Returns the request's Idempotency-Key, or else its X-Idempotency-Key (the older name), or None."""
    key = request.headers.get("Idempotency-Key")
    return key if key is not None else request.headers.get("X-Idempotency-Key")


def _scope(key: str, caller_address: str | None) -> Scope:
    principal = g.get("principal")
    if principal is None:  # an anonymous operation: the client's address is the credential
        return Scope("-", f"ip:{caller_address or 'unknown'}", key)
    return Scope(principal.tenant_id or "-", principal.id, key)


def _fingerprint() -> str:
    """Returns a digest of what makes two requests the same: method, path, query and the body's content."""
    if request.mimetype == "application/x-www-form-urlencoded":
        # A form (the token endpoint's OAuth body) is parsed before this runs, which leaves get_data()
        # empty: every form looked alike, and a reused key replayed one account's token pair to a
        # request with another's token. The parsed fields are the request, in a stable order.
        body = urlencode(sorted(request.form.items(multi=True))).encode()
    else:
        raw = request.get_data(cache=True)
        try:  # the same JSON written with other spacing or key order is the same request
            body = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode() if raw else b""
        except ValueError:
            body = raw
    head = f"{request.method} {request.path}?{request.query_string.decode('latin-1')}\n".encode()
    return hashlib.sha256(head + body).hexdigest()


def _seal(response: Response) -> str:
    headers = [(k, v) for k, v in response.headers.items() if k.lower() in _KEPT_HEADERS]
    document = {"headers": headers, "body": response.get_data(as_text=True)}
    return secret_box().seal(json.dumps(document, separators=(",", ":")))


def _replay(record: IdempotencyRecord) -> Response | None:
    """Returns the stored answer, or None when it cannot be opened (sealed under an earlier server key)."""
    assert record.response is not None  # claim() returns only a finished record, whose answer is stored
    try:
        document = json.loads(secret_box().open(record.response))
    except InvalidToken:
        return None
    response = Response(document["body"], status=record.status_code)
    response.headers.clear()
    for name, value in document["headers"]:
        response.headers.add(name, value)
    response.headers["Idempotent-Replayed"] = "true"
    return response


#: The attribute `before_transaction` sets on a handler.
_PREPARE = "__tenantry_before_transaction__"


def before_transaction(prepare: Callable[..., Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declares read-only slow work a handler needs done before its transaction takes the write lock.

    `prepare` is called with the handler's arguments, outside any transaction, before the
    handler. It must not write: what it computes reaches the handler through caches that check
    their input again inside the transaction (login verifies the password against the stored
    hash here; the handler's own check of the same hash is then instant, and a hash changed
    meanwhile is verified anew).
    """

    def mark(handler: Callable[..., Any]) -> Callable[..., Any]:
        setattr(handler, _PREPARE, prepare)
        return handler

    return mark


def _hashed_fields(operation_id: str | None) -> list[tuple[str, ...]]:
    """Returns where the operation's request body holds `x-hashed` strings (cached per operation)."""
    if operation_id is None:
        return []
    extensions = current_app.extensions
    known: dict[str, list[tuple[str, ...]]] | None = extensions.get("tenantry.hashed_fields")
    if known is None:
        spec = extensions["tenantry"].spec
        known = {op["operationId"]: hashed_fields(spec, op) for _, _, op in operations(spec)}
        extensions["tenantry.hashed_fields"] = known
    return known.get(operation_id, [])


def _prepare(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Does the request's slow work before its transaction: argon2 hashes, the handler's declared step."""
    body = kwargs.get("body")
    passwords = [value for path in _hashed_fields(g.get("operation_id")) for value in values_at(body, path)]
    prehash(passwords, between=deadline.check)
    prepare = getattr(func, _PREPARE, None)
    if prepare is not None:
        prepare(*args, **kwargs)
    deadline.check()


def _bound_statements() -> None:
    """On PostgreSQL, ends any statement of this transaction that would outlast the request's deadline."""
    current = deadline.current()
    if current is None or not isinstance(database.obj, peewee.PostgresqlDatabase):
        return
    remaining_ms = max(1, int(current.remaining() * 1000))
    database.execute_sql("SELECT set_config('statement_timeout', %s, true)", (f"{remaining_ms}ms",))


def run_changing(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    caller_address: str | None,
    audit_action: str | None = None,
    event_type: str | None = None,
) -> Response:
    """Runs a changing operation's handler in one transaction with its audit entry and domain event,
    idempotently for a POST with a key. The slow work is done before the transaction; past the
    request's deadline it raises DeadlineExceeded with nothing committed."""
    with password_work():
        return _run_changing(func, args, kwargs, caller_address, audit_action, event_type)


def _run_changing(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    caller_address: str | None,
    audit_action: str | None,
    event_type: str | None,
) -> Response:
    scope = None
    if request.method == "POST":
        key = idempotency_key()
        if key is not None:
            scope = _scope(key, caller_address)
            fingerprint = _fingerprint()
            stored = IdempotencyRecord.claim(scope, fingerprint)
            if stored is not None:
                replay = _replay(stored)
                if replay is not None:
                    return replay
                # Unreadable after a change of server key: forget it and run the request anew.
                IdempotencyRecord.forget(scope)
                if IdempotencyRecord.claim(scope, fingerprint) is not None:
                    raise IdempotencyInProgress()
    before = audit.snapshot() if audit_action or event_type else None
    try:
        _prepare(func, args, kwargs)
        with database.atomic():
            _bound_statements()
            error = None
            try:
                response = to_response(func(*args, **kwargs))
            except ApiError as exc:
                if exc.status >= 500:
                    raise
                response, error = api_error_response(exc), exc
            if audit_action:
                audit.record_change(audit_action, kwargs, response, before, error)
            if event_type and error is None:
                events.record(event_type, kwargs, response, before)
            if scope is not None and _remembered(response.status_code):
                IdempotencyRecord.complete(scope, response.status_code, _seal(response))
            deadline.claim_commit()  # raises past the deadline: the block rolls back
    except BaseException as exc:
        if scope is not None:
            _release(scope)
        if isinstance(exc, peewee.DatabaseError) and deadline.expired():
            # A statement ended by the deadline's statement_timeout, or a lock wait that outlasted it.
            raise DeadlineExceeded() from exc
        raise
    if scope is not None and not _remembered(response.status_code):
        _release(scope)
    return response


def _remembered(status: int) -> bool:
    """True for an answer a retry with the same key replays. A 401 or 403 is a refusal of the
    credential, not a result (an inbound webhook signed just after a secret rotation), and a 5xx
    a failure: both leave the key free for a retry, as the spec's info says."""
    return status < 500 and status not in (401, 403)


def _release(scope: Scope) -> None:
    """Frees the claim of a request that failed, so a retry runs it; never hides the failure itself."""
    try:
        IdempotencyRecord.release(scope)
    except Exception:  # the database may be what failed
        log.warning("could not release an idempotency claim", exc_info=True)
        # Dropping the connection ends the claim's holder (models.idempotency): on PostgreSQL
        # the client's retry takes the claim over at once instead of 409 until it lapses.
        drop_connection()
