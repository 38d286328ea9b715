"""Roles, role assignments, tenant permissions and ABAC policies, and the version that caches key on.

Every change here bumps the tenant's `authz_version` in the same transaction, so each server
process sees at its next request of that tenant (which loads the tenant row anyway) that its cached
grants and compiled policies are stale.
"""

from __future__ import annotations

from typing import Any

from peewee import BooleanField, Case, CharField, IntegrityError

from models.base import JSONField, OrderedJSONField, TenantScopedModel, UTCDateTimeField, database, utcnow
from models.tenant import Tenant
from policies import BUILTIN_ROLES
from tenantry.errors import Conflict, Detail
from tenantry.ids import new_id
from tenantry.times import format_datetime

BUILTIN_ROLE_ORDER = ("owner", "admin", "member")


def bump_version(tenant_id: str) -> None:
    """Marks the tenant's roles and policies as changed, for every process's cache."""
    Tenant.update(authz_version=Tenant.authz_version + 1).where(Tenant.id == tenant_id).execute()


class Permission(TenantScopedModel):
    """A permission a tenant defined for its own domain (`booking:cancel`)."""

    label = "permission"

    id = CharField(primary_key=True, max_length=30)
    tenant_id = CharField(max_length=30)
    name = CharField(max_length=101)
    resource = CharField(max_length=50)
    action = CharField(max_length=50)
    description = CharField(max_length=500, null=True)
    created_at = UTCDateTimeField(default=utcnow)

    class Meta:
        table_name = "permission"

    @classmethod
    def add(cls, tenant_id: str, name: str, description: str | None) -> Permission:
        """Creates the permission; Conflict when the tenant has it already."""
        resource, _, action = name.partition(":")
        row = cls(
            id=new_id("prm"), tenant_id=tenant_id, name=name, resource=resource, action=action, description=description
        )
        taken = Conflict("The tenant has this permission already.", [Detail("is already taken", "name")])
        try:
            with database.atomic():
                if cls.for_tenant(tenant_id).where(cls.name == name).exists():
                    raise taken
                row.save(force_insert=True)
                bump_version(tenant_id)
        except IntegrityError:
            raise taken from None  # a concurrent request added the same name
        return row

    def delete_checked(self) -> None:
        """Deletes the permission; Conflict naming the roles and policies that still use it."""
        with database.atomic():
            roles = [r.name for r in Role.for_tenant(self.tenant_id) if self.name in (r.permissions or [])]
            policies = [
                p.name
                for p in Policy.for_tenant(self.tenant_id).where(
                    Policy.resource == self.resource, Policy.action == self.action
                )
            ]
            if roles or policies:
                users = ", ".join([*(f"role {n}" for n in roles), *(f"policy {n}" for n in policies)])
                raise Conflict(f"The permission is still used by {users}.")
            self.delete_instance()
            bump_version(self.tenant_id)

    def as_dict(self) -> dict[str, Any]:
        """Returns the permission as the API shows it."""
        return {
            "name": self.name,
            "resource": self.resource,
            "action": self.action,
            "description": self.description,
            "is_builtin": False,
            "created_at": format_datetime(self.created_at),
        }


