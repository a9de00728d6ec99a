"""Permissions and admission: `deny()` as RBAC (101-103), `admission_policy()` (108), dry runs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import kubernetes
import pytest
from kubernetes.aio import client

from tests.standins.kube.clients import aio_api_client, sync_api_client
from tests.standins.kube.recorded import exchange, response_body
from tests.standins.kube.server import KubeStandIn
from tests.standins.kube.threaded import ThreadedKube

NS, NAME = "ml-prod", "fraud-scorer"
LIMITED = "system:serviceaccount:ml-prod:limited"
VERSION_LABEL = "app.kubernetes.io/version"


@pytest.fixture
async def api(kube: KubeStandIn) -> AsyncIterator[client.ApiClient]:
    api_client = await aio_api_client(kube.kubeconfig)
    async with api_client:
        yield api_client


@pytest.fixture
async def seeded(kube: KubeStandIn) -> dict[str, Any]:
    return await kube.create_deployment(NS, NAME, "v1")


async def raw(call: Any, *args: Any, **kwargs: Any) -> tuple[int, Any]:
    """(status, JSON body) of a client call, errors included, without model coercion."""
    method = getattr(call.__self__, f"{call.__name__}_without_preload_content")
    response = await method(*args, **kwargs)
    async with response:
        return response.status, await response.json()


def review(verb: str, resource: str = "deployments", **extra: str) -> dict[str, Any]:
    attributes = {"group": "apps", "namespace": NS, "resource": resource, "verb": verb, **extra}
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }


def rollback_patch(kube: KubeStandIn) -> dict[str, Any]:
    """103's merge patch: back to v1, with our annotations and the current resourceVersion."""
    patch = exchange(103)["request"]["body"]
    patch["metadata"]["resourceVersion"] = kube.deployment(NS, NAME)["metadata"]["resourceVersion"]
    return patch


async def test_access_review_answers_from_the_denials(
    api: client.ApiClient, kube: KubeStandIn
) -> None:
    kube.user = LIMITED
    denial = kube.deny("patch", "deployments", NS)
    authorization = client.AuthorizationV1Api(api)

    status, denied = await raw(
        authorization.create_self_subject_access_review, review("patch", name=NAME)
    )
    assert status == 201
    assert denied["status"] == {"allowed": False} == response_body(101)["status"]
    assert denied["spec"] == response_body(101)["spec"]
    assert list(denied["metadata"]) == ["managedFields"]

    _, allowed = await raw(authorization.create_self_subject_access_review, review("get"))
    assert allowed["status"]["allowed"] is True
    assert allowed["status"]["reason"] == (
        'RBAC: allowed by RoleBinding "limited/ml-prod" of Role "limited" '
        'to ServiceAccount "limited/ml-prod"'
    )
    # another namespace, or the scale subresource, is another permission
    _, elsewhere = await raw(
        authorization.create_self_subject_access_review, review("patch", namespace="ml-staging")
    )
    _, scale = await raw(
        authorization.create_self_subject_access_review, review("patch", subresource="scale")
    )
    assert elsewhere["status"]["allowed"] is True and scale["status"]["allowed"] is True

    kube.allow(denial)
    _, again = await raw(authorization.create_self_subject_access_review, review("patch"))
    assert again["status"]["allowed"] is True


async def test_a_denied_verb_is_refused_with_the_recorded_403(
    api: client.ApiClient, seeded: dict[str, Any], kube: KubeStandIn
) -> None:
    kube.user = LIMITED
    denial = kube.deny("patch", "deployments", NS)
    apps = client.AppsV1Api(api)
    status, body = await raw(
        apps.patch_namespaced_deployment,
        NAME,
        NS,
        rollback_patch(kube),
        dry_run="All",
        _content_type="application/merge-patch+json",
    )
    assert (status, body) == (403, response_body(103))
    assert denial.hits == 1
    status, _ = await raw(apps.read_namespaced_deployment, NAME, NS)
    assert status == 200
    assert kube.deployment(NS, NAME)["metadata"]["generation"] == seeded["metadata"]["generation"]


async def test_denials_name_the_subresource_and_leave_seeding_alone(
    api: client.ApiClient, seeded: dict[str, Any], kube: KubeStandIn
) -> None:
    kube.deny("patch", "deployments/scale")
    kube.deny("*", "services", NS)
    apps = client.AppsV1Api(api)
    status, body = await raw(
        apps.patch_namespaced_deployment_scale, NAME, NS, {"spec": {"replicas": 3}}
    )
    assert status == 403
    assert body["message"] == (
        'deployments.apps "fraud-scorer" is forbidden: User '
        '"system:serviceaccount:ml-prod:rollback-receiver" cannot patch resource '
        '"deployments/scale" in API group "apps" in the namespace "ml-prod"'
    )
    assert body["details"] == {"name": NAME, "group": "apps", "kind": "deployments"}
    # the whole Deployment is another resource; seeding methods are not requests
    status, _ = await raw(
        apps.patch_namespaced_deployment, NAME, NS, {"metadata": {"annotations": {"a": "b"}}}
    )
    assert status == 200
    await kube.create_service(NS, NAME, {"app": NAME})
    status, body = await raw(client.CoreV1Api(api).list_namespaced_service, NS)
    assert status == 403
    assert body["message"] == (
        'services is forbidden: User "system:serviceaccount:ml-prod:rollback-receiver" '
        'cannot list resource "services" in API group "" in the namespace "ml-prod"'
    )
    kube.allow()
    status, _ = await raw(client.CoreV1Api(api).list_namespaced_service, NS)
    assert status == 200


