"""rollout_status judges recorded Deployments as `kubectl rollout status` does, plus old pods."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from receiver.kinds.deployment import current_template_hash, rollout_status
from receiver.models import RolloutStatus
from tests.kinds.recorded import items, load, pod_of

V1_HASH = "5c559f9b8b"
V2_HASH = "8849dc8dd"
WAITING = 'Waiting for deployment "fraud-scorer" rollout to finish: '
DONE = RolloutStatus(True, False, 'deployment "fraud-scorer" successfully rolled out')


def edited(prefix: str, edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    deployment = load(prefix)
    edit(deployment)
    return deployment


def with_status(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def edit(deployment: dict[str, Any]) -> None:
        for key, value in fields.items():
            if value is None:
                deployment["status"].pop(key, None)
            else:
                deployment["status"][key] = value

    return edit


def progress_deadline_exceeded(deployment: dict[str, Any]) -> None:
    progressing = next(c for c in deployment["status"]["conditions"] if c["type"] == "Progressing")
    progressing.update(
        status="False",
        reason="ProgressDeadlineExceeded",
        message='ReplicaSet "fraud-scorer-8849dc8dd" has timed out progressing.',
    )


def generation_ahead(deployment: dict[str, Any]) -> None:
    deployment["metadata"]["generation"] = deployment["status"]["observedGeneration"] + 1


def paused(deployment: dict[str, Any]) -> None:
    deployment["spec"]["paused"] = True


CASES = [
    pytest.param(load("016"), DONE, id="v1 rollout complete (recorded)"),
    pytest.param(load("021"), DONE, id="v2 rollout complete (recorded)"),
    pytest.param(load("038"), DONE, id="undo to v2 complete (recorded)"),
    pytest.param(load("079"), DONE, id="resumed rollout complete (recorded)"),
    pytest.param(
        load("009"),
        RolloutStatus(False, False, "Waiting for deployment spec update to be observed..."),
        id="right after create: nothing observed yet (recorded)",
    ),
    pytest.param(
        edited("016", generation_ahead),
        RolloutStatus(False, False, "Waiting for deployment spec update to be observed..."),
        id="observedGeneration behind generation",
    ),
    pytest.param(
        edited("016", with_status(updatedReplicas=1)),
        RolloutStatus(False, False, WAITING + "1 out of 2 new replicas have been updated..."),
        id="updated fewer than spec.replicas",
    ),
    pytest.param(
        edited("016", with_status(updatedReplicas=None)),
        RolloutStatus(False, False, WAITING + "0 out of 2 new replicas have been updated..."),
        id="updatedReplicas omitted counts as zero",
    ),
    pytest.param(
        edited("016", with_status(replicas=3)),
        RolloutStatus(False, False, WAITING + "1 old replicas are pending termination..."),
        id="old replicas pending termination",
    ),
    pytest.param(
        edited("016", with_status(availableReplicas=1)),
        RolloutStatus(False, False, WAITING + "1 of 2 updated replicas are available..."),
        id="available fewer than updated",
    ),
    pytest.param(
        edited("021", progress_deadline_exceeded),
        RolloutStatus(False, True, 'deployment "fraud-scorer" exceeded its progress deadline'),
        id="progress deadline exceeded fails",
    ),
    pytest.param(
        edited("021", lambda d: (progress_deadline_exceeded(d), generation_ahead(d))),
        RolloutStatus(False, False, "Waiting for deployment spec update to be observed..."),
        id="progress deadline of an older generation is not judged yet",
    ),
    pytest.param(
        load("072"),
        RolloutStatus(
            False,
            True,
            'deployment "fraud-scorer" is paused and cannot finish its rollout: '
            + WAITING
            + "0 out of 3 new replicas have been updated...",
        ),
        id="paused with a pending template change fails (recorded)",
    ),
    pytest.param(edited("079", paused), DONE, id="paused after a complete rollout is done"),
]


@pytest.mark.parametrize(("deployment", "expected"), CASES)
def test_rollout_status_matches_kubectl(
    deployment: dict[str, Any], expected: RolloutStatus
) -> None:
    assert rollout_status(deployment) == expected


def test_recorded_pods_of_the_current_template_leave_the_rollout_done() -> None:
    current = current_template_hash(load("016"), items("018"))
    assert current == V1_HASH
    assert rollout_status(load("016"), items("019"), current_hash=current) == DONE


def test_old_pods_left_keep_the_rollout_waiting() -> None:
    # v2 is complete by the Deployment's counts, but the recorded v1 pods still run.
    pods = [*items("019"), pod_of(V2_HASH, suffix="a"), pod_of(V2_HASH, suffix="b")]
    status = rollout_status(load("021"), pods, current_hash=V2_HASH)
    assert status == RolloutStatus(
        False, False, WAITING + "2 old pods are still running or terminating..."
    )


def test_a_terminating_old_pod_is_still_left() -> None:
    pods = [pod_of(V2_HASH, suffix="a"), pod_of(V1_HASH, suffix="old", terminating=True)]
    status = rollout_status(load("021"), pods, current_hash=V2_HASH)
    assert not status.done
    assert "1 old pods" in status.message


def test_pods_of_other_workloads_are_ignored() -> None:
    # fraud-scorer-canary's ReplicaSet is "fraud-scorer-canary-<hash>": a prefix match of the
    # name would count its pods as ours.
    pods = [
        pod_of(V2_HASH, suffix="a"),
        pod_of("7d9f8b6c5", deployment="fraud-scorer-canary"),
        pod_of("7d9f8b6c5", deployment="ranker"),
    ]
    assert rollout_status(load("021"), pods, current_hash=V2_HASH) == DONE


def test_without_the_current_hash_pods_of_two_templates_mean_old_pods_left() -> None:
    mixed = [pod_of(V2_HASH, suffix="a"), pod_of(V1_HASH, suffix="b")]
    assert not rollout_status(load("021"), mixed).done
    assert rollout_status(load("021"), [pod_of(V2_HASH, suffix="a")]) == DONE


@pytest.mark.parametrize(
    ("replica_sets", "expected"),
    [
        pytest.param("018", V1_HASH, id="one ReplicaSet"),
        pytest.param("022", V2_HASH, id="after an update"),
        pytest.param("039", V2_HASH, id="after undo re-adopts an old ReplicaSet"),
        pytest.param("080", "5956cc5cbb", id="after resume"),
    ],
)
def test_current_template_hash_is_the_newest_revision(replica_sets: str, expected: str) -> None:
    assert current_template_hash(load("079"), items(replica_sets)) == expected


def test_current_template_hash_ignores_replica_sets_of_other_deployments() -> None:
    other = items("022")
    for rs in other:
        rs["metadata"]["ownerReferences"][0]["uid"] = "another-deployment"
    assert current_template_hash(load("021"), other) is None
    assert current_template_hash(load("021"), []) is None
