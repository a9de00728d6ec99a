"""Rollback readiness of the strategies with a fixed target: the standby slot, the stable.

Through the whole app on the stand-in: the check reads the workload, runs the strategy's
pre-check and sends the rollback's own PATCH as a server-side dry run (nothing changes).
"""

from __future__ import annotations

from typing import Any

from receiver import keys
from tests.strategies.conftest import CANARY, NS, RANKER, SLOTS, STABLE


async def check(client: Any) -> Any:
    readiness = client.app[keys.ROLLBACK_READINESS]
    return await readiness.check(readiness.policy.models[0])


def switched(kube: Any) -> list[Any]:
    return [r for r in kube.requests_to("PATCH", f"*/services/{RANKER}") if "dryRun" not in r.query]


async def test_a_warm_healthy_standby_is_ready_and_the_switch_is_only_dry_run(blue_green):
    client = await blue_green.make_app()
    result = await check(client)

    assert (result.result, result.reasons) == ("ready", [])
    dry = blue_green.kube.requests_to("PATCH", f"*/services/{RANKER}")
    assert dry and all(r.query.get("dryRun") == "All" for r in dry)
    assert switched(blue_green.kube) == []
    assert blue_green.selected() == "green", "a readiness check changes nothing"


async def test_a_standby_with_fewer_replicas_is_not_ready_with_the_reason(blue_green):
    await blue_green.kube.scale(NS, SLOTS["blue"], 1)
    await blue_green.kube.wait_rollout_complete(NS, SLOTS["blue"])
    client = await blue_green.make_app()
    result = await check(client)

    assert result.result == "not_ready"
    assert any("fewer than the active slot" in r for r in result.reasons), result.reasons


async def test_a_forbidden_switch_is_not_ready(blue_green):
    blue_green.kube.deny("patch", "services", NS)
    client = await blue_green.make_app()
    result = await check(client)

    assert result.result == "not_ready"
    assert any("refused the rollback's PATCH" in r for r in result.reasons), result.reasons


async def test_a_canary_with_an_available_stable_is_ready(canary):
    client = await canary.make_app()
    result = await check(client)

    assert (result.result, result.reasons) == ("ready", [])
    assert canary.kube.deployment(NS, CANARY)["spec"]["replicas"] == 1, "dry run only"


async def test_a_canary_whose_stable_is_gone_is_not_ready(canary):
    await canary.kube.delete("deployments", NS, STABLE)
    client = await canary.make_app()
    result = await check(client)

    assert result.result == "not_ready"
    assert any("does not exist" in r for r in result.reasons), result.reasons
