"""Settings: no default secrets, a kept instance secret, strict parsing."""

from __future__ import annotations

import stat

import pytest

from tenantry.settings import Settings, SettingsError


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("TENANTRY_SECRET_KEY", "DATABASE_URL", "TENANTRY_ENV", "TENANTRY_SELF_SIGNUP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TENANTRY_INSTANCE_PATH", str(tmp_path))
    return tmp_path


def test_production_refuses_to_start_without_a_secret(clean_env, monkeypatch):
    monkeypatch.setenv("TENANTRY_ENV", "production")
    with pytest.raises(SettingsError, match="TENANTRY_SECRET_KEY"):
        Settings.from_env()


def test_development_generates_and_keeps_a_secret(clean_env):
    first = Settings.from_env()
    path = clean_env / "secret_key"
    assert len(first.secret_key) >= 48 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Settings.from_env().secret_key == first.secret_key
    assert first.database_url == f"sqlite:///{clean_env / 'tenantry.db'}"


def test_short_secret_and_bad_booleans_are_refused(clean_env, monkeypatch):
    monkeypatch.setenv("TENANTRY_SECRET_KEY", "short")
    with pytest.raises(SettingsError, match="at least 32"):
        Settings.from_env()
    monkeypatch.setenv("TENANTRY_SECRET_KEY", "k" * 40)
    monkeypatch.setenv("TENANTRY_SELF_SIGNUP", "maybe")
    with pytest.raises(SettingsError, match="TENANTRY_SELF_SIGNUP"):
        Settings.from_env()


def test_time_limits_are_positive_seconds_per_class(clean_env, monkeypatch):
    defaults = Settings.from_env()
    assert (defaults.timeout("standard"), defaults.timeout("batch"), defaults.timeout("upload")) == (30, 120, 300)
    monkeypatch.setenv("TENANTRY_BATCH_TIMEOUT", "0.5")
    assert Settings.from_env().timeout("batch") == 0.5
    for bad in ("0", "-1", "soon", "inf", "nan"):
        monkeypatch.setenv("TENANTRY_REQUEST_TIMEOUT", bad)
        with pytest.raises(SettingsError, match="TENANTRY_REQUEST_TIMEOUT"):
            Settings.from_env()


def test_public_url_is_an_absolute_http_url(clean_env, monkeypatch):
    assert Settings.from_env().public_url == ""
    monkeypatch.setenv("TENANTRY_PUBLIC_URL", "https://api.example.com/")
    assert Settings.from_env().public_url == "https://api.example.com"
    monkeypatch.setenv("TENANTRY_PUBLIC_URL", "http://gateway.internal:8443/tenantry")
    assert Settings.from_env().public_url == "http://gateway.internal:8443/tenantry"
    for bad in (
        "api.example.com",
        "/v1",
        "ftp://api.example.com",
        "https://",
        "https://api.example.com?x=1",
        "https://api.example.com/#top",
        "https://user:pw@api.example.com",
        "https://api.example.com:99999",
        "https://api example.com",
        "javascript:alert(1)",
    ):
        monkeypatch.setenv("TENANTRY_PUBLIC_URL", bad)
        with pytest.raises(SettingsError, match="TENANTRY_PUBLIC_URL"):
            Settings.from_env()


def test_purge_retention_is_a_duration_and_zero_keeps_forever(clean_env, monkeypatch):
    defaults = Settings.from_env()
    assert (defaults.audit_retention, defaults.event_retention) == (0, 0)  # nothing is purged unless asked
    monkeypatch.setenv("TENANTRY_AUDIT_RETENTION", "365d")
    monkeypatch.setenv("TENANTRY_EVENT_RETENTION", "3600")
    assert (Settings.from_env().audit_retention, Settings.from_env().event_retention) == (365 * 86_400, 3600)
    for bad in ("-1", "1y", "soon", "d"):
        monkeypatch.setenv("TENANTRY_EVENT_RETENTION", bad)
        with pytest.raises(SettingsError, match="TENANTRY_EVENT_RETENTION"):
            Settings.from_env()


def test_the_worker_polls_every_half_second_on_sqlite_and_every_second_on_postgresql(clean_env, monkeypatch):
    # SQLite without Redis has no wake-up: the poll interval is its enqueue-to-start latency.
    monkeypatch.delenv("TENANTRY_WORKER_POLL_INTERVAL", raising=False)
    assert Settings.from_env().worker_poll_interval == 0.5
    monkeypatch.setenv("DATABASE_URL", "postgresql://tenantry@127.0.0.1:5432/tenantry")
    assert Settings.from_env().worker_poll_interval == 1.0
    monkeypatch.setenv("TENANTRY_WORKER_POLL_INTERVAL", "2")
    assert Settings.from_env().worker_poll_interval == 2.0
