"""The ASGI entry point uvicorn imports in every worker process."""

from __future__ import annotations

import gc

import connexion

from tenantry.app import create_app


def application() -> connexion.FlaskApp:
    """Returns the app built from the environment, with start-up objects frozen out of the GC.

    `gc.freeze()` moves everything allocated while building the app (the spec, the routes, the
    middleware stack, which create_app builds eagerly) out of the collector's view, which cut p99
    latency most in measurements (see CONNEXION3.md): a full collection of the unfrozen app
    takes about 50 ms here.
    """
    app = create_app()
    gc.collect()
    gc.freeze()
    return app
