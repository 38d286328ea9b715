"""The contract: bundling the split spec into one document, and checking it against the code.

`bundle()` turns `openapi/openapi.yaml` and the files it references into one OpenAPI document in
which every file under `openapi/components/` becomes a named component
(`components/schemas/users.yaml#/User` -> `#/components/schemas/User`) and path files are
inlined. That document is what the server routes, validates and publishes, so the served spec
is the file on disk.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import re
from pathlib import Path
from typing import Any

import yaml

try:
    # libyaml's safe loader when PyYAML was built with it (the wheels are): the same documents as
    # yaml.safe_load, about three times faster. Every app and server worker bundles the spec at
    # start, and parsing it was most of a server's start-up time.
    from yaml import CSafeLoader as SafeLoader
except ImportError:  # pragma: no cover - a PyYAML built without libyaml
    from yaml import SafeLoader  # type: ignore[assignment]

HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
RESERVED_PERMISSIONS = ("public", "authenticated")
HANDLER_PACKAGE = "handlers"


class SpecError(ValueError):
    """The spec cannot be bundled or does not match the code."""


class _Bundler:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.components_dir = self.root.parent / "components"
        self.files: dict[Path, Any] = {}
        self.components: dict[str, dict[str, Any]] = {}
        self.origins: dict[tuple[str, str], Path] = {}

    def load(self, path: Path) -> Any:
        path = path.resolve()
        if path not in self.files:
            try:
                self.files[path] = yaml.load(path.read_text(), Loader=SafeLoader)
            except FileNotFoundError:
                raise SpecError(f"referenced file not found: {path}") from None
        return self.files[path]

    def pointer(self, doc: Any, pointer: str, where: str) -> Any:
        node = doc
        for raw in [p for p in pointer.lstrip("/").split("/") if p]:
            key = raw.replace("~1", "/").replace("~0", "~")
            try:
                node = node[int(key)] if isinstance(node, list) else node[key]
            except (KeyError, IndexError, ValueError):
                raise SpecError(f"unresolvable $ref {where}") from None
        return node

    def section_of(self, path: Path) -> str | None:
        try:
            rel = path.relative_to(self.components_dir)
        except ValueError:
            return None
        return rel.parts[0].removesuffix(".yaml")

    def ref(self, ref: str, current: Path) -> Any:
        file_part, _, pointer = ref.partition("#")
        target = (current.parent / file_part).resolve() if file_part else current
        section = self.section_of(target)
        if section is None:
            if target == self.root:
                return {"$ref": ref if not file_part else f"#{pointer}"}
            # A path file: inline its node.
            node = self.pointer(self.load(target), pointer, f"{ref} in {current}")
            return self.walk(node, target)
        parts = [p for p in pointer.split("/") if p]
        if len(parts) != 1:
            raise SpecError(f"component refs must name one component: {ref} in {current}")
        name = parts[0]
        key = (section, name)
        if key not in self.origins:
            self.origins[key] = target
            node = self.pointer(self.load(target), pointer, f"{ref} in {current}")
            self.components.setdefault(section, {})[name] = None
            self.components[section][name] = self.walk(node, target)
        elif self.origins[key] != target:
            raise SpecError(f"component {section}/{name} is defined in {self.origins[key]} and {target}")
        return {"$ref": f"#/components/{section}/{name}"}

    def walk(self, node: Any, current: Path) -> Any:
        if isinstance(node, dict):
            if "$ref" in node and isinstance(node["$ref"], str):
                return self.ref(node["$ref"], current)
            return {key: self.walk(value, current) for key, value in node.items()}
        if isinstance(node, list):
            return [self.walk(item, current) for item in node]
        return copy.deepcopy(node)


def bundle(root: Path) -> dict[str, Any]:
    """Returns the bundled OpenAPI document for the root file `root`.

    Raises SpecError when a reference does not resolve or one component name is defined twice.
    """
    bundler = _Bundler(root)
    doc = bundler.walk(bundler.load(root), bundler.root)
    components = doc.setdefault("components", {})
    for section, entries in bundler.components.items():
        target = components.setdefault(section, {})
        for name, value in sorted(entries.items()):
            if name in target:
                raise SpecError(f"component {section}/{name} is defined twice")
            target[name] = value
    # Round-trip through JSON: YAML anchors become independent copies and dates become strings.
    return json.loads(json.dumps(doc, default=str))


#: The extensions the published document keeps: what an operation needs (`x-permission`), how
#: it is rate-limited (`x-rate-limit`) and time-limited (`x-timeout`, which the 504 response
#: explains), and the audit action and event it records (`x-audit-action`, `x-event-type`) are
#: facts partners act on. Every other `x-` key is the server's own wiring and is left out:
#: `x-bearerInfoFunc`/`x-apikeyInfoFunc` name Python functions, `x-hashed` how a field is stored.
PUBLIC_EXTENSIONS = frozenset(
    {"x-permission", "x-rate-limit", "x-timeout", "x-audit-action", "x-event-type", "x-required-one-of"}
)
#: Maps whose keys are names (a property, a header, a path...), never extensions.
_NAME_MAPS = frozenset(
    {
        "paths",
        "schemas",
        "properties",
        "responses",
        "parameters",
        "headers",
        "content",
        "securitySchemes",
        "requestBodies",
        "links",
        "callbacks",
        "variables",
        "mapping",
        "encoding",
        "scopes",
    }
)


def published(doc: dict[str, Any], public_url: str = "") -> dict[str, Any]:
    """Returns the document partners get at /openapi.json: `doc` less the server's own extensions.

    `servers` is the one public URL (`public_url`, TENANTRY_PUBLIC_URL), or `/` (the server the
    document was fetched from) when none is set. `doc` itself, which the server routes by, is
    not changed. Examples are copied as they are.
    """

    def strip(node: Any, names: bool = False) -> Any:
        if isinstance(node, list):
            return [strip(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {}
        for key, value in node.items():
            if not names and key.startswith("x-") and key not in PUBLIC_EXTENSIONS:
                continue
            if not names and key in ("example", "examples"):
                out[key] = copy.deepcopy(value)
            else:
                out[key] = strip(value, names=not names and key in _NAME_MAPS)
        return out

    out = strip(doc)
    if public_url:
        out["servers"] = [{"url": public_url, "description": "This API"}]
    else:
        out["servers"] = [{"url": "/", "description": "The server that serves this document"}]
    return out


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Returns (method, path, operation) for every operation in the document."""
    out = []
    for path, item in doc.get("paths", {}).items():
        for method in HTTP_METHODS:
            if method in item:
                out.append((method, path, item[method]))
    return out


