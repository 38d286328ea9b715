"""The host's registries, in process: what a plug-in registers is what the core uses (no server)."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from models.base import TenantScopedModel
from services import register_all
from services.webhooks import _own_endpoint, fan_out
from tenantry import events, settings
from tenantry.authz import loader_for
from tenantry.host import Host
from tenantry.settings import Settings, SettingsError


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("TENANTRY_ENV", "TENANTRY_SECRET_KEY", "DATABASE_URL", "TENANTRY_INBOUND_TOLERANCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TENANTRY_INSTANCE_PATH", str(tmp_path))
    return tmp_path


def _event(event_type: str, changed: dict) -> SimpleNamespace:
    return SimpleNamespace(type=event_type, data={"object": changed})


def test_an_endpoint_is_not_told_of_its_own_failure():
    """The fan-out leaves out the endpoint a webhook.disabled or webhook.delivery_failed is about."""
    assert _own_endpoint(_event("webhook.disabled", {"id": "we_1", "url": "https://x.example"})) == "we_1"
    assert _own_endpoint(_event("webhook.delivery_failed", {"id": "msg_1", "endpoint_id": "we_2"})) == "we_2"
    assert _own_endpoint(_event("webhook.updated", {"id": "we_3"})) is None
    assert _own_endpoint(_event("user.created", {"id": "usr_1"})) is None


def test_registering_the_domains_again_adds_nothing():
    """create_app may run several times in a process: each subscriber and section is registered once."""
    register_all(Host())
    subscribers, sections = list(events._subscribers), list(settings._sections)
    register_all(Host())
    assert events._subscribers == subscribers and settings._sections == sections
    assert ("*", fan_out) in events._subscribers


def test_a_registered_section_is_read_and_checked_with_the_settings(clean_env, monkeypatch):
    """A plug-in's section is part of Settings.from_env: its values, and its errors at start."""
    register_all(Host())
    from services.integrations import IntegrationSettings

    assert Settings.from_env().section(IntegrationSettings).inbound_tolerance == 300
    monkeypatch.setenv("TENANTRY_INBOUND_TOLERANCE", "60")
    assert Settings.from_env().section(IntegrationSettings).inbound_tolerance == 60
    monkeypatch.setenv("TENANTRY_INBOUND_TOLERANCE", "soon")
    with pytest.raises(SettingsError, match="TENANTRY_INBOUND_TOLERANCE must be an integer"):
        Settings.from_env()


def test_a_section_registered_after_the_settings_were_made_is_read_when_completed(clean_env, monkeypatch):
    @dataclass(frozen=True)
    class Late:
        size: int

        @classmethod
        def from_env(cls) -> Late:
            return cls(settings.int_setting("TENANTRY_TEST_LATE_SIZE", 3))

    made = Settings.from_env()
    settings.register_section(Late)
    try:
        monkeypatch.setenv("TENANTRY_TEST_LATE_SIZE", "7")
        assert made.with_sections().section(Late) == Late(7)
        monkeypatch.setenv("TENANTRY_TEST_LATE_SIZE", "0")
        with pytest.raises(SettingsError, match="TENANTRY_TEST_LATE_SIZE must be at least 1"):
            made.with_sections()
    finally:
        settings._sections.remove(Late)


def test_the_enforcement_point_loads_targets_by_the_model_registry():
    """Each targeted resource is found by its model's `api_resource`; no list names the domain tables."""
    register_all(Host())
    for resource in ("user", "key", "role", "policy", "event", "webhook", "integration"):
        assert resource in TenantScopedModel.registry
        assert loader_for(resource) is not None
    assert loader_for("tenant") is not None and loader_for("domain") is not None
    assert loader_for("usage") is None


def test_the_webhooks_section_is_read_and_checked_with_the_settings(monkeypatch):
    """The webhook settings are the plug-in's section: same variables, same messages, checked at start."""
    from services import register_all
    from services.webhooks.settings import WebhookSettings
    from tenantry.host import Host
    from tenantry.settings import Settings, SettingsError

    register_all(Host())
    monkeypatch.setenv("TENANTRY_WEBHOOK_RETRY_SCHEDULE", "1,2,3")
    monkeypatch.setenv("TENANTRY_WEBHOOK_TIMEOUT", "5")
    monkeypatch.setenv("TENANTRY_WEBHOOK_LEASE", "7")
    section = Settings.from_env().section(WebhookSettings)
    assert (section.retry_schedule, section.timeout, section.lease) == ((1, 2, 3), 5, 7)
    monkeypatch.setenv("TENANTRY_WEBHOOK_LEASE", "6")
    with pytest.raises(SettingsError, match="TENANTRY_WEBHOOK_LEASE must exceed TENANTRY_WEBHOOK_TIMEOUT"):
        Settings.from_env()
    monkeypatch.setenv("TENANTRY_WEBHOOK_LEASE", "60")
    monkeypatch.setenv("TENANTRY_WEBHOOK_RETRY_SCHEDULE", "5,soon")
    with pytest.raises(SettingsError, match="TENANTRY_WEBHOOK_RETRY_SCHEDULE must be seconds"):
        Settings.from_env()