class Role(TenantScopedModel):
    """A named set of permissions in a tenant; the built-in ones are seeded with every tenant."""

    label = "role"
    api_resource = "role"

    id = CharField(primary_key=True, max_length=30)
    tenant_id = CharField(max_length=30)
    name = CharField(max_length=64)
    name_normalized = CharField(max_length=64)
    role_family = CharField(max_length=20)
    description = CharField(max_length=500, null=True)
    permissions = JSONField(default=list)  # empty for built-in roles: theirs come from policies.roles
    is_builtin = BooleanField(default=False)
    created_at = UTCDateTimeField(default=utcnow)
    updated_at = UTCDateTimeField(default=utcnow)

    class Meta:
        table_name = "role"

    @classmethod
    def seed_builtin(cls, tenant_id: str) -> None:
        """Creates the tenant's built-in roles (owner, admin, member), if missing."""
        have = {r.name for r in cls.for_tenant(tenant_id).where(cls.is_builtin == True)}  # noqa: E712
        for name in BUILTIN_ROLE_ORDER:
            if name not in have:
                cls.create(
                    id=new_id("rol"),
                    tenant_id=tenant_id,
                    name=name,
                    name_normalized=name,
                    role_family="Internal",
                    description=BUILTIN_DESCRIPTIONS[name],
                    permissions=[],
                    is_builtin=True,
                )

    @classmethod
    def search(cls, tenant_id: str, role_family: str | None = None) -> Any:
        """Returns the tenant's roles, built-in ones first, then oldest first."""
        query = cls.for_tenant(tenant_id)
        if role_family:
            query = query.where(cls.role_family == role_family)
        builtin_first = Case(
            None,
            [(cls.is_builtin & (cls.name == n), i) for i, n in enumerate(BUILTIN_ROLE_ORDER)],
            len(BUILTIN_ROLE_ORDER),
        )
        return query.order_by(builtin_first, cls.id)

    @classmethod
    def define(
        cls, tenant_id: str, name: str, role_family: str, description: str | None, permissions: list[str]
    ) -> Role:
        """Creates a role of the tenant's own; Conflict when the name is taken."""
        role = cls(
            id=new_id("rol"),
            tenant_id=tenant_id,
            name=name,
            name_normalized=name.casefold(),
            role_family=role_family,
            description=description,
            permissions=permissions,
            is_builtin=False,
        )
        role._save_checked(force_insert=True)
        return role

    def change(self, fields: dict[str, Any]) -> None:
        """Applies the fields given (name, role_family, description, permissions) and saves."""
        self._require_custom()
        for name in ("name", "role_family", "description", "permissions"):
            if name in fields:
                setattr(self, name, fields[name])
        self.name_normalized = self.name.casefold()
        self.updated_at = utcnow()
        self._save_checked()

    def delete_checked(self) -> None:
        """Deletes the role and every assignment of it, in one transaction."""
        self._require_custom()
        with database.atomic():
            UserRole.delete().where(UserRole.tenant_id == self.tenant_id, UserRole.role_id == self.id).execute()
            self.delete_instance()
            bump_version(self.tenant_id)

    def _require_custom(self) -> None:
        if self.is_builtin:
            raise Conflict(f"The built-in role {self.name} cannot be changed or deleted.")

    def _save_checked(self, force_insert: bool = False) -> None:
        taken = Conflict("The tenant has a role with this name already.", [Detail("is already taken", "name")])
        try:
            with database.atomic():
                clash = self.for_tenant(self.tenant_id).where(
                    Role.name_normalized == self.name_normalized, Role.id != self.id
                )
                if clash.exists():
                    raise taken
                self.save(force_insert=force_insert)
                bump_version(self.tenant_id)
        except IntegrityError:
            raise taken from None

    @property
    def granted(self) -> list[str]:
        """The permissions the role grants (a built-in role's come from the code)."""
        return sorted(BUILTIN_ROLES[self.name]) if self.is_builtin else list(self.permissions or [])

    def as_dict(self) -> dict[str, Any]:
        """Returns the role as the API shows it."""
        return {
            "id": self.id,
            "name": self.name,
            "role_family": self.role_family,
            "description": self.description,
            "permissions": self.granted,
            "is_builtin": self.is_builtin,
            "created_at": format_datetime(self.created_at),
            "updated_at": format_datetime(self.updated_at),
        }


BUILTIN_DESCRIPTIONS = {
    "owner": "Can do everything in the tenant, including managing owners.",
    "admin": "Can do everything in the tenant except manage owners.",
    "member": "Can read the tenant's directory of users.",
}


class UserRole(TenantScopedModel):
    """One of the tenant's own roles held by one of its users."""

    label = "role assignment"

    id = CharField(primary_key=True, max_length=30)
    tenant_id = CharField(max_length=30)
    user_id = CharField(max_length=30)
    role_id = CharField(max_length=30)
    created_at = UTCDateTimeField(default=utcnow)

    class Meta:
        table_name = "user_role"

    @classmethod
    def assign(cls, tenant_id: str, user_id: str, role_id: str) -> None:
        """Gives the user the role; nothing changes when they hold it already."""
        try:
            with database.atomic():
                if cls.for_tenant(tenant_id).where(cls.user_id == user_id, cls.role_id == role_id).exists():
                    return
                cls.create(id=new_id("ura"), tenant_id=tenant_id, user_id=user_id, role_id=role_id)
                bump_version(tenant_id)
        except IntegrityError:
            return  # a concurrent request gave the same role: the outcome is the same

    @classmethod
    def unassign(cls, tenant_id: str, user_id: str, role_id: str) -> None:
        """Takes the role from the user; nothing changes when they do not hold it."""
        with database.atomic():
            removed = (
                cls.delete().where(cls.tenant_id == tenant_id, cls.user_id == user_id, cls.role_id == role_id).execute()
            )
            if removed:
                bump_version(tenant_id)

    @classmethod
    def remove_user(cls, tenant_id: str | None, user_id: str) -> None:
        """Removes every assignment of a user being deleted (inside the caller's transaction)."""
        cls.delete().where(cls.tenant_id == tenant_id, cls.user_id == user_id).execute()