#: The time-limit classes an operation may name in `x-timeout` (Settings holds each one's seconds).
TIMEOUT_CLASSES = ("standard", "batch", "upload")
#: The schema extension marking a string the server keeps only as an argon2id hash.
HASHED = "x-hashed"


def timeout_class(op: dict[str, Any]) -> str:
    """Returns the operation's time-limit class: its `x-timeout`, by default `standard`."""
    return str(op.get("x-timeout", "standard"))


def hashed_fields(doc: dict[str, Any], op: dict[str, Any]) -> list[tuple[str, ...]]:
    """Returns where the operation's JSON request body holds strings marked `x-hashed`.

    Each is a path of property names, with `*` for every item of an array: `("password",)`,
    `("users", "*", "password")`. Followed through `$ref`, `allOf`, `anyOf` and `oneOf`; a schema
    that refers back to itself is not entered twice on one path.
    """
    body = _resolve(doc, op.get("requestBody") or {})
    schema = (body.get("content") or {}).get("application/json", {}).get("schema")
    found: set[tuple[str, ...]] = set()

    def walk(node: Any, path: tuple[str, ...], seen: frozenset[str]) -> None:
        while isinstance(node, dict) and "$ref" in node:
            if node["$ref"] in seen:
                return
            seen = seen | {node["$ref"]}
            node = _pointer(doc, node["$ref"])
        if not isinstance(node, dict):
            return
        if node.get(HASHED) and node.get("type") == "string":
            found.add(path)
        for key in ("allOf", "anyOf", "oneOf"):
            for part in node.get(key, ()):
                walk(part, path, seen)
        for name, prop in (node.get("properties") or {}).items():
            walk(prop, (*path, name), seen)
        if "items" in node:
            walk(node["items"], (*path, "*"), seen)

    if schema is not None:
        walk(schema, (), frozenset())
    return sorted(found)


def values_at(body: Any, path: tuple[str, ...]) -> list[str]:
    """Returns the strings found at `path` (see hashed_fields) in a request body, in order."""
    nodes = [body]
    for part in path:
        if part == "*":
            nodes = [item for node in nodes if isinstance(node, list) for item in node]
        else:
            nodes = [node[part] for node in nodes if isinstance(node, dict) and part in node]
    return [node for node in nodes if isinstance(node, str)]


#: An operationId: the handler function's name, which is also what generated clients call it.
OPERATION_ID = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


def handler_name(op: dict[str, Any]) -> str:
    """Returns the Python import path of an operation's handler: `handlers.<first tag>.<operationId>`.

    `list_users` tagged `users` is `handlers.users.list_users`. The operationId is the bare
    function name (not `users.list_users`): client generators name their functions after it
    and their modules after the tag.
    """
    tags = op.get("tags") or [""]
    return f"{HANDLER_PACKAGE}.{tags[0]}.{op.get('operationId')}"


