"""The deployment controller simulation: pause (070-080), knobs, deadlines, history limit."""

from __future__ import annotations

from typing import Any

from kubernetes.aio import client

from tests.standins.kube.clients import aio_api_client
from tests.standins.kube.recorded import exchange, response_body
from tests.standins.kube.server import KubeStandIn

NS, NAME = "ml-prod", "fraud-scorer"
REVISION = "deployment.kubernetes.io/revision"


def condition(d: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in d["status"]["conditions"] if c["type"] == kind)


def without_times(c: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in c.items() if k not in ("lastUpdateTime", "lastTransitionTime")}


async def test_paused_deployment_takes_no_new_revision_until_resumed(kube: KubeStandIn) -> None:
    await kube.create_deployment(NS, NAME, "v4", replicas=3)
    async with await aio_api_client(kube.kubeconfig) as api:
        apps = client.AppsV1Api(api)
        paused = await apps.patch_namespaced_deployment(NAME, NS, exchange(70)["request"]["body"])
        assert paused.spec.paused is True
        assert paused.metadata.generation == 2
        await apps.patch_namespaced_deployment(NAME, NS, exchange(71)["request"]["body"])

    def caught_up() -> bool:
        d = kube.deployment(NS, NAME)
        return d["status"].get("observedGeneration") == d["metadata"]["generation"] == 3

    await kube.wait_for(caught_up, what="observedGeneration 3 while paused")
    d = kube.deployment(NS, NAME)
    recorded = response_body(72)
    assert set(d["status"]) == set(recorded["status"])
    assert "updatedReplicas" not in d["status"]
    assert [without_times(c) for c in d["status"]["conditions"]] == [
        without_times(c) for c in recorded["status"]["conditions"]
    ]
    assert d["metadata"]["annotations"][REVISION] == "1"
    assert len(kube.replicasets(NS, NAME)) == 1
    assert kube.rollout_history(NS, NAME) == [1]

    await kube.pause(NS, NAME, False)
    resumed = await kube.wait_rollout_complete(NS, NAME)
    assert "paused" not in resumed["spec"]
    assert resumed["metadata"]["generation"] == 4
    assert resumed["metadata"]["annotations"][REVISION] == "2"
    progressing = condition(resumed, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "NewReplicaSetAvailable")
    assert progressing["message"] == (
        f'ReplicaSet "{kube.replicasets(NS, NAME)[-1]["metadata"]["name"]}" has successfully '
        "progressed."
    )
    assert kube.rollout_history(NS, NAME) == [1, 2]


async def test_held_deployment_pods_stay_unready_until_released(kube: KubeStandIn) -> None:
    await kube.create_deployment(NS, NAME, "v1")
    kube.hold_unready(NS, NAME)
    await kube.set_version(NS, NAME, "v2")

    def stuck() -> bool:
        rs = kube.replicasets(NS, NAME)
        new = rs[-1]
        return (
            len(rs) == 2
            and new["status"]["replicas"] == 1
            and condition(kube.deployment(NS, NAME), "Progressing")["reason"] == "ReplicaSetUpdated"
        )

    await kube.wait_for(stuck, what="the v2 pod created and unready")
    d = kube.deployment(NS, NAME)
    assert d["status"]["unavailableReplicas"] == 1
    assert d["status"]["availableReplicas"] == 2
    assert kube.replicasets(NS, NAME)[0]["spec"]["replicas"] == 2
    unready = [
        p
        for p in kube.pods(NS, NAME)
        if p["metadata"]["labels"]["app.kubernetes.io/version"] == "v2"
    ]
    assert [c["status"] for c in unready[0]["status"]["conditions"] if c["type"] == "Ready"] == [
        "False"
    ]

    kube.release_unready(NS, NAME)
    done = await kube.wait_rollout_complete(NS, NAME)
    assert done["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == "v2"
    assert {p["metadata"]["labels"]["app.kubernetes.io/version"] for p in kube.pods(NS, NAME)} == {
        "v2"
    }


async def test_version_knob_holds_only_that_version(kube: KubeStandIn) -> None:
    kube.hold_version_unready("v2")
    await kube.create_deployment(NS, NAME, "v1")
    await kube.set_version(NS, NAME, "v2")
    await kube.wait_for(lambda: len(kube.pods(NS, NAME)) == 3, what="surge pod created")
    await kube.set_version(NS, NAME, "v3")
    done = await kube.wait_rollout_complete(NS, NAME)
    assert done["metadata"]["annotations"][REVISION] == "3"
    assert kube.rollout_history(NS, NAME) == [1, 2, 3]


async def test_progress_deadline_exceeded_when_pods_never_get_ready(kube: KubeStandIn) -> None:
    kube.hold_version_unready("v2")
    await kube.create_deployment(NS, NAME, "v1", progress_deadline_seconds=1)
    await kube.set_version(NS, NAME, "v2")

    def timed_out() -> bool:
        return (
            condition(kube.deployment(NS, NAME), "Progressing")["reason"]
            == "ProgressDeadlineExceeded"
        )

    await kube.wait_for(timed_out, timeout=5.0, what="ProgressDeadlineExceeded")
    progressing = condition(kube.deployment(NS, NAME), "Progressing")
    assert progressing["status"] == "False"
    assert progressing["message"].endswith("has timed out progressing.")


async def test_frozen_deployment_is_not_observed(kube: KubeStandIn) -> None:
    await kube.create_deployment(NS, NAME, "v1")
    kube.freeze(NS, NAME)
    await kube.set_version(NS, NAME, "v2")
    tick = kube.controller.tick
    await kube.wait_for(lambda: kube.controller.tick >= tick + 2, what="two controller passes")
    d = kube.deployment(NS, NAME)
    assert d["status"]["observedGeneration"] == 1
    assert d["metadata"]["generation"] == 2
    kube.unfreeze(NS, NAME)
    done = await kube.wait_rollout_complete(NS, NAME)
    assert done["status"]["observedGeneration"] == 2


async def test_revision_history_limit_deletes_the_oldest_idle_replicasets(
    kube: KubeStandIn,
) -> None:
    await kube.create_deployment(NS, NAME, "v1")
    await kube.patch("deployments", NS, NAME, {"spec": {"revisionHistoryLimit": 1}})
    for version in ("v2", "v3"):
        await kube.set_version(NS, NAME, version, wait=True)
    await kube.wait_for(
        lambda: kube.rollout_history(NS, NAME) == [2, 3], what="revision 1 cleaned up"
    )


async def test_scaling_event_scales_the_current_replicaset(kube: KubeStandIn) -> None:
    await kube.create_deployment(NS, NAME, "v1")
    await kube.scale(NS, NAME, 4)
    d = await kube.wait_rollout_complete(NS, NAME)
    assert d["status"]["availableReplicas"] == 4
    (rs,) = kube.replicasets(NS, NAME)
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] == "4"
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"] == "5"
    assert len(kube.pods(NS, NAME)) == 4


async def test_wait_settled_returns_once_the_controller_stops_writing(kube: KubeStandIn) -> None:
    await kube.create_deployment(NS, NAME, "v1", wait=False)
    await kube.scale(NS, NAME, 4)
    await kube.wait_settled()
    settled = kube.deployment(NS, NAME)
    rv = kube.store.rv
    tick = kube.controller.tick
    await kube.wait_for(lambda: kube.controller.tick >= tick + 3, what="three more passes")
    assert kube.store.rv == rv
    assert settled["status"]["availableReplicas"] == 4
    assert settled["status"]["observedGeneration"] == settled["metadata"]["generation"]