class Policy(TenantScopedModel):
    """An attribute-based rule on one permission; its conditions are kept as written and compiled on load."""

    label = "policy"
    api_resource = "policy"

    id = CharField(primary_key=True, max_length=30)
    tenant_id = CharField(max_length=30)
    name = CharField(max_length=100)
    name_normalized = CharField(max_length=100)
    description = CharField(max_length=500, null=True)
    resource = CharField(max_length=50)
    action = CharField(max_length=50)
    effect = CharField(max_length=8)
    conditions = OrderedJSONField(default=list)
    is_enabled = BooleanField(default=True)
    created_at = UTCDateTimeField(default=utcnow)
    updated_at = UTCDateTimeField(default=utcnow)

    class Meta:
        table_name = "policy"

    @classmethod
    def search(cls, tenant_id: str, is_enabled: bool | None = None, resource: str | None = None) -> Any:
        """Returns the tenant's policies, oldest first, filtered."""
        query = cls.for_tenant(tenant_id)
        if is_enabled is not None:
            query = query.where(cls.is_enabled == is_enabled)
        if resource:
            query = query.where(cls.resource == resource)
        return query.order_by(cls.id)

    @classmethod
    def build(cls, tenant_id: str) -> Policy:
        """Returns an unsaved policy with a fresh id."""
        return cls(id=new_id("pol"), tenant_id=tenant_id)

    def assign(self, fields: dict[str, Any]) -> None:
        """Sets the fields given: name, description, target {resource, action}, rules {effect, conditions},
        is_enabled."""
        if "name" in fields:
            self.name = fields["name"]
            self.name_normalized = fields["name"].casefold()
        if "description" in fields:
            self.description = fields["description"]
        if "target" in fields:
            self.resource, self.action = fields["target"]["resource"], fields["target"]["action"]
        if "rules" in fields:
            self.effect = fields["rules"]["effect"]
            self.conditions = fields["rules"].get("conditions", [])
        if "is_enabled" in fields:
            self.is_enabled = fields["is_enabled"]

    def save_checked(self, created: bool = False) -> None:
        """Saves the policy; Conflict when the tenant has another policy with this name."""
        taken = Conflict("The tenant has a policy with this name already.", [Detail("is already taken", "name")])
        self.updated_at = utcnow()
        try:
            with database.atomic():
                clash = Policy.for_tenant(self.tenant_id).where(
                    Policy.name_normalized == self.name_normalized, Policy.id != self.id
                )
                if clash.exists():
                    raise taken
                self.save(force_insert=created)
                bump_version(self.tenant_id)
        except IntegrityError:
            raise taken from None

    def delete_checked(self) -> None:
        """Deletes the policy."""
        with database.atomic():
            self.delete_instance()
            bump_version(self.tenant_id)

    @property
    def permission(self) -> str:
        """The permission the policy targets."""
        return f"{self.resource}:{self.action}"

    def as_dict(self) -> dict[str, Any]:
        """Returns the policy as the API shows it."""
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "target": {"resource": self.resource, "action": self.action},
            "rules": {"effect": self.effect, "conditions": list(self.conditions or [])},
            "is_enabled": self.is_enabled,
            "created_at": format_datetime(self.created_at),
            "updated_at": format_datetime(self.updated_at),
        }


def load_access_rows(tenant_id: str) -> tuple[list[Role], list[UserRole], list[Permission], list[Policy]]:
    """Returns everything a tenant's access decisions depend on: roles, assignments, permissions, policies."""
    return (
        list(Role.for_tenant(tenant_id)),
        list(UserRole.for_tenant(tenant_id)),
        list(Permission.for_tenant(tenant_id)),
        list(Policy.for_tenant(tenant_id)),
    )
