"""Peewee models and their queries. Tenant scoping is built into the base model."""

from models import accounts, mfa
from models.access import Permission, Policy, Role, UserRole
from models.api_key import ApiKey
from models.base import TenantScopedModel, database
from models.session import RefreshToken, Session
from models.tenant import Domain, Tenant
from models.user import User

__all__ = [
    "ApiKey", "Domain", "Permission", "Policy", "RefreshToken", "Role", "Session", "Tenant", "TenantScopedModel",
    "User", "UserRole", "accounts", "database", "mfa",
]
