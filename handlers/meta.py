"""Meta: the published OpenAPI document (tenantry.spec.published)."""

from __future__ import annotations

from flask import Response, current_app, request

YAML_TYPES = ("application/yaml", "text/yaml")


def get_openapi_json() -> Response:
    """The published spec as JSON."""
    spec = current_app.extensions["tenantry"].spec_json
    return Response(spec, status=200, content_type="application/json")


def get_openapi_yaml() -> Response:
    """The published spec as YAML: `application/yaml`, or `text/yaml` to a client asking for only that."""
    spec = current_app.extensions["tenantry"].spec_yaml
    chosen = request.accept_mimetypes.best_match(YAML_TYPES, default=YAML_TYPES[0]) or YAML_TYPES[0]
    return Response(spec, status=200, content_type=chosen)
