"""The command line: serve refuses unsafe starts; check-policy reports errors with the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RECEIVER_", "SLACK_"))}
    base.pop("KUBERNETES_SERVICE_HOST", None)
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "receiver", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=base,
        cwd=ROOT,
    )


def test_serve_refuses_to_start_without_a_webhook_token():
    result = run("serve", "--port", "0")
    assert result.returncode == 2
    assert "webhook_token" in result.stderr and "RECEIVER_WEBHOOK_TOKEN" in result.stderr


def test_serve_refuses_the_embedded_store_inside_a_cluster():
    result = run(
        "serve",
        env={"RECEIVER_WEBHOOK_TOKEN": "t", "KUBERNETES_SERVICE_HOST": "10.0.0.1"},
    )
    assert result.returncode == 2
    assert "--single-replica" in result.stderr and "RECEIVER_REDIS_URL" in result.stderr


def test_serve_rejects_a_bad_duration_naming_the_variable():
    result = run("serve", env={"RECEIVER_WEBHOOK_TOKEN": "t", "RECEIVER_DEDUP_TTL": "ten minutes"})
    assert result.returncode == 2
    assert "RECEIVER_DEDUP_TTL" in result.stderr and "Prometheus syntax" in result.stderr


def test_check_policy_accepts_the_shipped_example():
    result = run("check-policy", "deploy/policy.yaml")
    assert result.returncode == 0, result.stderr
    assert "fraud-scorer" in result.stdout or "3 model" in result.stdout


def test_check_policy_names_the_unknown_key_and_its_line(tmp_path: Path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("defaults:\n  mode: auto\n  cooldwn: 5m\n")
    result = run("check-policy", str(policy))
    assert result.returncode == 1
    assert "cooldwn" in result.stderr
    assert ":3:" in result.stderr


@pytest.mark.parametrize("args", [[], ["nope"]])
def test_unknown_or_missing_command_is_a_usage_error(args):
    result = run(*args)
    assert result.returncode == 2
