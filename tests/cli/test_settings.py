"""Settings: trimmed tokens, token files, durations in seconds, options for every setting."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from receiver.cli import _settings_from, build_parser, serve_options
from receiver.errors import ConfigError
from receiver.settings import Settings, describe_errors, env_name, is_secret


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith(("RECEIVER_", "SLACK_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("RECEIVER_WEBHOOK_TOKEN", "t")


@pytest.mark.parametrize("raw", ["s3cret\n", " s3cret ", "\ts3cret\r\n"])
def test_tokens_are_trimmed_at_load(monkeypatch, raw):
    monkeypatch.setenv("RECEIVER_WEBHOOK_TOKEN", raw)
    monkeypatch.setenv("RECEIVER_ADMIN_TOKEN", raw)
    monkeypatch.setenv("SLACK_BOT_TOKEN", raw)
    settings = Settings()
    assert settings.webhook_token.get_secret_value() == "s3cret"
    assert settings.admin_token is not None and settings.admin_token.get_secret_value() == "s3cret"
    assert settings.slack_bot_token is not None
    assert settings.slack_bot_token.get_secret_value() == "s3cret"


def test_a_blank_webhook_token_is_refused_and_a_blank_admin_token_is_unset(monkeypatch):
    monkeypatch.setenv("RECEIVER_ADMIN_TOKEN", " \n")
    assert Settings().admin_token is None
    monkeypatch.setenv("RECEIVER_WEBHOOK_TOKEN", "\n")
    with pytest.raises(ValidationError) as e:
        Settings()
    assert describe_errors(e.value) == [
        "setting webhook_token (RECEIVER_WEBHOOK_TOKEN or RECEIVER_WEBHOOK_TOKEN_FILE):"
        " RECEIVER_WEBHOOK_TOKEN is empty: set it to the token Alertmanager sends"
    ]


def test_tokens_may_come_from_files(monkeypatch, tmp_path: Path):
    webhook, admin = tmp_path / "webhook", tmp_path / "admin"
    webhook.write_text("from-a-secret\n")
    admin.write_text("admin-secret\n")
    monkeypatch.delenv("RECEIVER_WEBHOOK_TOKEN")
    monkeypatch.setenv("RECEIVER_WEBHOOK_TOKEN_FILE", str(webhook))
    monkeypatch.setenv("RECEIVER_ADMIN_TOKEN_FILE", str(admin))
    settings = Settings()
    assert settings.webhook_token.get_secret_value() == "from-a-secret"
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "admin-secret"


def test_a_token_file_that_cannot_be_read_is_named(monkeypatch, tmp_path: Path):
    monkeypatch.delenv("RECEIVER_WEBHOOK_TOKEN")
    monkeypatch.setenv("RECEIVER_WEBHOOK_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError) as e:
        Settings()
    assert "RECEIVER_WEBHOOK_TOKEN_FILE" in str(e.value) and "missing" in str(e.value)


def test_a_token_set_twice_is_refused(monkeypatch, tmp_path: Path):
    token = tmp_path / "token"
    token.write_text("x")
    monkeypatch.setenv("RECEIVER_WEBHOOK_TOKEN_FILE", str(token))
    with pytest.raises(ConfigError) as e:
        Settings()
    assert "RECEIVER_WEBHOOK_TOKEN and RECEIVER_WEBHOOK_TOKEN_FILE" in str(e.value)


@pytest.mark.parametrize(
    ("variable", "value", "field", "seconds"),
    [
        ("RECEIVER_JOB_LEASE", "45", "job_lease_seconds", 45.0),
        ("RECEIVER_JOB_LEASE", "2.5", "job_lease_seconds", 2.5),
        ("RECEIVER_JOB_LEASE", "1m", "job_lease_seconds", 60.0),
        ("RECEIVER_DEDUP_TTL", "600", "dedup_ttl_seconds", 600.0),
        ("RECEIVER_AUDIT_RETENTION", "7d", "audit_retention_seconds", 7 * 86400.0),
    ],
)
def test_a_duration_is_prometheus_syntax_or_seconds(monkeypatch, variable, value, field, seconds):
    monkeypatch.setenv(variable, value)
    assert getattr(Settings(), field) == seconds


@pytest.mark.parametrize(
    ("variable", "value", "needle"),
    [
        ("RECEIVER_DEDUP_TTL", "ten minutes", "invalid duration 'ten minutes'"),
        ("RECEIVER_JOB_LEASE", "-5", "invalid duration '-5'"),
        ("RECEIVER_JOB_LEASE", "0", "greater than 0"),
        ("RECEIVER_PORT", "http", "valid integer"),
    ],
)
def test_errors_name_the_variable_once(monkeypatch, variable, value, needle):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as e:
        Settings()
    (line,) = describe_errors(e.value)
    assert f"({variable})" in line and needle in line
    assert "RECEIVER_RECEIVER" not in line


def test_every_setting_but_the_secrets_is_a_serve_option(capsys):
    options = {field: flag for flag, field, _ in serve_options()}
    for name, field in Settings.model_fields.items():
        assert (name in options) != is_secret(field), name
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    usage = capsys.readouterr().out
    for flag in options.values():
        assert flag in usage
    assert options["dedup_ttl_seconds"] == "--dedup-ttl"
    assert env_name("dedup_ttl_seconds") == "RECEIVER_DEDUP_TTL"
    assert env_name("slack_bot_token") == "SLACK_BOT_TOKEN"
    assert env_name("port") == "RECEIVER_PORT"


def test_serve_options_reach_the_settings_and_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("RECEIVER_PORT", "9999")
    args = build_parser().parse_args(
        [
            "serve",
            "--port",
            "8181",
            "--job-lease",
            "45",
            "--dedup-ttl",
            "5m",
            "--worker-count",
            "3",
            "--slack-allowed-users",
            "U1, U2",
            "--log-format",
            "text",
            "--dry-run",
        ]
    )
    settings = _settings_from(args)
    assert settings.port == 8181
    assert settings.job_lease_seconds == 45.0
    assert settings.dedup_ttl_seconds == 300.0
    assert settings.worker_count == 3
    assert settings.slack_allowed_users == frozenset({"U1", "U2"})
    assert settings.log_format.value == "text"
    assert settings.dry_run is True
    assert settings.single_replica is False
