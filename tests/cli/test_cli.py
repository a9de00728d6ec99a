"""The command line: serve refuses unsafe starts; check-policy reports errors with the key."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT


def environment(env: dict[str, str] | None = None) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RECEIVER_", "SLACK_"))}
    base.pop("KUBERNETES_SERVICE_HOST", None)
    base.update(env or {})
    return base


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = environment(env)
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
    assert "RECEIVER_RECEIVER" not in result.stderr


def test_serve_rejects_a_bad_option_value_naming_the_setting():
    result = run("serve", "--job-lease", "soon", env={"RECEIVER_WEBHOOK_TOKEN": "t"})
    assert result.returncode == 2
    assert "job_lease_seconds (RECEIVER_JOB_LEASE)" in result.stderr
    assert "Traceback" not in result.stderr


def serve(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "receiver", "serve", "--host", "127.0.0.1", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment({"RECEIVER_WEBHOOK_TOKEN": "t", "RECEIVER_LOG_FORMAT": "json"}),
        cwd=ROOT,
    )


def log_lines(proc: subprocess.Popen[str], timeout: float = 30.0) -> Iterator[dict]:
    """The JSON log lines of ``proc`` as they come; stops at its exit or after ``timeout``."""
    assert proc.stderr is not None
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr], daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            yield json.loads(lines.get(timeout=left))
        except queue.Empty:
            break
    pytest.fail(f"no further log line from serve within {timeout}s")


def test_serve_says_where_it_listens_and_stops_cleanly_on_sigterm():
    with serve("--port", "0") as proc:
        try:
            for line in log_lines(proc):
                if line["message"].startswith("listening on "):
                    url = line["message"].removeprefix("listening on ")
                    break
            assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
            with urllib.request.urlopen(url + "/healthz", timeout=10) as resp:
                assert resp.status == 200
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_serve_on_a_port_in_use_says_so_without_a_traceback():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(
            "serve", "--host", "127.0.0.1", "--port", str(port), env={"RECEIVER_WEBHOOK_TOKEN": "t"}
        )
    assert result.returncode == 1
    assert (
        f"cannot listen on 127.0.0.1:{port}: address in use (set RECEIVER_PORT or --port)"
        in result.stderr
    )
    assert "Traceback" not in result.stderr


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
