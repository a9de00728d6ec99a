"""Client commands against a running receiver: paging, empty results, URLs, the token."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from receiver import keys
from receiver.app import create_app
from receiver.cli import main as cli_main
from receiver.models import Incident, IncidentState
from tests.conftest import ADMIN_TOKEN, free_port

BASE = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)


def incident(n: int) -> Incident:
    at = BASE + timedelta(minutes=n)
    inc = Incident(
        id=f"inc-{n:012x}",
        namespace="ml-prod",
        model="fraud-scorer",
        bad_version="v3",
        target_version="v2",
        strategy="rollout-undo",
        state=IncidentState.VERIFIED,
        reason="rolled_back",
        triggers=["error_rate"],
        created_at=at,
        updated_at=at,
    )
    inc.times.received = at
    return inc


@pytest.fixture
async def receiver(make_settings, aiohttp_server, monkeypatch) -> Any:
    """A running receiver (embedded store) and the environment of a signed-in operator."""
    monkeypatch.delenv("RECEIVER_ADMIN_TOKEN_FILE", raising=False)
    monkeypatch.setenv("RECEIVER_ADMIN_TOKEN", ADMIN_TOKEN)
    app = create_app(make_settings(redis_url=None), run_workers=False, read_block_seconds=0.1)
    server = await aiohttp_server(app)
    return server


async def cli(*args: str) -> int:
    return await asyncio.to_thread(cli_main, list(args))


async def test_history_pages_with_the_cursor_it_prints(receiver, capsys):
    for n in range(3):
        await receiver.app[keys.STORE].put_incident(incident(n))
    url = str(receiver.make_url(""))
    assert await cli("history", "--url", url, "--limit", "2") == 0
    first = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in first[:2]] == ["inc-000000000002", "inc-000000000001"]
    more = first[-1]
    assert more.startswith("(more: --cursor ") and more.endswith(")")
    cursor = more.removeprefix("(more: --cursor ").removesuffix(")")

    assert await cli("history", "--url", url, "--limit", "2", "--cursor", cursor) == 0
    second = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in second] == ["inc-000000000000"]


async def test_history_says_when_nothing_matches(receiver, capsys):
    assert await cli("history", "--url", str(receiver.make_url("")), "--model", "ranker") == 0
    captured = capsys.readouterr()
    assert captured.out == "no incidents match\n"
    assert captured.err == ""


async def test_a_url_without_a_scheme_means_http(receiver, capsys):
    await receiver.app[keys.STORE].put_incident(incident(1))
    assert await cli("history", "--url", f"127.0.0.1:{receiver.port}") == 0
    assert "inc-000000000001" in capsys.readouterr().out


async def test_an_unreachable_receiver_is_named_with_what_to_check(monkeypatch, capsys):
    monkeypatch.setenv("RECEIVER_ADMIN_TOKEN", ADMIN_TOKEN)
    port = free_port()  # nothing listens there
    assert await cli("history", "--url", f"localhost:{port}", "--timeout", "5") == 1
    err = capsys.readouterr().err
    assert f"http://localhost:{port}" in err
    assert "--url" in err and "running" in err
    assert "Traceback" not in err


async def test_a_url_that_is_not_one_is_a_usage_error(receiver, capsys):
    assert await cli("history", "--url", "ftp://receiver") == 2
    assert "--url" in capsys.readouterr().err


async def test_no_admin_token_has_its_own_exit_code(receiver, monkeypatch, capsys):
    monkeypatch.delenv("RECEIVER_ADMIN_TOKEN")
    assert await cli("history", "--url", str(receiver.make_url(""))) == 3
    err = capsys.readouterr().err
    assert "RECEIVER_ADMIN_TOKEN" in err and "RECEIVER_ADMIN_TOKEN_FILE" in err
    with pytest.raises(SystemExit) as usage:
        cli_main(["history", "--no-such-option"])
    assert usage.value.code == 2


async def test_the_admin_token_may_come_from_a_file_with_its_newline(
    receiver, monkeypatch, tmp_path: Path, capsys
):
    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN_TOKEN + "\n")  # as `echo token > file` writes it
    monkeypatch.delenv("RECEIVER_ADMIN_TOKEN")
    monkeypatch.setenv("RECEIVER_ADMIN_TOKEN_FILE", str(token_file))
    assert await cli("history", "--url", str(receiver.make_url(""))) == 0
    assert capsys.readouterr().out == "no incidents match\n"


def test_no_command_takes_a_token_as_an_argument(capsys):
    for command in ("serve", "history"):
        with pytest.raises(SystemExit):
            cli_main([command, "--help"])
        text = capsys.readouterr().out
        assert "--admin-token" not in text and "--webhook-token" not in text
        assert "RECEIVER_ADMIN_TOKEN" in text
    for flag in ("--webhook-token", "--admin-token"):
        with pytest.raises(SystemExit) as usage:
            cli_main(["serve", flag, "secret"])
        assert usage.value.code == 2
