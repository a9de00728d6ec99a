"""Rollout bookkeeping against the recording: create, two template changes, an undo (008-047).

Driven by the sync client, as the recording was, against the threaded stand-in; every
response is compared field by field with the recorded one.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from tests.standins.kube.clients import sync_api_client
from tests.standins.kube.recorded import differences, exchange, response_body
from tests.standins.kube.threaded import ThreadedKube

NS, NAME = "ml-prod", "fraud-scorer"
REVISION = "deployment.kubernetes.io/revision"
# managedFields is compared on its own where it matters; the rest of metadata exactly.
NO_MANAGED = frozenset({"$.metadata.managedFields"})


@pytest.fixture
def apps(kube_threaded: ThreadedKube) -> Iterator[kubernetes.client.AppsV1Api]:
    with sync_api_client(kube_threaded.kubeconfig) as api:
        yield kubernetes.client.AppsV1Api(api)


@pytest.fixture
def core(kube_threaded: ThreadedKube) -> Iterator[kubernetes.client.CoreV1Api]:
    with sync_api_client(kube_threaded.kubeconfig) as api:
        yield kubernetes.client.CoreV1Api(api)


def raw(call: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a client method and return (status, decoded JSON body) without model coercion."""
    response = call(*args, _preload_content=False, **kwargs)
    return response.status, json.loads(response.data)


def rs_list(apps: kubernetes.client.AppsV1Api) -> dict[str, Any]:
    _, body = raw(apps.list_namespaced_replica_set, NS, label_selector="app=fraud-scorer")
    return body


