"""ConfigMaps (093-096), Leases (127-129), and the API server's validation of names and Events."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from kubernetes.aio import client

from tests.standins.kube.clients import aio_api_client
from tests.standins.kube.recorded import differences, exchange, response_body
from tests.standins.kube.server import KubeStandIn

NS, NAME = "ml-prod", "fraud-scorer"
STATE = "rollback-receiver-state"
LEASE = "rollback-receiver-readiness"
NO_MANAGED = frozenset({"$.metadata.managedFields"})
DNS1123_SUBDOMAIN = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)


@pytest.fixture
async def api(kube: KubeStandIn) -> AsyncIterator[client.ApiClient]:
    api_client = await aio_api_client(kube.kubeconfig)
    async with api_client:
        yield api_client


async def raw(call: Any, *args: Any, **kwargs: Any) -> tuple[int, Any]:
    """(status, JSON body) of a client call, errors included, without model coercion."""
    method = getattr(call.__self__, f"{call.__name__}_without_preload_content")
    response = await method(*args, **kwargs)
    async with response:
        return response.status, await response.json()


# ---------------------------------------------------------------- ConfigMaps


async def test_configmap_create_get_patch_and_conflicts(
    api: client.ApiClient, kube: KubeStandIn
) -> None:
    await kube.create_namespace(NS)
    core = client.CoreV1Api(api)
    status, body = await raw(core.read_namespaced_config_map, STATE, NS)
    assert status == 404
    assert body["message"] == f'configmaps "{STATE}" not found'
    assert body["details"] == {"name": STATE, "kind": "configmaps"}

    status, created = await raw(
        core.create_namespaced_config_map, NS, exchange(93)["request"]["body"]
    )
    assert status == 201
    assert not differences(created, response_body(93))  # managedFields included
    assert "data" not in created
    _, read = await raw(core.read_namespaced_config_map, STATE, NS)
    assert not differences(read, response_body(94))

    status, again = await raw(
        core.create_namespaced_config_map, NS, exchange(93)["request"]["body"]
    )
    assert status == 409
    assert again["reason"] == "AlreadyExists"
    assert again["message"] == f'configmaps "{STATE}" already exists'

    rv = created["metadata"]["resourceVersion"]
    patch = exchange(95)["request"]["body"]
    patch["metadata"]["resourceVersion"] = rv
    status, patched = await raw(
        core.patch_namespaced_config_map,
        STATE,
        NS,
        patch,
        _content_type="application/merge-patch+json",
    )
    assert status == 200
    assert not differences(patched, response_body(95))  # the manager keeps both annotations
    stale = exchange(96)["request"]["body"]
    stale["metadata"]["resourceVersion"] = rv
    status, conflict = await raw(
        core.patch_namespaced_config_map,
        STATE,
        NS,
        stale,
        _content_type="application/merge-patch+json",
    )
    assert (status, conflict) == (409, response_body(96))
    assert (
        "rollback-receiver.io/paused"
        in kube.get("configmaps", NS, STATE)["metadata"]["annotations"]
    )


async def test_configmap_put_with_data_and_seeding(
    api: client.ApiClient, kube: KubeStandIn
) -> None:
    seeded = await kube.create_configmap(NS, STATE, {"paused": "false"}, labels={"app": "x"})
    assert list(seeded) == ["kind", "apiVersion", "metadata", "data"]
    core = client.CoreV1Api(api)
    seeded["data"]["paused"] = "true"
    status, replaced = await raw(core.replace_namespaced_config_map, STATE, NS, seeded)
    assert status == 200
    assert replaced["data"] == {"paused": "true"}
    assert int(replaced["metadata"]["resourceVersion"]) > int(seeded["metadata"]["resourceVersion"])
    status, conflict = await raw(core.replace_namespaced_config_map, STATE, NS, seeded)
    assert status == 409 and conflict["reason"] == "Conflict"
    status, invalid = await raw(
        core.patch_namespaced_config_map, STATE, NS, {"data": {"no spaces": "x"}}
    )
    assert status == 422
    assert invalid["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": 'Invalid value: "no spaces": a valid config key must consist of '
            "alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or "
            "'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
            "field": "data[no spaces]",
        }
    ]


# ---------------------------------------------------------------- Leases


async def test_lease_create_and_replace_with_resource_version_preconditions(
    api: client.ApiClient, kube: KubeStandIn
) -> None:
    await kube.create_namespace(NS)
    leases = client.CoordinationV1Api(api)
    status, created = await raw(
        leases.create_namespaced_lease, NS, exchange(127)["request"]["body"]
    )
    assert status == 201
    assert not differences(created, response_body(127), ignore=NO_MANAGED)
    assert created["spec"]["renewTime"] == "2026-12-01T00:12:12.719115Z"  # MicroTime

    renew = exchange(128)["request"]["body"]
    renew["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
    status, renewed = await raw(leases.replace_namespaced_lease, LEASE, NS, renew)
    assert status == 200
    assert not differences(renewed, response_body(128), ignore=NO_MANAGED)

    takeover = exchange(129)["request"]["body"]
    takeover["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
    status, conflict = await raw(leases.replace_namespaced_lease, LEASE, NS, takeover)
    assert (status, conflict) == (409, response_body(129))
    assert kube.get("leases", NS, LEASE)["spec"]["holderIdentity"] == "receiver-0"

    # a Lease refuses an update without a resourceVersion (no unconditional update)
    del takeover["metadata"]["resourceVersion"]
    status, refused = await raw(leases.replace_namespaced_lease, LEASE, NS, takeover)
    assert status == 422
    assert refused["message"] == (
        f'Lease.coordination.k8s.io "{LEASE}" is invalid: metadata.resourceVersion: '
        "Invalid value: 0x0: must be specified for an update"
    )


async def test_seeded_lease_and_its_validation(api: client.ApiClient, kube: KubeStandIn) -> None:
    acquired = dt.datetime(2026, 12, 1, 0, 12, 12, 719115, tzinfo=dt.UTC).isoformat()
    lease = await kube.create_lease(NS, LEASE, "receiver-1", acquired=acquired)
    assert lease["spec"] == {
        "holderIdentity": "receiver-1",
        "leaseDurationSeconds": 30,
        "acquireTime": "2026-12-01T00:12:12.719115Z",
        "renewTime": "2026-12-01T00:12:12.719115Z",
        "leaseTransitions": 0,
    }
    status, refused = await raw(
        client.CoordinationV1Api(api).patch_namespaced_lease,
        LEASE,
        NS,
        {"spec": {"leaseDurationSeconds": 0}},
    )
    assert status == 422
    assert refused["message"] == (
        f'Lease.coordination.k8s.io "{LEASE}" is invalid: spec.leaseDurationSeconds: '
        "Invalid value: 0: must be greater than 0"
    )


# ---------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("plural", "name", "message"),
    [
        (
            "deployments",
            "Fraud_Scorer",
            f'Deployment.apps "Fraud_Scorer" is invalid: metadata.name: Invalid value: '
            f'"Fraud_Scorer": {DNS1123_SUBDOMAIN}',
        ),
        (
            "services",
            "1ranker",
            'Service "1ranker" is invalid: metadata.name: Invalid value: "1ranker": a DNS-1035 '
            "label must consist of lower case alphanumeric characters or '-', start with an "
            "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
            "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
        ),
        (
            "configmaps",
            "state.",
            f'ConfigMap "state." is invalid: metadata.name: Invalid value: "state.": '
            f"{DNS1123_SUBDOMAIN}",
        ),
    ],
)
async def test_names_follow_each_kinds_rule(
    kube: KubeStandIn, plural: str, name: str, message: str
) -> None:
    await kube.create_namespace(NS)
    bodies: dict[str, dict[str, Any]] = {
        "deployments": exchange(8)["request"]["body"],
        "services": exchange(57)["request"]["body"],
        "configmaps": {"metadata": {}},
    }
    body = bodies[plural]
    body["metadata"]["name"] = name
    with pytest.raises(ValueError, match="is invalid") as raised:
        await kube.create(plural, NS, body)
    assert str(raised.value) == message
    assert kube.get(plural, NS, name) is None


async def test_namespace_names_are_dns_labels_and_a_name_is_required(kube: KubeStandIn) -> None:
    with pytest.raises(ValueError) as raised:
        await kube.create("namespaces", None, {"metadata": {"name": "ml.prod"}})
    assert str(raised.value).startswith(
        'Namespace "ml.prod" is invalid: metadata.name: Invalid value: "ml.prod": a lowercase '
        "RFC 1123 label must consist of"
    )
    with pytest.raises(ValueError) as raised:
        await kube.create("configmaps", "default", {"data": {}})
    assert str(raised.value) == (
        'ConfigMap "" is invalid: metadata.name: Required value: name or generateName is required'
    )


async def test_generate_name_may_end_with_a_dash_not_a_dot(kube: KubeStandIn) -> None:
    made = await kube.create("configmaps", "default", {"metadata": {"generateName": "state-"}})
    assert made["metadata"]["name"].startswith("state-")
    assert len(made["metadata"]["name"]) == len("state-") + 5
    assert made["metadata"]["generateName"] == "state-"
    with pytest.raises(ValueError) as raised:
        await kube.create("configmaps", "default", {"metadata": {"generateName": "state."}})
    assert 'metadata.generateName: Invalid value: "state."' in str(raised.value)


async def test_label_and_annotation_keys_and_values_are_checked(
    api: client.ApiClient, kube: KubeStandIn
) -> None:
    await kube.create_deployment(NS, NAME, "v1")
    status, body = await raw(
        client.AppsV1Api(api).patch_namespaced_deployment,
        NAME,
        NS,
        {"metadata": {"labels": {"slot": "blue green"}, "annotations": {"a/b/c": "x"}}},
    )
    assert status == 422
    causes = [(c["field"], c["message"]) for c in body["details"]["causes"]]
    assert [field for field, _ in causes] == ["metadata.labels", "metadata.annotations"]
    assert causes[0][1].startswith('Invalid value: "blue green": a valid label must be')
    assert causes[1][1].startswith('Invalid value: "a/b/c": a qualified name must consist')
    assert "slot" not in kube.deployment(NS, NAME)["metadata"]["labels"]


# ---------------------------------------------------------------- Events (088-092)


async def test_events_v1_refusals_read_as_recorded(
    api: client.ApiClient, kube: KubeStandIn
) -> None:
    await kube.create_deployment(NS, NAME, "v1")
    events = client.EventsV1Api(api)
    status, body = await raw(events.create_namespaced_event, NS, exchange(88)["request"]["body"])
    generated = body["details"]["name"]
    assert status == 422 and generated.startswith("fraud-scorer.") and len(generated) == 18
    recorded = response_body(88)
    assert body["message"] == recorded["message"].replace("fraud-scorer.krg5x", generated)
    assert body["details"]["causes"] == recorded["details"]["causes"]
    assert kube.events(NS, reason="ModelRolledBack") == []
    status, body = await raw(events.create_namespaced_event, NS, exchange(90)["request"]["body"])
    assert (status, body) == (422, response_body(90))
    # without eventTime the client's own model check refuses first; 091 went around it
    async with aiohttp.ClientSession() as session:
        response = await session.post(
            f"{kube.url}/apis/events.k8s.io/v1/namespaces/{NS}/events",
            json=exchange(91)["request"]["body"],
        )
        assert (response.status, await response.json()) == (422, response_body(91))
    status, created = await raw(events.create_namespaced_event, NS, exchange(89)["request"]["body"])
    assert status == 201
    assert not differences(created, response_body(89), ignore=NO_MANAGED)


async def test_events_v1_wants_the_deprecated_fields_unset(
    api: client.ApiClient, kube: KubeStandIn
) -> None:
    await kube.create_namespace(NS)
    body = exchange(89)["request"]["body"]
    body["type"] = "Info"
    body["deprecatedCount"] = 3
    body["action"] = ""
    status, refused = await raw(client.EventsV1Api(api).create_namespaced_event, NS, body)
    assert status == 422
    assert [(c["field"], c["message"]) for c in refused["details"]["causes"]] == [
        ("action", "Required value"),
        ("type", 'Invalid value: "": has invalid value: Info'),
        ("count", 'Invalid value: "": needs to be unset'),
    ]


async def test_core_v1_events_keep_the_legacy_rules(
    api: client.ApiClient, kube: KubeStandIn
) -> None:
    await kube.create_namespace(NS)
    core = client.CoreV1Api(api)
    status, created = await raw(core.create_namespaced_event, NS, exchange(92)["request"]["body"])
    assert status == 201
    assert not differences(created, response_body(92), ignore=NO_MANAGED)
    elsewhere = exchange(92)["request"]["body"]
    elsewhere["metadata"]["name"] = "fraud-scorer.0000000000000001"
    elsewhere["involvedObject"]["namespace"] = "ml-staging"
    status, refused = await raw(core.create_namespaced_event, NS, elsewhere)
    assert status == 422
    assert refused["message"] == (
        'Event "fraud-scorer.0000000000000001" is invalid: involvedObject.namespace: '
        'Invalid value: "ml-staging": does not match event.namespace'
    )
