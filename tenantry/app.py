"""The app factory: the only place where Tenantry is wired together."""

from __future__ import annotations

import functools
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import connexion
import peewee
import yaml
from connexion.apps.flask import FlaskOperation
from connexion.decorators import FlaskDecorator
from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from connexion.middleware import MiddlewarePosition
from connexion.middleware.context import ContextMiddleware
from connexion.middleware.exceptions import ExceptionMiddleware
from connexion.middleware.response_validation import ResponseValidationMiddleware
from connexion.middleware.routing import RoutingMiddleware
from connexion.middleware.security import SecurityMiddleware
from connexion.middleware.server_error import ServerErrorMiddleware
from connexion.options import SwaggerUIOptions
from flask import Flask, Response, g, request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Mount, Router
from werkzeug.exceptions import HTTPException as WerkzeugHTTPException

from models.base import database, utcnow
from models.job import queue_snapshot
from services import register_all
from tenantry import jobs
from tenantry.authz import EnforcingResolver
from tenantry.db import (
    bypasses_row_security,
    connection_lost,
    drop_connection,
    init_database,
    retry_safe,
    scope_rows_to,
    track_writes,
)
from tenantry.docs import DocsApp
from tenantry.envelope import JSONIFIER
from tenantry.errors import (
    ApiError,
    DatabaseBusy,
    Detail,
    NotFound,
    api_error_response,
    error_body,
    error_response,
    is_contention,
)
from tenantry.host import Host
from tenantry.host import configure as configure_plugins
from tenantry.limits import RateLimits
from tenantry.logs import configure_logging, request_id_var
from tenantry.metrics import Metrics
from tenantry.middleware import CompressionMiddleware, FlaskBridge, RequestContextMiddleware
from tenantry.periodic import register_core
from tenantry.security import SECURITY_MAP, SecretBox, TokenService, install_token_service
from tenantry.settings import Settings
from tenantry.spec import bundle, operations, published, timeout_class
from tenantry.usage import UsageRecorder
from tenantry.validation import BodyTypeValidationMiddleware, RequestValidationProblem, UnsupportedBody, validator_map

log = logging.getLogger("tenantry")

DOCS_PATH = "/docs"


@dataclass
class Tenantry:
    """What handlers may need from the app: settings, metrics and the published spec."""

    settings: Settings
    metrics: Metrics
    usage: UsageRecorder
    spec: dict[str, Any]
    spec_json: str
    #: The published document (`spec_json` is it as JSON).
    published: dict[str, Any]

    @functools.cached_property
    def spec_yaml(self) -> str:
        """The published spec as YAML, made when first asked for: PyYAML's dump takes about as long
        as the rest of `create_app`, which every server process paid at start for a rare request."""
        return yaml.safe_dump(self.published, sort_keys=False)


