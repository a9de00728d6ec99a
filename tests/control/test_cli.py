"""The control commands of the CLI against a running receiver (the whole app, real ports)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from receiver import annotations as ours
from receiver.cli import EXIT_FAILED, EXIT_NO_TOKEN, EXIT_USAGE
from receiver.cli import main as cli_main
from tests.conftest import ADMIN_TOKEN
from tests.control.conftest import OWN_NAMESPACE, get, wait_incident, wait_listed
from tests.worker.conftest import MODEL, NS, serving_version, write_policy

TARGET = f"{NS}/{MODEL}"


@pytest.fixture
def operator(monkeypatch) -> None:
    """The environment of a signed-in operator."""
    monkeypatch.delenv("RECEIVER_ADMIN_TOKEN_FILE", raising=False)
    monkeypatch.setenv("RECEIVER_ADMIN_TOKEN", ADMIN_TOKEN)


async def cli(*args: str) -> int:
    return await asyncio.to_thread(cli_main, list(args))


async def running(world: Any, tmp_path: Any) -> tuple[Any, str]:
    await world.kube.create_namespace(OWN_NAMESPACE)
    policy = write_policy(tmp_path / "p.yaml", world.model_server.url, drills=True)
    client = await world.make_app(policy=policy, namespace=OWN_NAMESPACE)
    return client, str(client.make_url(""))


async def test_pause_and_resume_a_model_and_everything(world, tmp_path, operator, capsys):
    client, url = await running(world, tmp_path)
    assert await cli("pause", TARGET, "--url", url, "--actor", "jo", "--reason", "db move") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"automation paused for {TARGET} by admin:jo at ")
    pause = json.loads(world.deployment()["metadata"]["annotations"][ours.PAUSED])
    assert (pause["actor"], pause["reason"]) == ("admin:jo", "db move")

    assert await cli("pause", "--all", "--url", url, "--actor", "jo") == 0
    assert "automation paused for every model" in capsys.readouterr().out
    assert (await get(client, "/api/models"))["global"]["paused"] is True

    assert await cli("resume", TARGET, "--url", url) == 0
    assert await cli("resume", "--all", "--url", url, "--json") == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1])["paused"] is False
    assert ours.PAUSED not in world.deployment()["metadata"]["annotations"]
    assert (await get(client, "/api/models"))["global"]["paused"] is False


async def test_rollback_ack_roll_forward_and_stats(world, tmp_path, operator, capsys):
    client, url = await running(world, tmp_path)
    assert await cli("rollback", TARGET, "--url", url, "--reason", "bad canary") == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("rollback queued: incident inc-")
    incident = line.split("incident ")[1].split(",")[0]
    await wait_incident(client, incident, lambda d: d["state"] == "verified")
    assert serving_version(world.kube) == "v2"

    assert await cli("ack", incident, "--root-cause", "false_alarm", "--url", url) == 0
    assert f"{incident} (verified) acknowledged by admin:" in capsys.readouterr().out

    assert await cli("roll-forward", "--incident", incident, "--url", url) == 0
    assert capsys.readouterr().out.startswith(f"roll forward queued: incident {incident}")
    await wait_incident(
        client, incident, lambda d: "roll_forward_healthy" in [e["kind"] for e in d["events"]]
    )
    assert serving_version(world.kube) == "v3"

    assert await cli("stats", "--url", url) == 0
    out = capsys.readouterr().out
    assert "rollbacks: 1" in out and "false_alarm" in out and "received to healthy" in out
    assert await cli("stats", "--url", url, "--since", "1h", "--json") == 0
    assert json.loads(capsys.readouterr().out)["rollbacks"]["by_trigger"] == {"manual": 1}


async def test_drill_all_enabled_drills_every_enabled_model_as_the_schedule(
    world, tmp_path, operator, capsys
):
    client, url = await running(world, tmp_path)
    assert await cli("drill", "--all-enabled", "--url", url) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"drill of {TARGET} queued: incident inc-")
    item = await wait_listed(client, lambda i: i["kind"] == "drill" and i["state"] != "acting")
    assert (item["state"], item["reason"]) == ("verified", "drill_passed")
    assert item["actors"][0] == "drill:cron"

    # A model that cannot be drilled now (paused) fails the run, with the reason.
    assert await cli("pause", TARGET, "--url", url) == 0
    capsys.readouterr()
    assert await cli("drill", "--all-enabled", "--url", url) == EXIT_FAILED
    assert "paused" in capsys.readouterr().err


async def test_control_commands_say_what_is_wrong(world, tmp_path, operator, capsys, monkeypatch):
    _, url = await running(world, tmp_path)
    assert await cli("pause", "--url", url) == EXIT_USAGE
    assert "NAMESPACE/MODEL or --all" in capsys.readouterr().err
    assert await cli("pause", "fraud-scorer", "--url", url) == EXIT_USAGE
    assert "is not NAMESPACE/MODEL" in capsys.readouterr().err
    assert await cli("roll-forward", TARGET, "--url", url) == EXIT_FAILED
    assert "409: " in capsys.readouterr().err
    monkeypatch.delenv("RECEIVER_ADMIN_TOKEN")
    assert await cli("drill", TARGET, "--url", url) == EXIT_NO_TOKEN
    assert "no admin token" in capsys.readouterr().err
