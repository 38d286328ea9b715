"""Tenantry: the framework core of a spec-first multi-tenant API (app factory, settings, CLI)."""

import warnings

# Connexion imports starlette.testclient at import time, which warns about httpx on every start;
# Tenantry never uses that test client.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