def by_revision(rs_list_body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {rs["metadata"]["annotations"][REVISION]: rs for rs in rs_list_body["items"]}


def assert_matches(actual: Any, sequence: int, ignore: frozenset[str] = NO_MANAGED) -> None:
    recorded = response_body(sequence)
    diffs = differences(actual, recorded, ignore=ignore)
    assert not diffs, f"differs from fixture {sequence:03d}:\n" + "\n".join(diffs)


def assert_rs_list_matches(actual: dict[str, Any], sequence: int) -> None:
    """RS lists: same revisions, each RS compared with the recorded RS of that revision."""
    recorded = by_revision(response_body(sequence))
    mine = by_revision(actual)
    assert sorted(mine) == sorted(recorded)
    assert actual["kind"] == "ReplicaSetList" and set(actual["metadata"]) == {"resourceVersion"}
    for revision, rs in mine.items():
        diffs = differences(rs, recorded[revision], ignore=frozenset({"$.metadata.managedFields"}))
        assert not diffs, f"revision {revision} vs fixture {sequence:03d}:\n" + "\n".join(diffs)
        managers = [(m["manager"], m.get("subresource")) for m in rs["metadata"]["managedFields"]]
        assert managers == [
            ("kube-controller-manager", None),
            ("kube-controller-manager", "status"),
        ]


def wait_complete(kube: ThreadedKube, generation: int) -> dict[str, Any]:
    """The rollout complete and the controller settled: the resourceVersion read next is
    still current when the undo's `test` op checks it."""
    kube.wait_rollout_complete(NS, NAME, 5.0)
    kube.wait_settled()
    deployment = kube.deployment(NS, NAME)
    assert deployment["metadata"]["generation"] == generation
    return deployment


def test_create_two_template_changes_and_undo_match_the_recording(
    kube_threaded: ThreadedKube,
    apps: kubernetes.client.AppsV1Api,
    core: kubernetes.client.CoreV1Api,
) -> None:
    # 007: namespace
    status, namespace = raw(core.create_namespace, exchange(7)["request"]["body"])
    assert status == 201
    assert_matches(namespace, 7)

    # 008: create with the recorded body; the answer carries every server default
    status, created = raw(apps.create_namespaced_deployment, NS, exchange(8)["request"]["body"])
    assert status == 201
    assert_matches(created, 8, ignore=frozenset())

    # 016: after the v1 rollout
    wait_complete(kube_threaded, 1)
    _, deployment = raw(apps.read_namespaced_deployment, NAME, NS)
    assert_matches(deployment, 16, ignore=frozenset({"$.metadata.managedFields[0].fieldsV1"}))
    assert_rs_list_matches(rs_list(apps), 18)

    # 019: two Ready pods owned by the RS, labelled with its pod-template-hash
    _, pods = raw(core.list_namespaced_pod, NS)
    recorded_pod = response_body(19)["items"][0]
    assert len(pods["items"]) == 2
    for pod in pods["items"]:
        ignore = frozenset({"$.metadata.managedFields", "$.spec.volumes[0].projected.sources"})
        diffs = differences(pod, recorded_pod, ignore=ignore)
        assert not diffs, "\n".join(diffs)
        assert (
            pod["metadata"]["labels"]["pod-template-hash"]
            == (by_revision(rs_list(apps))["1"]["metadata"]["labels"]["pod-template-hash"])
        )

    # 020: strategic merge to v2: the answer shows the new generation and the old status
    status, patched = raw(
        apps.patch_namespaced_deployment, NAME, NS, exchange(20)["request"]["body"]
    )
    assert status == 200
    assert_matches(patched, 20)
    wait_complete(kube_threaded, 2)
    _, deployment = raw(apps.read_namespaced_deployment, NAME, NS)
    assert_matches(deployment, 21)
    assert_rs_list_matches(rs_list(apps), 22)

    # 023: JSON merge patch to v3 with the whole containers list
    status, patched = raw(
        apps.patch_namespaced_deployment,
        NAME,
        NS,
        exchange(23)["request"]["body"],
        _content_type="application/merge-patch+json",
    )
    assert status == 200
    assert_matches(patched, 23)
    wait_complete(kube_threaded, 3)
    _, deployment = raw(apps.read_namespaced_deployment, NAME, NS)
    assert_matches(deployment, 24)
    assert_rs_list_matches(rs_list(apps), 25)
    assert kube_threaded.rollout_history(NS, NAME) == [1, 2, 3]

    # 037: undo to revision 2 the way the product does: JSON patch with a test op
    revision_2 = by_revision(rs_list(apps))["2"]
    template = copy.deepcopy(revision_2["spec"]["template"])
    del template["metadata"]["labels"]["pod-template-hash"]
    undo = [
        {
            "op": "test",
            "path": "/metadata/resourceVersion",
            "value": deployment["metadata"]["resourceVersion"],
        },
        {"op": "replace", "path": "/spec/template", "value": template},
        {
            "op": "replace",
            "path": "/metadata/annotations",
            "value": deployment["metadata"]["annotations"],
        },
    ]
    assert undo[1:] == [{**op, "value": op["value"]} for op in exchange(37)["request"]["body"][1:]]
    status, patched = raw(apps.patch_namespaced_deployment, NAME, NS, undo)
    assert status == 200
    assert_matches(patched, 37)

    # 038/039: the v2 ReplicaSet is re-used and becomes revision 4; 2 leaves the history
    wait_complete(kube_threaded, 4)
    deployment = kube_threaded.wait_revision(NS, NAME, 4)
    _, deployment = raw(apps.read_namespaced_deployment, NAME, NS)
    assert_matches(deployment, 38)
    after_undo = rs_list(apps)
    assert_rs_list_matches(after_undo, 39)
    assert len(after_undo["items"]) == 3
    reused = by_revision(after_undo)["4"]
    assert reused["metadata"]["name"] == revision_2["metadata"]["name"]
    assert reused["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] == "2"
    assert kube_threaded.rollout_history(NS, NAME) == [1, 3, 4]

    # kubectl rollout history --revision=4 shows the v2 template
    shown = kube_threaded.revision_template(NS, NAME, 4)
    assert shown["metadata"]["labels"]["app.kubernetes.io/version"] == "v2"
    assert shown["spec"]["containers"][0]["image"] == "registry.example/fraud-scorer:v2"


def test_managed_fields_of_create_match_the_recording(
    kube_threaded: ThreadedKube,
    apps: kubernetes.client.AppsV1Api,
    core: kubernetes.client.CoreV1Api,
) -> None:
    core.create_namespace(exchange(7)["request"]["body"])
    _, created = raw(apps.create_namespaced_deployment, NS, exchange(8)["request"]["body"])
    recorded = response_body(8)["metadata"]["managedFields"]
    mine = created["metadata"]["managedFields"]
    assert [m["fieldsV1"] for m in mine] == [m["fieldsV1"] for m in recorded]
    assert [m["manager"] for m in mine] == ["OpenAPI-Generator"]


def test_dry_run_patch_changes_nothing(
    kube_threaded: ThreadedKube,
    apps: kubernetes.client.AppsV1Api,
) -> None:
    kube_threaded.create_deployment(NS, NAME, "v1")
    kube_threaded.set_version(NS, NAME, "v2", wait=True)  # returns once the controller settled
    before = kube_threaded.deployment(NS, NAME)
    template = kube_threaded.revision_template(NS, NAME, 1)
    del template["metadata"]["labels"]["pod-template-hash"]
    status, answer = raw(
        apps.patch_namespaced_deployment,
        NAME,
        NS,
        [{"op": "replace", "path": "/spec/template", "value": template}],
        dry_run="All",
    )
    assert status == 200
    assert answer["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == "v1"
    assert answer["metadata"]["generation"] == before["metadata"]["generation"] + 1
    assert kube_threaded.deployment(NS, NAME) == before
