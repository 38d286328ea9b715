"""The policy evaluator: every allow or deny in Tenantry is decided here.

Pure: no Flask, no database. The core's enforcement point builds a `Subject` from the credential,
a `Resource` from the loaded row (when the operation targets one), and asks `evaluate`.
"""

from policies.conditions import ConditionError, EvaluationError
from policies.evaluator import (
    CompiledPolicy,
    Decision,
    PolicyOutcome,
    Resource,
    Subject,
    can_grant,
    evaluate,
    judge,
    may_allow,
)
from policies.permissions import normalize
from policies.roles import BUILTIN_ROLES, OPERATOR_PERMISSIONS, ROLE_RANK, expand_scopes, permissions_for

__all__ = [
    "BUILTIN_ROLES",
    "OPERATOR_PERMISSIONS",
    "ROLE_RANK",
    "CompiledPolicy",
    "ConditionError",
    "Decision",
    "EvaluationError",
    "PolicyOutcome",
    "Resource",
    "Subject",
    "can_grant",
    "evaluate",
    "expand_scopes",
    "judge",
    "may_allow",
    "normalize",
    "permissions_for",
]