def check(doc: dict[str, Any]) -> list[str]:
    """Returns every problem with the document: spec validity, handler drift, permissions.

    An empty list means the spec is valid OpenAPI 3.0.3, every operationId resolves to a handler,
    every public handler function is routed, and every operation declares `x-permission`.
    """
    from openapi_spec_validator import validate
    from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

    problems: list[str] = []
    try:
        validate(doc)
    except OpenAPIValidationError as exc:
        problems.append(f"invalid OpenAPI document: {exc.message}")
    seen: dict[str, str] = {}
    routed: set[str] = set()
    for method, path, op in operations(doc):
        label = f"{method.upper()} {path}"
        op_id = op.get("operationId")
        if not op_id:
            problems.append(f"{label}: no operationId")
            continue
        if op_id in seen:
            problems.append(f"{label}: operationId {op_id} is also used by {seen[op_id]}")
        seen[op_id] = label
        if not OPERATION_ID.match(op_id):
            problems.append(f"{label}: operationId {op_id} is not a snake_case function name (like list_users)")
        if not op.get("tags"):
            problems.append(f"{label}: no tag (its first tag names the handler module)")
        permission = op.get("x-permission")
        if not permission:
            problems.append(f"{label}: no x-permission")
        elif permission not in RESERVED_PERMISSIONS and (permission.count(":") != 1 or not all(permission.split(":"))):
            problems.append(f"{label}: x-permission {permission!r} is not <resource>:<action>")
        if op.get("security") == [] and permission not in (None, "public"):
            problems.append(f"{label}: an operation without security must have x-permission: public")
        if permission == "public" and op.get("security") != []:
            problems.append(f"{label}: x-permission: public needs security: []")
        problems.extend(f"{label}: {problem}" for problem in _core_declarations(doc, method, op, path))
        module_name, _, func_name = handler_name(op).rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            problems.append(f"{label}: operationId {op_id}: cannot import {module_name}: {exc}")
            continue
        if not callable(getattr(module, func_name, None)):
            problems.append(f"{label}: operationId {op_id}: {module_name} has no {func_name}")
        routed.add(f"{module_name}.{func_name}")
    problems.extend(_unrouted(routed))
    return problems


#: Statuses answered by the outer middleware before any operation (or its limits) runs, and the
#: 504 the event loop answers in place of a handler that ran out of time (no limit headers either).
_BEFORE_ROUTING = frozenset({"413", "414", "431", "504", "default"})
_AUDIT_ACTION = re.compile(r"^[a-z_]+\.[a-z_]+$")


