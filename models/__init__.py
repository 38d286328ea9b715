"""Peewee models and their queries. Tenant scoping is built into the base model."""

from models import accounts, mfa
from models.api_key import ApiKey
from models.base import TenantScopedModel, database
from models.session import RefreshToken, Session
from models.tenant import Domain, Tenant
from models.user import User

__all__ = [
    "ApiKey", "Domain", "RefreshToken", "Session", "Tenant", "TenantScopedModel", "User", "accounts", "database", "mfa",
]
