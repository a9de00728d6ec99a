"""Reading a Deployment and its ReplicaSets, and the undo patch, on recorded API objects
(../shared/fixtures/kubernetes: create v1, v2, v3, then an undo to v2 as revision 4)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from receiver.annotations import BAD as ANNOTATION_BAD
from receiver.annotations import CHANGED_AT as ANNOTATION_CHANGED_AT
from receiver.annotations import INCIDENT as ANNOTATION_INCIDENT
from receiver.annotations import ROLLED_BACK_TO as ANNOTATION_ROLLED_BACK_TO
from receiver.annotations import rollback_annotations
from receiver.decide import Action, Facts, decide
from receiver.kinds.deployment import (
    deployment_view,
    gitops_manager,
    mark_bad_patch,
    pod_template,
    template_matches,
    undo_patch,
    unmark_bad_patch,
)
from receiver.kinds.merge_patch import merge_patch_to
from receiver.models import Job, Revision
from receiver.policy import parse_policy, resolve
from tests.standins.kube.patch import apply_merge_patch

KUBE_FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "kubernetes"


def recorded(seq: str) -> Any:
    """The response body of recorded exchange ``seq`` (e.g. "024")."""
    (path,) = KUBE_FIXTURES.glob(f"{seq}-*.json")
    return json.loads(path.read_text())["response"]["body"]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.fixture
def v2() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return recorded("021"), recorded("022")["items"]


@pytest.fixture
def v3() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return recorded("024"), recorded("025")["items"]


@pytest.fixture
def undone() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return recorded("038"), recorded("039")["items"]


# --- views ----------------------------------------------------------------------------------


def test_the_view_after_v2_serves_revision_2_with_v1_as_candidate(v2: Any) -> None:
    view = deployment_view(*v2)
    assert (view.namespace, view.name, view.resource_version) == ("ml-prod", "fraud-scorer", "299")
    assert (view.serving_version, view.serving_revision) == ("v2", "2")
    assert view.serving is not None and view.serving.name == "fraud-scorer-8849dc8dd"
    assert [(c.number, c.version, c.name) for c in view.candidates] == [
        (1, "v1", "fraud-scorer-5c559f9b8b")
    ]
    assert view.became_current_at == at("2026-11-25T08:41:38Z")  # the v2 ReplicaSet's creation
    assert not view.made_current_by_us
    assert not view.spec_paused
    assert view.gitops is None
    assert view.strategy == "rollout-undo"


def test_the_view_after_v3_lists_earlier_revisions_newest_first(v3: Any) -> None:
    view = deployment_view(*v3)
    assert (view.serving_version, view.serving_revision) == ("v3", "3")
    assert [(c.number, c.version) for c in view.candidates] == [(2, "v2"), (1, "v1")]
    assert view.became_current_at == at("2026-11-25T08:41:38Z")
    assert view.annotations == {"deployment.kubernetes.io/revision": "3"}


def test_candidate_templates_drop_the_pod_template_hash(v3: Any) -> None:
    view = deployment_view(*v3)
    v2_template = view.candidates[0].template
    assert "pod-template-hash" not in v2_template["metadata"]["labels"]
    assert v2_template["spec"]["containers"][0]["image"] == "registry.example/fraud-scorer:v2"


def test_after_an_undo_the_readopted_replicaset_serves_as_revision_4(undone: Any) -> None:
    view = deployment_view(*undone)
    assert (view.serving_version, view.serving_revision) == ("v2", "4")
    assert view.serving is not None and view.serving.name == "fraud-scorer-8849dc8dd"
    # Revision 3 (v3) is now earlier than the serving revision 4.
    assert [(c.number, c.version) for c in view.candidates] == [(3, "v3"), (1, "v1")]
    # The ReplicaSet was created long before its return: the Progressing update counts.
    assert view.became_current_at == at("2026-11-25T08:41:39Z")
    assert not view.made_current_by_us


def test_replicasets_of_another_deployment_are_ignored(v3: Any) -> None:
    deployment, replicasets = v3
    stranger = copy.deepcopy(replicasets[0])
    stranger["metadata"]["ownerReferences"][0]["uid"] = "another-uid"
    stranger["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "2"
    stranger["metadata"]["name"] = "other-model-abc"
    view = deployment_view(deployment, [*replicasets, stranger])
    assert [c.name for c in view.candidates] == [
        "fraud-scorer-8849dc8dd",
        "fraud-scorer-5c559f9b8b",
    ]


def test_a_template_with_no_replicaset_yet_has_no_serving_revision(v3: Any) -> None:
    deployment, replicasets = copy.deepcopy(v3)
    deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] = "v4"
    view = deployment_view(deployment, replicasets)
    assert (view.serving_version, view.serving_revision) == ("v4", "")
    assert view.serving is None
    assert view.became_current_at is None
    assert [c.number for c in view.candidates] == [3, 2, 1]


def test_a_null_creation_timestamp_in_a_template_does_not_break_the_match(v3: Any) -> None:
    deployment, replicasets = copy.deepcopy(v3)
    deployment["spec"]["template"]["metadata"]["creationTimestamp"] = None
    assert deployment_view(deployment, replicasets).serving_revision == "3"


def test_spec_paused_is_read(v3: Any) -> None:
    deployment, replicasets = copy.deepcopy(v3)
    deployment["spec"]["paused"] = True
    assert deployment_view(deployment, replicasets).spec_paused


def test_a_bad_marked_replicaset_is_a_bad_candidate(undone: Any) -> None:
    deployment, replicasets = copy.deepcopy(undone)
    v3_rs = next(rs for rs in replicasets if rs["metadata"]["name"] == "fraud-scorer-6567684dc8")
    v3_rs.update(apply_merge_patch(v3_rs, mark_bad_patch("inc-0123456789ab")))
    assert v3_rs["metadata"]["annotations"][ANNOTATION_BAD] == "inc-0123456789ab"
    view = deployment_view(deployment, replicasets)
    assert [(c.number, c.bad) for c in view.candidates] == [(3, True), (1, False)]
    cleared = apply_merge_patch(v3_rs, unmark_bad_patch())
    assert ANNOTATION_BAD not in cleared["metadata"]["annotations"]


@pytest.mark.parametrize(
    ("labels", "annotations", "expected"),
    [
        ({}, {"argocd.argoproj.io/tracking-id": "fraud:apps/Deployment:ml-prod/x"}, "Argo CD"),
        ({"argocd.argoproj.io/instance": "fraud"}, {}, "Argo CD"),
        ({"app.kubernetes.io/instance": "fraud"}, {"argocd.argoproj.io/sync-wave": "1"}, "Argo CD"),
        ({"app.kubernetes.io/instance": "fraud"}, {}, None),  # every Helm chart sets it
        ({"kustomize.toolkit.fluxcd.io/name": "apps"}, {}, "Flux"),
        ({"helm.toolkit.fluxcd.io/name": "fraud"}, {}, "Flux"),
        ({"app": "fraud-scorer"}, {"deployment.kubernetes.io/revision": "3"}, None),
    ],
)
def test_gitops_managers_are_recognised_by_their_tracking_marks(
    labels: dict[str, str], annotations: dict[str, str], expected: str | None
) -> None:
    assert gitops_manager({"labels": labels, "annotations": annotations}) == expected


# --- the undo patch -------------------------------------------------------------------------


def test_the_undo_patch_restores_exactly_the_target_template(v3: Any, undone: Any) -> None:
    deployment, replicasets = v3
    target = deployment_view(deployment, replicasets).candidates[0]
    annotations = {ANNOTATION_INCIDENT: "inc-0123456789ab"}
    patch = undo_patch(deployment, target, annotations)

    assert patch["metadata"] == {"resourceVersion": "344", "annotations": annotations}
    assert set(patch["spec"]) == {"template"}  # never spec.replicas: an HPA may own it
    patched = apply_merge_patch(deployment, patch)
    assert patched["spec"]["template"] == target.template
    # What the real undo left on the Deployment (fixture 038) is the same template.
    assert patched["spec"]["template"] == undone[0]["spec"]["template"]
    assert patched["spec"]["replicas"] == deployment["spec"]["replicas"]
    assert patched["metadata"]["annotations"] == {
        "deployment.kubernetes.io/revision": "3",
        ANNOTATION_INCIDENT: "inc-0123456789ab",
    }


def test_the_undo_patch_nulls_keys_the_target_lacks_and_replaces_lists(v3: Any) -> None:
    deployment, replicasets = copy.deepcopy(v3)
    template = deployment["spec"]["template"]
    template["metadata"]["annotations"] = {"prometheus.io/scrape": "true"}
    template["spec"]["nodeSelector"] = {"gpu": "a100"}
    container = template["spec"]["containers"][0]
    container["env"] = [{"name": "BATCH", "value": "64"}, {"name": "THREADS", "value": "8"}]
    container["resources"] = {"limits": {"memory": "8Gi"}}
    template["spec"]["containers"].append({"name": "sidecar", "image": "envoy:1"})
    target = deployment_view(deployment, replicasets).candidates[0]

    patch = undo_patch(deployment, target, {})
    spec_patch = patch["spec"]["template"]
    assert spec_patch["metadata"]["annotations"] is None
    assert spec_patch["spec"]["nodeSelector"] is None
    assert len(spec_patch["spec"]["containers"]) == 1  # lists are replaced whole
    assert apply_merge_patch(deployment, patch)["spec"]["template"] == target.template


def test_an_undo_to_the_serving_template_changes_only_annotations(undone: Any) -> None:
    deployment, replicasets = undone
    serving = deployment_view(deployment, replicasets).serving
    assert serving is not None
    assert template_matches(deployment, serving)
    patch = undo_patch(deployment, serving, {ANNOTATION_INCIDENT: "inc-x"})
    assert "spec" not in patch


def test_the_undo_patch_needs_the_resource_version_that_was_read(v3: Any) -> None:
    deployment, replicasets = copy.deepcopy(v3)
    target = deployment_view(deployment, replicasets).candidates[0]
    del deployment["metadata"]["resourceVersion"]
    with pytest.raises(ValueError, match="resourceVersion"):
        undo_patch(deployment, target, {})


def test_the_undo_patch_needs_a_template() -> None:
    deployment = {"metadata": {"resourceVersion": "1"}, "spec": {"template": {}}}
    with pytest.raises(ValueError, match="no pod template"):
        undo_patch(deployment, Revision(2, "v2", "rs-2"), {})


@pytest.mark.parametrize(
    ("current", "desired", "patch"),
    [
        ({"a": 1}, {"a": 1}, {}),
        ({"a": 1}, {"a": 2}, {"a": 2}),
        ({"a": 1, "b": 2}, {"a": 1}, {"b": None}),
        ({"a": {"x": 1, "y": 2}}, {"a": {"x": 1}}, {"a": {"y": None}}),
        ({"a": [1, 2]}, {"a": [2]}, {"a": [2]}),
        ({}, {"a": {"x": 1, "n": None}}, {"a": {"x": 1}}),
        ({"a": {"x": 1}}, {"a": "flat"}, {"a": "flat"}),
        ({"a": 1}, {"a": None}, {"a": None}),
    ],
)
def test_merge_patch_to_follows_rfc_7386(
    current: dict[str, Any], desired: dict[str, Any], patch: dict[str, Any]
) -> None:
    assert merge_patch_to(current, desired) == patch
    wanted = {k: v for k, v in desired.items() if v is not None}
    if isinstance(wanted.get("a"), dict):
        wanted["a"] = {k: v for k, v in wanted["a"].items() if v is not None}
    assert apply_merge_patch(current, patch) == wanted


def test_pod_template_of_a_replicaset_equals_its_deployments(v3: Any) -> None:
    deployment, replicasets = v3
    v3_rs = next(rs for rs in replicasets if rs["metadata"]["name"] == "fraud-scorer-6567684dc8")
    assert pod_template(v3_rs) == deployment["spec"]["template"]


# --- decide on recorded objects ------------------------------------------------------------

POLICY = parse_policy("models:\n  - {name: fraud-scorer, namespace: ml-prod}\n")


def test_a_bad_v3_is_rolled_back_to_v2_and_the_re_driven_job_verifies(v3: Any, undone: Any) -> None:
    now = at("2026-11-25T09:00:00Z")
    job = Job(
        received_at=now,
        labels={"namespace": "ml-prod", "model": "fraud-scorer", "model_version": "v3"},
        starts_at=now - timedelta(minutes=8),
        fingerprint="f",
    )
    first = decide(job, resolve(POLICY, job), deployment_view(*v3), Facts(now=now))
    assert first.action is Action.ROLLBACK
    assert first.target is not None and (first.target.number, first.target.version) == (2, "v2")

    # The state after our PATCH: the recorded undo plus the annotations the patch carries.
    deployment, replicasets = copy.deepcopy(undone)
    assert first.target is not None
    annotations = rollback_annotations(
        incident_id=first.incident_id,
        bad_version=first.bad_version,
        bad_revision=first.bad_revision,
        target_version=first.target.version,
        target_revision=str(first.target.number),
        at=now,
    )
    deployment["metadata"]["annotations"].update(annotations)
    view = deployment_view(deployment, replicasets)
    assert view.made_current_by_us
    assert view.became_current_at == now
    assert view.annotations[ANNOTATION_ROLLED_BACK_TO] == "v2"
    assert view.annotations[ANNOTATION_CHANGED_AT] == "2026-11-25T09:00:00Z"

    again = decide(job, resolve(POLICY, job), view, Facts(now=now + timedelta(seconds=40)))
    assert again.action is Action.VERIFY
    assert again.incident_id == first.incident_id
    assert again.target is not None and again.target.version == "v2"

    # A later alert about v2, which we made current, is never acted on automatically.
    v2_job = job.model_copy(update={"labels": {**job.labels, "model_version": "v2"}})
    v2_decision = decide(v2_job, resolve(POLICY, v2_job), view, Facts(now=now + timedelta(hours=1)))
    assert (v2_decision.action, v2_decision.reason, v2_decision.escalate) == (
        Action.REFUSE,
        "made_current_by_us",
        True,
    )


def test_times_in_views_are_timezone_aware(v3: Any) -> None:
    became = deployment_view(*v3).became_current_at
    assert became is not None and became.tzinfo is not None
    assert became.astimezone(UTC) == datetime(2026, 11, 25, 8, 41, 38, tzinfo=UTC)