async def test_dry_run_patch_is_validated_and_answers_the_would_be_object(
    api: client.ApiClient, seeded: dict[str, Any], kube: KubeStandIn
) -> None:
    apps = client.AppsV1Api(api)
    await kube.set_version(NS, NAME, "v2", wait=True)
    before = kube.deployment(NS, NAME)
    status, answer = await raw(
        apps.patch_namespaced_deployment,
        NAME,
        NS,
        rollback_patch(kube),
        dry_run="All",
        _content_type="application/merge-patch+json",
    )
    assert status == 200
    # 104: the template and annotations applied, generation +1, same RV, old status
    assert answer["spec"]["template"]["metadata"]["labels"][VERSION_LABEL] == "v1"
    assert answer["metadata"]["annotations"]["rollback-receiver.io/incident"] == "inc-0001"
    assert answer["metadata"]["generation"] == before["metadata"]["generation"] + 1
    assert answer["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert answer["status"] == before["status"]
    assert kube.deployment(NS, NAME) == before

    status, body = await raw(
        apps.patch_namespaced_deployment,
        NAME,
        NS,
        {"spec": {"replicas": -1}},
        dry_run="All",
    )
    assert (status, body) == (422, response_body(52))


async def test_dry_run_create_is_validated_and_stores_nothing(
    api: client.ApiClient, kube: KubeStandIn
) -> None:
    await kube.create_namespace(NS)
    core = client.CoreV1Api(api)
    body = {"metadata": {"name": "rollback-receiver-state"}, "data": {"paused": "false"}}
    status, created = await raw(core.create_namespaced_config_map, NS, body, dry_run="All")
    assert status == 201
    assert created["data"] == {"paused": "false"} and created["metadata"]["uid"]
    assert kube.get("configmaps", NS, "rollback-receiver-state") is None
    status, refused = await raw(
        core.create_namespaced_config_map,
        NS,
        {"metadata": {"name": "Bad_Name"}},
        dry_run="All",
    )
    assert status == 422
    assert refused["details"]["causes"][0]["field"] == "metadata.name"


async def test_admission_policy_refuses_the_write_with_the_recorded_422(
    api: client.ApiClient, seeded: dict[str, Any], kube: KubeStandIn
) -> None:
    await kube.set_version(NS, NAME, "v2", wait=True)
    seen: list[dict[str, Any]] = []

    def serves_v1(deployment: dict[str, Any]) -> bool:
        seen.append(deployment)
        return deployment["spec"]["template"]["metadata"]["labels"][VERSION_LABEL] == "v1"

    policy = kube.admission_policy(
        "deny-version-v1",
        "version v1 is blocked in ml-prod (known bad)",
        serves_v1,
        binding="deny-version-v1-ml-prod",
        namespace=NS,
    )
    apps = client.AppsV1Api(api)
    before = kube.deployment(NS, NAME)
    patch = rollback_patch(kube)
    for dry_run in ("All", None):
        status, body = await raw(
            apps.patch_namespaced_deployment,
            NAME,
            NS,
            patch,
            _content_type="application/merge-patch+json",
            **({"dry_run": dry_run} if dry_run else {}),
        )
        assert (status, body) == (422, response_body(108))
    assert policy.hits == 2
    assert seen[-1]["kind"] == "Deployment" and seen[-1]["metadata"]["name"] == NAME
    assert kube.deployment(NS, NAME) == before
    # other versions pass; without the binding v1 passes too
    status, _ = await raw(
        apps.patch_namespaced_deployment,
        NAME,
        NS,
        {"spec": {"template": {"metadata": {"labels": {VERSION_LABEL: "v3"}}}}},
    )
    assert status == 200
    kube.remove_admission_policy(policy)
    await kube.wait_settled()
    status, patched = await raw(
        apps.patch_namespaced_deployment,
        NAME,
        NS,
        rollback_patch(kube),
        _content_type="application/merge-patch+json",
    )
    assert status == 200
    assert patched["spec"]["template"]["metadata"]["labels"][VERSION_LABEL] == "v1"


async def test_admission_policy_on_create(api: client.ApiClient, kube: KubeStandIn) -> None:
    await kube.create_namespace(NS)
    kube.admission_policy(
        "no-latest",
        "images must be pinned",
        lambda d: d["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":latest"),
        operations=("CREATE",),
    )
    body = exchange(8)["request"]["body"]
    body["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example/x:latest"
    status, refused = await raw(client.AppsV1Api(api).create_namespaced_deployment, NS, body)
    assert status == 422
    assert refused["message"] == (
        "deployments.apps \"fraud-scorer\" is forbidden: ValidatingAdmissionPolicy 'no-latest' "
        "with binding 'no-latest' denied request: images must be pinned"
    )
    assert kube.get("deployments", NS, NAME) is None


def test_knobs_set_on_the_threaded_stand_in_reach_the_server(kube_threaded: ThreadedKube) -> None:
    kube_threaded.user = LIMITED
    kube_threaded.deny("get", "deployments", NS)
    kube_threaded.create_namespace(NS)
    with (
        sync_api_client(kube_threaded.kubeconfig) as api,
        pytest.raises(kubernetes.client.ApiException) as raised,
    ):
        kubernetes.client.AppsV1Api(api).read_namespaced_deployment(NAME, NS)
    assert kube_threaded.server.user == LIMITED
    assert raised.value.status == 403
    assert json.loads(raised.value.body)["message"].startswith(
        f'deployments.apps "{NAME}" is forbidden: User "{LIMITED}" cannot get resource'
    )