def create_app(settings: Settings | None = None) -> connexion.FlaskApp:
    """Returns the Connexion FlaskApp for `settings` (default: from the environment).

    Binds the database, installs the token service, loads and bundles the spec, and registers
    the error envelope, the request-context middleware and the database lifecycle. It applies
    no migrations: `tenantry db upgrade` (or `tenantry serve` on SQLite) does.
    """
    # Every domain plug-in adds itself first: its settings section is then read and checked with the rest.
    register_all(Host())
    settings = (settings or Settings.from_env()).with_sections()
    configure_logging(settings.log_level)
    init_database(settings.database_url, settings.db_pool_size, settings.db_role or None)
    # The kinds the API shows and retries (a retry grants the kind's attempt budget) and the periodic
    # work the workers schedule; idempotent, so every app and CLI command may call it.
    register_core(settings)
    configure_plugins(settings)  # the plug-ins' jobs that depend on the settings (webhook delivery's schedule)
    jobs.configure_wakeup(settings)  # how enqueue wakes the workers
    _warn_if_unbound_by_row_security()
    install_token_service(TokenService(settings.secret_key, settings.access_token_ttl), SecretBox(settings.secret_key))
    spec = bundle(settings.spec_path)
    public = published(spec, settings.public_url)  # what /openapi.json and /openapi.yaml serve
    state = Tenantry(
        settings=settings,
        metrics=Metrics(queue=lambda: queue_snapshot(utcnow())),
        usage=UsageRecorder(),
        spec=spec,
        spec_json=json.dumps(public, indent=2),
        published=public,
    )

    app = connexion.FlaskApp(
        __name__,
        middlewares=_middlewares(settings.validate_responses),
        # Nothing is routed that the spec does not declare: no Flask static route. The spec is
        # served by its own operations and Swagger UI by tenantry.docs, not by Connexion.
        server_args={"static_folder": None},
        swagger_ui_options=SwaggerUIOptions(swagger_ui=False, serve_spec=False),
    )
    app.add_api(
        spec,
        resolver=EnforcingResolver(),
        strict_validation=True,
        validate_responses=settings.validate_responses,
        validator_map=validator_map(),
        jsonifier=JSONIFIER,
        security_map=SECURITY_MAP,
    )
    # Flask is reached with one thread hand-off a request instead of a2wsgi's several.
    flask_asgi = app._middleware_app
    flask_asgi.asgi_app = FlaskBridge(
        app.app.wsgi_app,
        fallback=flask_asgi.asgi_app,
        threads=settings.threads,
        time_limits={op["operationId"]: settings.timeout(timeout_class(op)) for _, _, op in operations(spec)},
        default_limit=settings.timeout("standard"),
    )
    _register_problem_handlers(app, spec)
    _configure_flask(app.app, state)
    # After _configure_flask: its before_request (only operations the spec routes) runs first.
    RateLimits(
        app.app, settings, {op["operationId"]: op.get("x-rate-limit", "standard") for _, _, op in operations(spec)}
    )
    # Outermost: every answer (errors, /docs and the 330 KB spec included) is gzip-compressed for
    # a client that accepts it, after the layers below have stamped its headers.
    app.add_middleware(CompressionMiddleware, position=MiddlewarePosition.BEFORE_EXCEPTION)
    # Added before the rest so it wraps everything added after it (CORS too): every response, a
    # preflight included, carries the request id and the security headers.
    app.add_middleware(
        RequestContextMiddleware,
        position=MiddlewarePosition.BEFORE_EXCEPTION,
        metrics=state.metrics,
        usage=state.usage,
        docs=DocsApp(DOCS_PATH, "/openapi.json"),
        concrete_paths={path: _methods(item) for path, item in spec["paths"].items() if "{" not in path},
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            position=MiddlewarePosition.BEFORE_EXCEPTION,
            allow_origins=list(settings.cors_origins),
            allow_credentials=False,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "X-Request-Id",
                "X-Tenant-ID",
                "X-API-Key",
                "Idempotency-Key",
                "X-Idempotency-Key",
            ],
            expose_headers=[
                "X-Request-Id",
                "Location",
                "Retry-After",
                "Idempotent-Replayed",
                "X-RateLimit-Limit",
                "X-RateLimit-Remaining",
                "X-RateLimit-Reset",
            ],
        )
    _build(app)
    return app


def _warn_if_unbound_by_row_security() -> None:
    """Logs a warning when the PostgreSQL role bypasses row-level security (superuser or BYPASSRLS)."""
    try:
        with database.connection_context():
            unbound = bypasses_row_security()
    except peewee.DatabaseError:
        log.warning("could not check the database role at start-up", exc_info=True)
        return
    if unbound:
        log.warning(
            "the database role bypasses row-level security: tenant isolation rests on the data "
            "layer alone; connect as a role without BYPASSRLS or set TENANTRY_DB_ROLE=tenantry_app"
        )


def _build(app: connexion.FlaskApp) -> None:
    """Builds Connexion's middleware stack and the Flask routes now, not on the first request.

    Connexion 3.3 builds them lazily, when the first request (or lifespan event) arrives: a spec
    or handler error then answered every request with a 500 instead of stopping the start, and
    what was built stayed outside `gc.freeze()` (tenantry.asgi). This is what
    `ConnexionMiddleware.__call__` does on its first call.
    """
    middleware = app.middleware
    if middleware.middleware_stack is None:
        middleware.app, middleware.middleware_stack = middleware._build_middleware_stack()
    for layer in middleware.middleware_stack:
        if isinstance(layer, RoutingMiddleware):
            _no_slash_redirects(layer.router)
    views = app.app.view_functions
    for endpoint, view in views.items():
        if isinstance(view, FlaskOperation):
            views[endpoint] = _PreparedOperation(view)


def _no_slash_redirects(router: Router) -> None:
    """Turns off Starlette's trailing-slash redirect in Connexion's routers (and those mounted in them).

    With it, `GET /v1/users/` answered a bodiless 307 to `/v1/users`, and only for paths that
    exist without the slash. The spec declares no path with a trailing slash: such a URL is now
    unrouted like any other, a 404 RESOURCE_NOT_FOUND in the error envelope.
    """
    routers = [router]
    while routers:
        current = routers.pop()
        current.redirect_slashes = False
        routers.extend(
            route.app for route in current.routes if isinstance(route, Mount) and isinstance(route.app, Router)
        )


