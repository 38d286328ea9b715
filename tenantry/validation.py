"""Request validation with field-level details: Connexion's validators, reporting every problem.

Connexion's own validators stop at the first error and word it in jsonschema's internals
("Failed validating 'minimum' in schema ..."). These subclasses collect every error and turn
each into a `Detail(field, message)` a client can show next to the field.
"""

from __future__ import annotations

import json
import re
import typing as t
from collections import Counter
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from connexion import utils
from connexion.datastructures import MediaTypeDict
from connexion.exceptions import BadRequestProblem, UnsupportedMediaTypeProblem
from connexion.json_schema import Draft4RequestValidator, Draft4ResponseValidator
from connexion.middleware.request_validation import (
    RequestValidationAPI,
    RequestValidationMiddleware,
    RequestValidationOperation,
)
from connexion.utils import is_null, is_nullable
from connexion.validators import (
    VALIDATOR_MAP,
    FormDataValidator,
    JSONRequestBodyValidator,
    JSONResponseBodyValidator,
    ParameterValidator,
)
from jsonschema import Draft4Validator, ValidationError, validators
from starlette.types import Receive, Scope, Send

from tenantry.errors import Detail
from tenantry.formats import FORMAT_CHECKER

#: A JSON body nested deeper than this (arrays and objects) is refused before it is parsed:
#: Python's parser recurses once a level, and a few thousand levels exhaust its stack.
MAX_JSON_DEPTH = 64
#: A JSON string (escapes included), or one bracket: what the depth scan steps through. The closing
#: quote is optional so that a string that never closes is consumed once, to the end: requiring
#: it made every quote inside such a string start a failing scan to the end (quadratic).
_JSON_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)
_NUL = "must not contain NUL characters"

# Connexion builds its validator objects on every request; compiling a JSON Schema validator is
# the expensive part, so each schema's validator is made once and kept (the schemas are the
# spec's own objects, alive for the life of the app; the entry keeps them alive regardless).
# Every validator, of requests and of responses, checks formats with tenantry.formats: what a
# request may store is exactly what a response may carry.
#: A request schema's "one of these sets of fields is required" (an alias, or two ways to give a
#: name): `x-required-one-of: [[email], [username]]`. A top-level anyOf would say the same, but
#: client generators then lose the body's named model (`tenantry spec check` refuses one).
REQUIRED_ONE_OF = "x-required-one-of"


def _required_one_of(validator: Any, alternatives: Any, instance: Any, schema: dict) -> t.Iterator[ValidationError]:
    if isinstance(instance, dict) and not any(all(name in instance for name in group) for group in alternatives):
        names = " or ".join(" and ".join(group) for group in alternatives)
        yield ValidationError(f"one of {names} is required")


RequestSchemaValidator = validators.extend(Draft4RequestValidator, {REQUIRED_ONE_OF: _required_one_of})

_COMPILED: dict[tuple[int, type], tuple[Any, Any]] = {}


