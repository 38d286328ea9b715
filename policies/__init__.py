"""The policy evaluator: every allow or deny in Tenantry is decided here.

Pure: no Flask, no database. The core's enforcement point builds a `Subject` from the credential,
a `Resource` from the loaded row (when the operation targets one), and asks `evaluate`.
"""

from policies.evaluator import Decision, Resource, Subject, evaluate
from policies.roles import BUILTIN_ROLES, OPERATOR_PERMISSIONS, ROLE_RANK, permissions_for

__all__ = [
    "BUILTIN_ROLES",
    "OPERATOR_PERMISSIONS",
    "ROLE_RANK",
    "Decision",
    "Resource",
    "Subject",
    "evaluate",
    "permissions_for",
]
