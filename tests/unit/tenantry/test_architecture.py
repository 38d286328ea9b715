"""The layering rule of ARCHITECTURE.md, enforced: no import cycles, and no import against the layers.

Every module of tenantry/, models/, policies/, handlers/ and services/ is parsed (never imported),
and every `import` in it counts, at module level or inside a function: a function-local import
hides a cycle from Python until the function runs, not from this test.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("tenantry", "models", "policies", "handlers", "services")

#: L0 kernel: core modules that import no project module but each other (stdlib and third-party only).
KERNEL = {
    "tenantry",
    "tenantry.aliases",
    "tenantry.counters",
    "tenantry.crypto",
    "tenantry.deadline",
    "tenantry.docs",
    "tenantry.envelope",
    "tenantry.errors",
    "tenantry.formats",
    "tenantry.ids",
    "tenantry.logs",
    "tenantry.metrics",
    "tenantry.net",
    "tenantry.outbound",
    "tenantry.paging",
    "tenantry.security",
    "tenantry.settings",
    "tenantry.spec",
    "tenantry.specdiff",
    "tenantry.times",
    "tenantry.validation",
}
#: The database set-up belongs to the data layer: it initialises the proxy models.base declares,
#: and models and migrations use its helpers (row-level security, the claim holder).
DATA_INFRASTRUCTURE = {"tenantry.db"}
#: L5 wiring: the only core modules that may import services (to call each domain's register(host)).
WIRING = {"tenantry.app", "tenantry.asgi", "tenantry.cli"}
#: Tables of a domain plug-in: the core (L2) never imports them; their services and handlers do.
DOMAIN_TABLES = {"models.webhook", "models.integration"}

#: Imports that break the rule today, each with its reason. Goal: empty.
BASELINE: dict[tuple[str, str], str] = {}


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Returns the project modules `name` imports, anywhere in it.

    `from pkg import sub` counts as importing `pkg.sub` when that is a module, else `pkg` (a
    package's facade, such as `from models import User`).
    """
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def known(candidate: str) -> str | None:
        while candidate and candidate not in modules:
            candidate = candidate.rpartition(".")[0]
        return candidate or None

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            for alias in node.names:
                full = f"{source}.{alias.name}"
                targets.append(full if full in modules else source)
        for target in targets:
            resolved = known(target)
            if resolved is not None and resolved != name:
                found.add(resolved)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Returns the strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _top(name: str) -> str:
    return name.partition(".")[0]


def _domain(name: str) -> str | None:
    """Returns the domain of a services module (`services.webhooks.delivery` is `webhooks`)."""
    parts = name.split(".")
    return parts[1] if parts[0] == "services" and len(parts) > 1 else None


def _violation(source: str, target: str) -> str | None:
    """Returns why `source` may not import `target` under the rule, or None when it may."""
    layer, to = _top(source), _top(target)
    if source in KERNEL:
        return None if target in KERNEL else "the kernel (L0) imports only the kernel"
    if layer == "policies":
        return None if to == "policies" else "policies (L1) import nothing of the project"
    if source.startswith("models.migrations"):
        if target in KERNEL or target in DATA_INFRASTRUCTURE or to == "models":
            return None
        return "migrations import only the kernel, tenantry.db and models"
    if layer == "models" or source in DATA_INFRASTRUCTURE:
        if not (target in KERNEL or target in DATA_INFRASTRUCTURE or to in ("models", "policies")):
            return "the data layer (L1) imports only the kernel, tenantry.db, models and policies"
        if target in DOMAIN_TABLES and source not in DOMAIN_TABLES and source != "models":
            return "a platform table never imports a domain's table"
        if target == "models" and source != "models":
            return "models import each other by module, not through the package facade"
        return None
    if source in WIRING:
        return "the wiring reaches handlers through the spec, never by import" if to == "handlers" else None
    if layer == "tenantry":
        if to in ("services", "handlers"):
            return "the core (L2) never imports a domain plug-in or a handler"
        if target in DOMAIN_TABLES:
            return "the core (L2) never imports a domain's table"
        if target == "models":
            return "the core imports platform tables by module: the models facade re-exports domain tables"
        return "the core never imports the wiring (L5)" if target in WIRING else None
    if layer == "services":
        if to == "handlers" or target in WIRING:
            return "a domain (L3) imports neither a handler nor the wiring"
        if to == "services" and target != "services" and _domain(target) != _domain(source):
            return "a domain never imports another domain's services: they talk through events and jobs"
        return None
    if layer == "handlers":
        if to == "handlers" and target != "handlers":
            return "a handler never imports another handler"
        return "a handler never imports the wiring (L5)" if target in WIRING else None
    return f"{source} is in no layer"


def test_no_import_cycles():
    """No two modules import each other, directly or round a loop, counting function-local imports."""
    assert _cycles(_graph()) == []


def test_every_import_follows_the_layers():
    """Each import goes down the layers of ARCHITECTURE.md; the baseline lists the exceptions left."""
    found = {}
    for source, targets in _graph().items():
        for target in targets:
            why = _violation(source, target)
            if why is not None:
                found[(source, target)] = why
    unexpected = {edge: why for edge, why in found.items() if edge not in BASELINE}
    assert unexpected == {}
    # An exception that no longer occurs is removed from the baseline, so it cannot come back unseen.
    assert sorted(set(BASELINE) - set(found)) == []


def test_the_rule_catches_what_it_forbids():
    """The checker itself: a cycle and each kind of forbidden import are reported."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _violation("tenantry.errors", "models.base") is not None
    assert _violation("models.event", "models.webhook") is not None
    assert _violation("models.user", "tenantry.authz") is not None
    assert _violation("models.event", "models") is not None
    assert _violation("policies.roles", "tenantry.errors") is not None
    assert _violation("tenantry.events", "models.webhook") is not None
    assert _violation("tenantry.events", "services.webhooks") is not None
    assert _violation("tenantry.authz", "models") is not None
    assert _violation("services.webhooks", "services.integrations.receive") is not None
    assert _violation("handlers.users", "handlers.auth") is not None
    assert _violation("tenantry.app", "services") is None
    assert _violation("handlers.webhooks", "services.webhooks") is None
    assert _violation("services.integrations.receive", "services.integrations.users") is None
    assert _violation("models.webhook", "models.event") is None
