"""`tenantry spec diff OLD NEW`: which changes between two contracts break their clients.

Breaking, by the definition in seed 001: removing an operation, removing a response field (or
making a required one optional), adding a required request field or parameter, changing a
field's type, changing an operation's authentication, and changing what an error code means
(removing a code or changing its status). Everything else that differs (new operations, new
optional fields, new error codes) is reported as non-breaking.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tenantry.spec import operations

_CODE_LINE = re.compile(r"^-\s*([A-Z_]+)\s*\((\d{3})\)")


@dataclass
class Report:
    """The changes found, split by whether they break existing clients."""

    breaking: list[str] = field(default_factory=list)
    non_breaking: list[str] = field(default_factory=list)


class _Resolver:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def __call__(self, node: Any) -> Any:
        seen = 0
        while isinstance(node, dict) and seen < 50:
            seen += 1
            if "$ref" in node:
                parts = node["$ref"].lstrip("#/").split("/")
                target: Any = self.doc
                for part in parts:
                    target = target[part.replace("~1", "/").replace("~0", "~")]
                node = target
                continue
            inner = _nullable_wrapped(node)
            if inner is None:
                break
            node = inner
        return node


def _nullable_wrapped(node: dict[str, Any]) -> Any:
    """Returns X for a schema that is "X or null" (`anyOf`/`oneOf` of X and a null-only schema), else None.

    The same field written as `{type: string, nullable: true, enum: [a, b, null]}` or as
    `anyOf: [{$ref: AB}, {nullable: true, enum: [null]}]` is the same contract: compared as X.
    """
    for key in ("anyOf", "oneOf"):
        members = node.get(key)
        if isinstance(members, list) and len(members) == 2:
            rest = [m for m in members if not (isinstance(m, dict) and m.get("enum") == [None])]
            if len(rest) == 1:
                return rest[0]
    return None


def _type(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if kind is None and "properties" in schema:
        return "object"
    return kind


def _compare_schemas(
    old: Any, new: Any, where: str, direction: str, ro: _Resolver, rn: _Resolver, report: Report, depth: int = 0
) -> None:
    """Compares a request ("request") or response ("response") schema, property by property."""
    old, new = ro(old), rn(new)
    if not isinstance(old, dict) or not isinstance(new, dict) or depth > 12:
        return
    if _type(old) and _type(new) and _type(old) != _type(new):
        report.breaking.append(f"{where}: type changed from {_type(old)} to {_type(new)}")
        return
    if _type(old) == "array":
        _compare_schemas(old.get("items", {}), new.get("items", {}), f"{where}[]", direction, ro, rn, report, depth + 1)
        return
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    old_required, new_required = set(old.get("required", [])), set(new.get("required", []))
    for name in sorted(set(old_props) | set(new_props)):
        path = f"{where}.{name}"
        if name not in new_props:
            (report.breaking if direction == "response" else report.non_breaking).append(
                f"{path}: {'response field removed' if direction == 'response' else 'request field removed'}"
            )
            continue
        if name not in old_props:
            if direction == "request" and name in new_required:
                report.breaking.append(f"{path}: new required request field")
            else:
                report.non_breaking.append(
                    f"{path}: new {'optional request' if direction == 'request' else 'response'} field"
                )
            continue
        if direction == "request" and name in new_required and name not in old_required:
            report.breaking.append(f"{path}: request field became required")
        if direction == "response" and name in old_required and name not in new_required:
            report.breaking.append(f"{path}: response field is no longer always present")
        _compare_schemas(old_props[name], new_props[name], path, direction, ro, rn, report, depth + 1)


def _json_schema(body: dict[str, Any] | None, ro: _Resolver) -> Any:
    body = ro(body or {})
    return body.get("content", {}).get("application/json", {}).get("schema")


def _security(doc: dict[str, Any], op: dict[str, Any]) -> list[str]:
    requirements = op.get("security", doc.get("security", []))
    return sorted(",".join(sorted(req)) for req in requirements)


def _error_codes(doc: dict[str, Any]) -> dict[str, str]:
    schema = doc.get("components", {}).get("schemas", {}).get("ErrorCode", {})
    codes = {code: "" for code in schema.get("enum", [])}
    for line in schema.get("description", "").splitlines():
        match = _CODE_LINE.match(line.strip())
        if match and match.group(1) in codes:
            codes[match.group(1)] = match.group(2)
    return codes


def diff(old: dict[str, Any], new: dict[str, Any]) -> Report:
    """Returns the breaking and non-breaking changes from the `old` contract to the `new` one."""
    report = Report()
    ro, rn = _Resolver(old), _Resolver(new)
    old_ops = {(m, p): op for m, p, op in operations(old)}
    new_ops = {(m, p): op for m, p, op in operations(new)}
    for key in sorted(set(old_ops) - set(new_ops)):
        report.breaking.append(f"{key[0].upper()} {key[1]}: operation removed")
    for key in sorted(set(new_ops) - set(old_ops)):
        report.non_breaking.append(f"{key[0].upper()} {key[1]}: operation added")
    for key in sorted(set(old_ops) & set(new_ops)):
        label = f"{key[0].upper()} {key[1]}"
        old_op, new_op = old_ops[key], new_ops[key]
        old_auth, new_auth = set(_security(old, old_op)), set(_security(new, new_op))
        if old_auth != new_auth:
            # Dropping an accepted scheme (making the operation public included) or securing a
            # public operation changes authentication; accepting one more scheme only widens it.
            old_public = not old_auth or "" in old_auth
            new_public = not new_auth or "" in new_auth
            if (old_auth - new_auth) or (old_public and not new_public):
                report.breaking.append(f"{label}: authentication changed")
            else:
                report.non_breaking.append(f"{label}: authentication widened")
        old_params = {(p["in"], p["name"]): p for p in map(ro, old_op.get("parameters", []))}
        for param in map(rn, new_op.get("parameters", [])):
            if param.get("required") and (param["in"], param["name"]) not in old_params:
                report.breaking.append(f"{label}: new required {param['in']} parameter {param['name']}")
        old_body, new_body = _json_schema(old_op.get("requestBody"), ro), _json_schema(new_op.get("requestBody"), rn)
        if old_body is not None and new_body is not None:
            _compare_schemas(old_body, new_body, f"{label} request", "request", ro, rn, report)
        elif new_body is not None and ro(new_op.get("requestBody", {})).get("required"):
            report.breaking.append(f"{label}: now requires a request body")
        for status in sorted(set(new_op.get("responses", {})) - set(old_op.get("responses", {}))):
            report.non_breaking.append(f"{label}: response {status} documented")
        for status, response in old_op.get("responses", {}).items():
            if not str(status).startswith("2"):
                continue
            if status not in new_op.get("responses", {}):
                report.breaking.append(f"{label}: success response {status} removed")
                continue
            old_schema = _json_schema(response, ro)
            new_schema = _json_schema(new_op["responses"][status], rn)
            if old_schema is not None and new_schema is not None:
                _compare_schemas(old_schema, new_schema, f"{label} {status}", "response", ro, rn, report)
    old_codes, new_codes = _error_codes(old), _error_codes(new)
    for code in sorted(old_codes):
        if code not in new_codes:
            report.breaking.append(f"error code {code}: removed")
        elif old_codes[code] != new_codes[code]:
            report.breaking.append(f"error code {code}: status changed from {old_codes[code]} to {new_codes[code]}")
    for code in sorted(set(new_codes) - set(old_codes)):
        report.non_breaking.append(f"error code {code}: added")
    return report


def _major(version: str) -> int | None:
    """Returns the major number of a semantic version (`2` for `2.0.0-rc.1`), or None if it has none."""
    match = re.match(r"^(\d+)\.\d+\.\d+", version.strip())
    return int(match.group(1)) if match else None


def release_problems(released: dict[str, Any], current: dict[str, Any], changelog: str) -> list[str]:
    """Returns why `current` may not follow the `released` contract; an empty list means it may.

    A breaking change (`diff`) needs a new major version (seed 001: breaking changes only in a new
    major version): `info.version`'s major number above the released one, whatever the minor
    says, and a `## <version>` entry in `changelog`. Without a breaking change nothing is asked.
    """
    breaking = diff(released, current).breaking
    if not breaking:
        return []
    old, new = str(released["info"]["version"]), str(current["info"]["version"])
    old_major, new_major = _major(old), _major(new)
    problems = []
    if old_major is None or new_major is None:
        problems.append(f"info.version {new!r} or the released {old!r} is not a semantic version")
    elif new_major <= old_major:
        problems.append(
            f"{len(breaking)} breaking change(s) against the released {old} need a new major "
            f"version, and info.version is {new}:\n  " + "\n  ".join(breaking)
        )
    if not re.search(rf"^## {re.escape(new)}(\s|$)", changelog, re.M):
        problems.append(f"CHANGELOG.md has no '## {new}' entry, and {new} breaks the released contract")
    return problems
