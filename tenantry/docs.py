"""Swagger UI at /docs, served from the installed swagger-ui-bundle package with no CDN.

Connexion's own Swagger UI middleware runs a router on every request; measured here it cost
about a sixth of a bare request's throughput. This app is reached only for paths under /docs
(one prefix test in the outer middleware), and its page's one inline script and style are
allowed by hash in its Content-Security-Policy, nothing more.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import jinja2
import swagger_ui_bundle
from starlette.responses import HTMLResponse, RedirectResponse
from starlette.routing import Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send


class DocsApp:
    """An ASGI app serving the Swagger UI page for `spec_url` under `prefix`, and its assets."""

    def __init__(self, prefix: str, spec_url: str) -> None:
        self.prefix = prefix
        assets = Path(swagger_ui_bundle.swagger_ui_path)
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(assets)), autoescape=True)
        self.html = env.get_template("index.j2").render(openapi_spec_url=spec_url)
        self.csp = _csp_for(self.html)
        page = HTMLResponse(self.html)

        async def index(_request: object) -> HTMLResponse:
            return page

        async def redirect(_request: object) -> RedirectResponse:
            return RedirectResponse(f"{prefix}/")

        self.router = Router(
            routes=[
                Route(prefix, redirect, methods=["GET", "HEAD"]),
                Route(f"{prefix}/", index, methods=["GET", "HEAD"]),
                Route(f"{prefix}/index.html", index, methods=["GET", "HEAD"]),
                Mount(prefix, app=StaticFiles(directory=str(assets))),
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serves one request under the docs prefix."""
        await self.router(scope, receive, send)


def _csp_for(html: str) -> str:
    """Returns a CSP that permits exactly the page's inline script and style, by hash."""

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
        digests = [base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() for b in blocks]
        return " ".join(f"'sha256-{d}'" for d in digests)

    return (
        f"default-src 'none'; script-src 'self' {hashes('script')}; style-src 'self' {hashes('style')}; "
        "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
