"""Peewee models and their queries. Tenant scoping is built into the base model."""

from models import accounts, mfa
from models.access import Permission, Policy, Role, UserRole
from models.api_key import ApiKey
from models.audit import AuditEntry
from models.base import TenantScopedModel, database
from models.event import Event, EventHead
from models.idempotency import IdempotencyRecord
from models.integration import IntegrationEvent, IntegrationProvider
from models.job import Job, JobAttempt
from models.session import RefreshToken, Session
from models.tenant import Domain, Tenant
from models.user import User
from models.webhook import WebhookAttempt, WebhookDelivery, WebhookEndpoint

__all__ = [
    "ApiKey",
    "AuditEntry",
    "Domain",
    "Event",
    "EventHead",
    "IdempotencyRecord",
    "IntegrationEvent",
    "IntegrationProvider",
    "Job",
    "JobAttempt",
    "Permission",
    "Policy",
    "RefreshToken",
    "Role",
    "Session",
    "Tenant",
    "TenantScopedModel",
    "User",
    "UserRole",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "accounts",
    "database",
    "mfa",
]