def _validator_for(schema: dict, cls: type) -> Any:
    entry = _COMPILED.get((id(schema), cls))
    if entry is None or entry[0] is not schema:
        entry = (schema, cls(schema, format_checker=FORMAT_CHECKER))
        _COMPILED[(id(schema), cls)] = entry
    return entry[1]


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Returns True when the JSON `text` nests arrays and objects deeper than `limit`.

    A flat scan, never a recursion: brackets inside strings do not count. On text that is not
    JSON the answer may be either; the parser refuses such text anyway.
    """
    if text.count("[") + text.count("{") <= limit:
        return False  # the common case: too few brackets to nest that deep
    depth = 0
    for match in _JSON_TOKENS.finditer(text):
        char = text[match.start()]
        if char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def nul_fields(document: Any) -> list[str]:
    """Returns the path of every string, and of every object key, holding a NUL character, in
    document order (`users[3].email`; a key's NUL written `\\u0000`). No database stores NUL:
    PostgreSQL refuses it, so it is refused everywhere alike. Iterative, not recursive."""
    found: list[str] = []
    stack: list[tuple[Any, str]] = [(document, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                found.append(path or "body")
        elif isinstance(value, dict):
            children = []
            for key, child in value.items():
                name = _join(path, str(key).replace("\x00", "\\u0000"))
                if "\x00" in str(key):
                    found.append(name)
                else:
                    children.append((child, name))
            stack.extend(reversed(children))
        elif isinstance(value, list):
            stack.extend(reversed([(child, f"{path}[{index}]") for index, child in enumerate(value)]))
    return found


class RequestValidationProblem(BadRequestProblem):
    """A 400 carrying field-level details; rendered as VALIDATION_ERROR."""

    def __init__(self, message: str, details: list[Detail]) -> None:
        super().__init__(detail=message)
        self.details = details


def field_path(path: t.Iterable[t.Any]) -> str:
    """Returns a jsonschema error path as `users[2].email`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _join(base: str, name: str) -> str:
    return f"{base}.{name}" if base else name


def _error_path(error: ValidationError, root: str = "") -> str:
    path = field_path(error.absolute_path)
    if root:
        path = f"{root}{'.' + path if path and not path.startswith('[') else path}"
    return path


def _unknown_fields(error: ValidationError) -> list[str]:
    """The fields an `additionalProperties` error's object has that its schema does not list, sorted."""
    instance = error.instance if isinstance(error.instance, dict) else {}
    schema = error.schema if isinstance(error.schema, Mapping) else {}  # an object's schema is a mapping
    return sorted(set(instance) - set(schema.get("properties", {})))


def describe(error: ValidationError, root: str = "") -> Detail:
    """Returns a client-facing detail for one jsonschema error (an unknown field's: the first one)."""
    path = _error_path(error, root)
    # Typed as possibly unset (an error no validator raised yet); every error here comes from one.
    kind: Any = error.validator
    value: Any = error.validator_value
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else ""
        return Detail("is required", _join(path, missing))
    if kind == REQUIRED_ONE_OF:
        # "one of these sets of fields is required": named by the first set's first missing field
        first = value[0]
        absent = [name for name in first if not isinstance(error.instance, dict) or name not in error.instance]
        others = " or ".join(" and ".join(group) for group in value[1:])
        return Detail(f"is required (or {others})", _join(path, (absent or first)[0]))
    if kind == "additionalProperties":
        extras = _unknown_fields(error)
        name = extras[0] if extras else ""
        return Detail("is not a known field", _join(path, name))
    messages = {
        "type": lambda: f"must be of type {value if isinstance(value, str) else ' or '.join(value)}",
        "minLength": lambda: f"must be at least {value} characters long",
        "maxLength": lambda: f"must be at most {value} characters long",
        "minimum": lambda: f"must be at least {value}",
        "maximum": lambda: f"must be at most {value}",
        "minItems": lambda: f"must have at least {value} items",
        "maxItems": lambda: f"must have at most {value} items",
        "minProperties": lambda: "must name at least one field",
        "pattern": lambda: "does not have the required format",
        "format": lambda: f"is not a valid {value}",
        "enum": lambda: (
            ("must be one of: " + ", ".join(map(str, value)))
            if len(value) <= 12
            else "is not one of the allowed values"
        ),
        "nullable": lambda: "must not be null",
    }
    message = messages.get(kind, lambda: "is invalid")()
    return Detail(message, path or None)


def _details(validator: Draft4Validator, instance: t.Any, root: str = "") -> list[Detail]:
    errors = sorted(validator.iter_errors(instance), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    details: list[Detail] = []
    for error in errors:
        if error.validator == "additionalProperties" and len(_unknown_fields(error)) > 1:
            # jsonschema reports every unknown field of an object in one error: a detail each.
            path = _error_path(error, root)
            details.extend(Detail("is not a known field", _join(path, name)) for name in _unknown_fields(error))
        else:
            details.append(describe(error, root))
    return details


_ABSENT = object()


class BodyValidator(JSONRequestBodyValidator):
    """Validates a JSON body and reports every problem with its field."""

    async def wrap_receive(self, receive: Receive, *, scope: Scope) -> tuple[Receive, Scope]:
        """Reads and validates the body, then replays it to the app unchanged.

        Connexion's own version decides from Content-Length alone whether a body was sent: a
        chunked body (no Content-Length) counted as none, so a required body was "missing" (a
        bare 400) and an optional one went unvalidated. Here the body is whatever arrives,
        chunked or not; an empty one is absent (`_validate` says what is missing). The size
        limit applies as it arrives (tenantry.middleware bounds `receive`).
        """
        messages: list[t.MutableMapping[str, t.Any]] = []

        async def stream() -> t.AsyncGenerator[bytes, None]:
            more_body = True
            while more_body:
                message = await receive()
                messages.append(message)
                more_body = message.get("more_body", False)
                yield message.get("body", b"")

        body = await self._parse(stream(), scope=scope)
        if not (body is None and self._nullable):
            self._validate(body)
        return self._insert_messages(receive, messages=messages), scope

    async def _parse(self, stream: t.AsyncGenerator[bytes, None], scope: t.Any) -> t.Any:
        body = b"".join([chunk async for chunk in stream])
        if not body:
            return _ABSENT  # no body at all, which differs from a JSON `null`
        try:
            text = body.decode(self._encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise RequestValidationProblem(
                "The request body is not valid JSON.", [Detail(f"is not valid JSON: {exc}", "body")]
            ) from None
        if json_depth_exceeds(text):
            raise RequestValidationProblem(
                f"The request body is nested deeper than {MAX_JSON_DEPTH} levels.",
                [Detail(f"is nested deeper than {MAX_JSON_DEPTH} levels", "body")],
            )
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RequestValidationProblem(
                "The request body is not valid JSON.", [Detail(f"is not valid JSON: {exc}", "body")]
            ) from None
        if "\\u0000" in text:  # JSON can only carry NUL escaped; without the escape, no walk
            fields = nul_fields(document)
            if fields:
                raise RequestValidationProblem(
                    "The request body has NUL characters.", [Detail(_NUL, field) for field in fields]
                )
        return document

    def _validate(self, body: t.Any) -> dict | None:
        if body is _ABSENT:
            if not self._required:
                return None  # an optional body that was not sent
            raise RequestValidationProblem("The request body is required.", [Detail("is required", "body")])
        if body is None and not self._nullable:
            raise RequestValidationProblem("The request body must not be null.", [Detail("must not be null", "body")])
        details = _details(_validator_for(self._schema, RequestSchemaValidator), body)
        if details:
            raise RequestValidationProblem("The request body is invalid.", details)
        return None


class FormBodyValidator(FormDataValidator):
    """Validates a form body (`POST /v1/auth/token` as OAuth 2.0 clients send it) like a JSON one.

    Every problem is reported with its field, and nothing is logged: Connexion's own form
    validator logs each failure at error level with the value in it, a refresh token included.
    """

    #: A chunked form is read like a chunked JSON body (Connexion's own version took a body without
    #: Content-Length for none: a bare 400 "RequestBody is required" for a valid chunked form).
    wrap_receive = BodyValidator.wrap_receive

    async def _parse(self, stream: t.AsyncGenerator[bytes, None], scope: Scope) -> dict:
        """Refuses a field given more than once (RFC 6749 section 3.2: "MUST NOT be included more than
        once"), which Connexion would join with commas into a value nobody sent; then parses as Connexion does."""
        body = b"".join([chunk async for chunk in stream])
        counts = Counter(name for name, _ in parse_qsl(body.decode("latin-1"), keep_blank_values=True))
        repeated = sorted(name for name, count in counts.items() if count > 1)
        if repeated:
            raise RequestValidationProblem(
                "The request body is invalid.", [Detail("must be given once", name) for name in repeated]
            )

        async def again() -> t.AsyncGenerator[bytes, None]:
            yield body

        return await super()._parse(again(), scope)

    def _validate(self, body: t.Any) -> dict | None:
        if not isinstance(body, dict):
            raise RequestValidationProblem("The request body is invalid.", [Detail("must be a form", "body")])
        fields = nul_fields(body)
        if fields:
            raise RequestValidationProblem("The request body has NUL characters.", [Detail(_NUL, f) for f in fields])
        details = _details(_validator_for(self._schema, RequestSchemaValidator), body)
        if details:
            raise RequestValidationProblem("The request body is invalid.", details)
        return None


class ParamsValidator(ParameterValidator):
    """Validates query, path and header parameters, reporting every problem by parameter name."""

    def validate_request(self, request: t.Any) -> None:
        """Raises RequestValidationProblem naming each unknown or invalid parameter."""
        details: list[Detail] = []
        if self.strict_validation and request.scope.get("query_string"):  # no query string, no unknown names
            extra = self.validate_query_parameter_list(request, security_params=self.security_query_params)
            details.extend(Detail("is not a known query parameter", name) for name in sorted(extra))
        seen: set[tuple[str, str]] = set()
        for location, read in _SOURCES.items():
            params = self.parameters.get(location)
            if not params:
                continue
            source = read(request)  # each source is parsed only where the operation declares a parameter
            for param in params:
                name = param["name"]
                if (location, name) in seen:  # Connexion lists path-level parameters once per method
                    continue
                seen.add((location, name))
                key = name.replace("-", "_") if location == "path" else name
                detail = self._check(param, source.get(key), name)
                if detail:
                    details.append(detail)
        if details:
            raise RequestValidationProblem("The request parameters are invalid.", details)

    @staticmethod
    def _check(param: dict, value: t.Any, name: str) -> Detail | None:
        if value is None:
            return Detail("is required", name) if param.get("required") else None
        if is_nullable(param) and is_null(value):
            return None
        if any("\x00" in item for item in (value if isinstance(value, list) else [value]) if isinstance(item, str)):
            # No database stores NUL (PostgreSQL refuses it): refused on both alike.
            return Detail(_NUL, name)
        schema = param.get("schema", param)
        error = next(iter(_validator_for(schema, Draft4Validator).iter_errors(value)), None)
        if error is None:
            return None
        detail = describe(error)
        return Detail(detail.message, name)


_SOURCES: dict[str, t.Callable[[t.Any], t.Any]] = {
    "query": lambda request: request.query_params,
    "path": lambda request: request.path_params,
    "header": lambda request: request.headers,
    "cookie": lambda request: request.cookies,
}


class UnsupportedBody(UnsupportedMediaTypeProblem):
    """A 415 whose message says which types the operation takes (rendered as UNSUPPORTED_MEDIA_TYPE)."""


def _carries_body(scope: Scope) -> bool:
    """True when the request says a body follows: a non-zero Content-Length, or any Transfer-Encoding."""
    carries = False
    for name, value in scope["headers"]:
        if name == b"transfer-encoding":
            return True
        if name == b"content-length":
            try:
                carries = int(value) > 0
            except ValueError:
                carries = True  # the server refuses a malformed length before we see it; be strict anyway
    return carries


class _BodyTypeOperation(RequestValidationOperation):
    """Connexion's request validation, with a body's type checked against the spec first.

    Connexion reads a body without a Content-Type as the operation's first declared type (JSON),
    while Flask then hands the handler its raw bytes. Here a body must declare one of the types
    the operation's requestBody lists (derived from the spec, never hard-coded), and an
    operation without a requestBody takes no body: otherwise 415, before any handler runs.
    """

    def _accepted(self) -> str:
        return " or ".join(self._operation.consumes)

    def extract_content_type(self, headers: list[tuple[bytes, bytes]]) -> tuple[str, str]:
        """Returns the body's media type, lower-cased, and its encoding.

        Media types are case-insensitive (RFC 9110 8.3.1), while Connexion looks up the body's
        schema and validator by the type as sent: `Application/JSON` would match neither and
        skip body validation (schema, depth, NUL) entirely.
        """
        mime_type, encoding = super().extract_content_type(headers)
        return mime_type.lower(), encoding

    def validate_mime_type(self, mime_type: str) -> None:
        """Raises UnsupportedBody unless `mime_type` is one the operation declares."""
        consumes = self._operation.consumes
        if consumes and mime_type.lower() not in MediaTypeDict([(c.lower(), None) for c in consumes]):
            raise UnsupportedBody(f"Send the body as {self._accepted()}.")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuses a body of no or an undeclared type with 415, then validates as Connexion does."""
        if _carries_body(scope):
            if not self._operation.consumes:
                raise UnsupportedBody("This operation takes no request body.")
            if utils.extract_content_type(scope["headers"]) is None:
                raise UnsupportedBody(f"The body has no Content-Type: send it as {self._accepted()}.")
        await super().__call__(scope, receive, send)


class _BodyTypeAPI(RequestValidationAPI):
    def make_operation(self, operation: Any) -> RequestValidationOperation:
        return _BodyTypeOperation(
            self.next_app,
            operation=operation,
            strict_validation=self.strict_validation,
            validator_map=self.validator_map,
        )


class BodyTypeValidationMiddleware(RequestValidationMiddleware):
    """Connexion's request validation middleware, refusing bodies of no or undeclared type (415)."""

    api_cls = _BodyTypeAPI


class ResponseBodyValidator(JSONResponseBodyValidator):
    """Connexion's response validation (on in tests), checking formats as requests are checked."""

    @property
    def validator(self) -> Draft4Validator:
        return _validator_for(self._schema, Draft4ResponseValidator)


def validator_map() -> dict:
    """Returns Connexion's validator map with our body, parameter and response validators swapped in."""
    mapping = dict(VALIDATOR_MAP)
    mapping["body"] = MediaTypeDict(
        {**VALIDATOR_MAP["body"], "*/*json": BodyValidator, "application/x-www-form-urlencoded": FormBodyValidator}
    )
    mapping["parameter"] = ParamsValidator
    mapping["response"] = MediaTypeDict({**VALIDATOR_MAP["response"], "*/*json": ResponseBodyValidator})
    return mapping