def _resolve(doc: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = _pointer(doc, node["$ref"])
    return node


def _pointer(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def event_catalog(doc: dict[str, Any]) -> set[str]:
    """Returns the event types the spec's EventType schema lists."""
    schema = doc.get("components", {}).get("schemas", {}).get("EventType", {})
    return set(schema.get("enum", []))


def _deref(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Returns the object a local `#/...` reference names (the node itself when it is none)."""
    ref = node.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return node
    target: Any = doc
    for part in ref[2:].split("/"):
        target = target.get(part, {}) if isinstance(target, dict) else {}
    return target if isinstance(target, dict) else {}


def _core_declarations(doc: dict[str, Any], method: str, op: dict[str, Any], path: str = "") -> list[str]:
    """Returns what an operation fails to declare of the core's guarantees.

    Every operation declares 415 (a body it does not take is refused before it runs) and 504
    (its time limit: `x-timeout` standard, batch or upload, by default standard). Every
    operation names its rate-limit class (`x-rate-limit`: standard, auth or none), and a
    limited one declares 429 and the X-RateLimit-* headers on each response. Every non-GET
    operation names its audit action (`x-audit-action`, or `false` when it changes nothing);
    every POST declares both idempotency headers, the 409 and 422 they can answer, and
    `Idempotent-Replayed` on its successes. The domain event a change emits (`x-event-type`, by
    default its audit action; `false` for none) is in the EventType catalog.
    """
    problems = [
        f"must declare {status} (the request limits)"
        for status in ("414", "431")
        if status not in op.get("responses", {})
    ]
    if "{" in path and "404" not in op.get("responses", {}):
        # A path parameter no route can carry (a line break in an id) is a 404 before any operation runs.
        problems.append("has a path parameter: must declare 404 (a path no route matches)")
    body = _deref(doc, op.get("requestBody") or {})
    for media, content in (body.get("content") or {}).items():
        if {"anyOf", "oneOf"} & set(_deref(doc, content.get("schema") or {})):
            # openapi-python-client then types the body as Any (no named model; with an optional
            # body, code that does not parse): say "one of" in prose and check it in the handler.
            problems.append(f"{media} body: a top-level anyOf/oneOf costs generated clients their model")
    parameters = [_deref(doc, p) for p in op.get("parameters", ())]
    query = {p.get("name") for p in parameters if p.get("in") == "query"}
    if "offset" in query and not {"page", "page_size", "size"} <= query:
        # tenantry.paging gives every offset list the page style too (seeds 002 and 004).
        problems.append("is an offset list: must take page, page_size and size as well as limit and offset")
    if "415" not in op.get("responses", {}):
        # A body of no or an undeclared type is refused on every operation, one without a body too.
        problems.append("must declare 415 (a body of a type it does not take)")
    if "504" not in op.get("responses", {}):
        problems.append("must declare 504 (its time limit, x-timeout)")
    if timeout_class(op) not in TIMEOUT_CLASSES:
        problems.append(f"x-timeout must be one of {', '.join(TIMEOUT_CLASSES)}")
    if op.get("x-rate-limit") not in ("standard", "auth", "none"):
        problems.append("x-rate-limit must be standard, auth or none")
    elif op["x-rate-limit"] != "none":
        if "429" not in op.get("responses", {}):
            problems.append("a rate-limited operation must declare 429")
        for status, response in op.get("responses", {}).items():
            declared = _resolve(doc, response).get("headers") or {}
            missing = [
                h for h in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset") if h not in declared
            ]
            if missing and status not in _BEFORE_ROUTING:
                problems.append(f"{status} must declare {', '.join(missing)}")
    action = op.get("x-audit-action")
    if method == "get":
        if action is not None:
            problems.append("a GET records no audit entry: drop x-audit-action")
    elif action is None:
        problems.append("no x-audit-action (the audit action it records, or false)")
    elif action is not False and not (isinstance(action, str) and _AUDIT_ACTION.match(action)):
        problems.append(f"x-audit-action {action!r} is not <resource>.<verb> or false")
    event_type = op.get("x-event-type", action)
    if method == "get" and "x-event-type" in op:
        problems.append("a GET emits no event: drop x-event-type")
    elif method != "get" and event_type not in (None, False) and event_type not in event_catalog(doc):
        problems.append(
            f"emits {event_type!r}, which is not in the EventType catalog "
            "(add it there, or set x-event-type to another type or false)"
        )
    if method != "post":
        return problems
    headers = {p.get("name") for p in (_resolve(doc, p) for p in op.get("parameters", [])) if p.get("in") == "header"}
    for name in ("Idempotency-Key", "X-Idempotency-Key"):
        if name not in headers:
            problems.append(f"a POST must declare the {name} header parameter")
    responses = op.get("responses", {})
    for status in ("409", "422"):
        if status not in responses:
            problems.append(f"a POST must declare {status} (idempotency)")
    for status, response in responses.items():
        if status.startswith("2") and "Idempotent-Replayed" not in (_resolve(doc, response).get("headers") or {}):
            problems.append(f"{status} must declare the Idempotent-Replayed header")
    return problems


def _unrouted(routed: set[str]) -> list[str]:
    package = importlib.import_module(HANDLER_PACKAGE)
    assert package.__file__ is not None  # a package of files (handlers/__init__.py)
    problems = []
    for file in sorted(Path(package.__file__).parent.glob("*.py")):
        if file.stem.startswith("_"):
            continue
        module = importlib.import_module(f"{HANDLER_PACKAGE}.{file.stem}")
        for name, func in inspect.getmembers(module, inspect.isfunction):
            if name.startswith("_") or func.__module__ != module.__name__:
                continue
            if f"{module.__name__}.{name}" not in routed:
                problems.append(f"{module.__name__}.{name} is a public handler no operation routes to")
    return problems


def builtin_permissions(spec: dict[str, Any]) -> dict[str, str]:
    """Returns the permissions the spec's operations require, each with the summaries that need it.

    Reserved markers (`public`, `authenticated`) are not permissions. The `<resource>:write`
    alias of a resource with both `create` and `update` is listed too (API key scopes use it).
    """
    needed: dict[str, list[str]] = {}
    for item in spec.get("paths", {}).values():
        for method in HTTP_METHODS:
            operation = item.get(method)
            if not operation:
                continue
            permission = operation.get("x-permission")
            if permission and permission not in RESERVED_PERMISSIONS:
                needed.setdefault(permission, []).append(operation.get("summary", operation["operationId"]))
    for permission in list(needed):
        resource = permission.partition(":")[0]
        if f"{resource}:create" in needed and f"{resource}:update" in needed:
            needed.setdefault(f"{resource}:write", ["any operation that needs create or update"])
    return {
        name: "Required by: " + ", ".join(sorted(set(summaries))) + "." for name, summaries in sorted(needed.items())
    }
