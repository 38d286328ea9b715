"""Meta: the bundled OpenAPI document this server routes by."""

from __future__ import annotations

from flask import Response, current_app


def get_openapi_json() -> Response:
    """The bundled spec as JSON."""
    spec = current_app.extensions["tenantry"].spec_json
    return Response(spec, status=200, content_type="application/json")


def get_openapi_yaml() -> Response:
    """The bundled spec as YAML."""
    spec = current_app.extensions["tenantry"].spec_yaml
    return Response(spec, status=200, content_type="application/yaml")