class _DecorateOnce(FlaskDecorator):
    """Connexion's Flask decorator, with the handler's decorator chain built once, not per request.

    `FlaskOperation` builds a new decorator and, per request, a new parameter and response
    decorator around the handler (with an `inspect.signature` of it): nothing in that chain
    depends on the request. Only the request itself, parsed by the operation's URI parser, is.
    """

    def __call__(self, function: Any) -> Any:
        decorated = self.decorate(function)

        def wrapper(*_args: Any, **_kwargs: Any) -> Any:
            return decorated(self.framework.get_request(uri_parser=self.uri_parser))

        return wrapper


class _PreparedOperation:
    """A Flask view for one operation: what `FlaskOperation` does, decorated once (see _DecorateOnce)."""

    def __init__(self, operation: FlaskOperation) -> None:
        self.operation_id = operation.operation_id
        self.__name__ = getattr(operation, "__name__", operation.operation_id)
        self.__qualname__ = self.__name__  # flask-limiter names views by module and qualified name
        self._call = _DecorateOnce(pythonic_params=operation.pythonic_params, jsonifier=operation.jsonifier)(
            operation._fn
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Serves the request Flask routed here, once more on a fresh connection if its connection was lost.

        A thread keeps its connection between requests and never pings it (that cost a fifth of a
        GET), so after a database restart its first statement finds the connection dead. The
        connection is dropped and, when nothing could have been written yet (tenantry.db.retry_safe:
        no COMMIT sent, no statement that commits by itself), the whole operation runs again on
        a fresh one, enforcement point included. Otherwise, or if it fails again, the error goes
        on to the 503 handler.
        """
        try:
            return self._call(*args, **kwargs)
        except (peewee.OperationalError, peewee.InterfaceError):
            if not retry_safe():
                if connection_lost():
                    log.warning("database connection lost after the request may have written; not run again")
                raise
            log.warning("database connection lost; running the request again on a new one")
            drop_connection()
        return self._call(*args, **kwargs)


class _GetResponseValidation(ResponseValidationMiddleware):
    """Connexion's response validation, but for HEAD: its answer is GET's headers without the body,
    which the validator read as a body of `null` and answered 500 (so HEAD failed wherever it was on)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("method") == "HEAD":
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _middlewares(validate_responses: bool) -> list[type]:
    """Returns Connexion's middleware stack less the layers Tenantry has no use for.

    Each layer runs on every request. Left out: Swagger UI (off, yet its router ran on every
    request: tenantry.docs serves /docs and the spec's own operations serve /openapi.json),
    lifespan (no lifespan handler; the Flask bridge answers the lifespan protocol), and response
    validation unless it is turned on. Request validation is Connexion's, with a body's type checked
    against the spec first (tenantry.validation.BodyTypeValidationMiddleware).
    """
    stack: list[type] = [
        ServerErrorMiddleware,
        ExceptionMiddleware,
        RoutingMiddleware,
        SecurityMiddleware,
        BodyTypeValidationMiddleware,
    ]
    if validate_responses:
        stack.append(_GetResponseValidation)
    return [*stack, ContextMiddleware]


def _configure_flask(flask_app: Flask, state: Tenantry) -> None:
    flask_app.extensions["tenantry"] = state

    @flask_app.before_request
    def prepare_request() -> None:
        request_id_var.set(request.headers.get("X-Request-Id"))
        if request.routing_exception is None and not _operation_bound():
            # Connexion bound no operation (say, a path parameter holding a newline), but
            # Werkzeug's looser rules matched a route: only what the spec routes is served.
            raise NotFound("The resource does not exist.")
        # No connect here: Peewee connects on the first query, so /health and /health/live
        # answer without touching the database.
        track_writes()  # nothing written yet: a lost connection may be replaced and the request run again

    @flask_app.teardown_request
    def unscope_rows(_exc: BaseException | None) -> None:
        # The thread's connection serves its next request too, which starts unscoped (the reset
        # rides on that request's first statement: tenantry.db.ScopedPostgresqlDatabase.defer).
        if g.pop("rows_scoped", False):
            scope_rows_to(None)

    # No teardown closes the connection: each of the a2wsgi worker threads keeps its own (Peewee
    # connections are per thread), so a request pays neither a connect nor the pool's checkout
    # ping (measured at ~19% of a GET under load). A connection found lost is replaced and the
    # request run again when it wrote nothing (_PreparedOperation); one that fails otherwise is
    # dropped below and the next request on that thread connects afresh.

    envelope = error_response

    @flask_app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Response:
        return api_error_response(exc)

    @flask_app.errorhandler(WerkzeugHTTPException)
    def http_error(exc: WerkzeugHTTPException) -> Response:
        # Reached only for HTTP errors a handler raises itself: Connexion traps routing 404/405s.
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return envelope(exc.code or 500, headers=headers)

    @flask_app.errorhandler(peewee.IntegrityError)
    def integrity_error(exc: peewee.IntegrityError) -> Response:
        log.warning("integrity error not translated by a model", exc_info=exc)
        return envelope(409, message="The request conflicts with existing data.")

    @flask_app.errorhandler(peewee.OperationalError)
    @flask_app.errorhandler(peewee.InterfaceError)
    def database_down(exc: Exception) -> Response:
        if is_contention(exc):
            # Not an outage: the connection is sound and nothing was written; the request may be retried.
            log.warning("database busy: %s", exc)
            return api_error_response(DatabaseBusy())
        log.error("database unavailable", exc_info=exc)
        drop_connection()
        return envelope(503, message="The database is unavailable.")

    @flask_app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return envelope(500)


def _operation_bound() -> bool:
    """True when Connexion's context middleware bound an operation to this request."""
    try:
        return bool(connexion.context.operation.operation_id)
    except RuntimeError:
        return False


def _methods(item: dict[str, Any]) -> list[str]:
    """Returns the HTTP methods a path item declares (with HEAD wherever GET is)."""
    methods = [m.upper() for m in ("get", "post", "put", "patch", "delete") if m in item]
    if "GET" in methods:
        methods.append("HEAD")
    return methods


def _allowed_methods(spec: dict[str, Any]) -> list[tuple[re.Pattern[str], list[str]]]:
    """Returns, for each spec path, a regex matching it and the methods it declares."""
    out = []
    for path, item in spec["paths"].items():
        methods = _methods(item)
        regex = "^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(path)) + "$"
        out.append((re.compile(regex), methods))
    return out


def _problem_response(
    request: ConnexionRequest,
    status: int,
    code: str | None = None,
    message: str | None = None,
    details: list[Detail] | None = None,
    headers: dict[str, str] | None = None,
) -> ConnexionResponse:
    body = error_body(status, request.headers.get("x-request-id", ""), code, message, details)
    return ConnexionResponse(
        status_code=status, body=json.dumps(body), content_type="application/json", headers=headers or {}
    )


def _register_problem_handlers(app: connexion.FlaskApp, spec: dict[str, Any]) -> None:
    """Maps every error raised in Connexion's ASGI layers to the error envelope."""
    allowed = _allowed_methods(spec)

    def problem(request: ConnexionRequest, exc: ProblemException) -> ConnexionResponse:
        status = exc.status or 500
        if status >= 500:
            log.error("server error in the ASGI layer: %s", exc.detail, exc_info=exc)
        if isinstance(exc, RequestValidationProblem):
            return _problem_response(request, 400, "VALIDATION_ERROR", str(exc.detail), exc.details)
        code = getattr(exc, "error_code", None)
        message = exc.detail if status in (400, 401) and code else None
        headers = {"WWW-Authenticate": 'Bearer realm="tenantry"'} if status == 401 else None
        if status == 401 and not code:
            message = "Authentication credentials are missing or invalid."
        if status == 415:
            message = str(exc.detail) if isinstance(exc, UnsupportedBody) else "Send the body as application/json."
        return _problem_response(request, status, code, message, headers=headers)

    def http_exception(request: ConnexionRequest, exc: StarletteHTTPException) -> ConnexionResponse:
        headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() != "content-type"}
        if exc.status_code == 405:
            # Werkzeug reports the methods of only one of the rules a path has; the spec knows all.
            path = request.url.path
            methods = next((m for pattern, m in allowed if pattern.match(path)), None)
            if methods:
                headers = {k: v for k, v in headers.items() if k.lower() != "allow"}
                headers["Allow"] = ", ".join(methods)
        return _problem_response(request, exc.status_code, headers=headers)

    def unexpected(request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        log.exception("unhandled error", exc_info=exc)
        return _problem_response(request, 500)

    app.add_error_handler(ProblemException, problem)
    app.add_error_handler(StarletteHTTPException, http_exception)
    app.add_error_handler(Exception, unexpected)
