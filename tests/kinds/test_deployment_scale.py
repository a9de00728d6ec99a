"""What the canary and blue-green strategies read from a Deployment, and the canary's
scale-to-zero patch, on recorded API objects (115: the canary as created; 016/009: a
complete and a fresh Deployment)."""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

import pytest

from receiver.annotations import BAD_VERSIONS, INCIDENT, PREVIOUS_REPLICAS
from receiver.kinds.deployment import (
    available_replicas,
    last_rollout_at,
    scale_to_zero_patch,
    spec_replicas,
    template_version,
)
from tests.kinds.helpers import recorded
from tests.kinds.recorded import load
from tests.standins.kube.patch import apply_merge_patch


def canary() -> dict[str, Any]:
    return copy.deepcopy(recorded("115"))


@pytest.mark.parametrize(("replicas", "previous"), [(1, "1"), (3, "3"), (None, "1")])
def test_the_scale_down_keeps_the_replica_count_with_our_annotations(replicas, previous) -> None:
    deployment = canary()
    if replicas is None:
        del deployment["spec"]["replicas"]  # the API's default is 1
    else:
        deployment["spec"]["replicas"] = replicas
    patch = scale_to_zero_patch(deployment, {INCIDENT: "inc-2", BAD_VERSIONS: '["v3"]'})
    assert patch == {
        "metadata": {
            "resourceVersion": "487",
            "annotations": {INCIDENT: "inc-2", BAD_VERSIONS: '["v3"]', PREVIOUS_REPLICAS: previous},
        },
        "spec": {"replicas": 0},
    }
    applied = apply_merge_patch(deployment, patch)
    assert applied["spec"]["replicas"] == 0
    assert applied["spec"]["template"] == deployment["spec"]["template"]


def test_a_canary_at_zero_keeps_the_count_recorded_before() -> None:
    deployment = canary()
    deployment["spec"]["replicas"] = 0
    deployment["metadata"]["annotations"] = {PREVIOUS_REPLICAS: "4"}
    patch = scale_to_zero_patch(deployment, {INCIDENT: "inc-2"})
    assert PREVIOUS_REPLICAS not in patch["metadata"]["annotations"]
    applied = apply_merge_patch(deployment, patch)
    assert applied["metadata"]["annotations"][PREVIOUS_REPLICAS] == "4"


def test_the_scale_down_needs_a_fresh_read() -> None:
    deployment = canary()
    del deployment["metadata"]["resourceVersion"]
    with pytest.raises(ValueError, match="resourceVersion"):
        scale_to_zero_patch(deployment, {})


@pytest.mark.parametrize(
    ("seq", "version", "replicas", "available"),
    [("115", "v3", 1, 0), ("016", "v1", 2, 2), ("009", "v1", 2, 0)],
)
def test_version_replicas_and_available_replicas_are_read(
    seq, version, replicas, available
) -> None:
    deployment = recorded(seq) if seq == "115" else load(seq)
    assert template_version(deployment) == version
    assert spec_replicas(deployment) == replicas
    assert available_replicas(deployment) == available


def test_a_template_without_a_version_label_has_none() -> None:
    deployment = load("016")
    del deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"]
    assert template_version(deployment) == ""


def test_the_last_rollout_is_the_progressing_update_else_the_creation() -> None:
    complete = load("016")
    progressing = next(c for c in complete["status"]["conditions"] if c["type"] == "Progressing")
    assert last_rollout_at(complete) == datetime.fromisoformat(
        progressing["lastUpdateTime"].replace("Z", "+00:00")
    )
    fresh = load("009")  # status: {} right after create
    assert last_rollout_at(fresh) == datetime.fromisoformat(
        fresh["metadata"]["creationTimestamp"].replace("Z", "+00:00")
    )
    assert last_rollout_at({"metadata": {}}) is None
