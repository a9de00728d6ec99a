"""Every recorded kube-apiserver exchange, replayed against the stand-in (fixtures 001-130).

The two recorded runs are replayed in their recorded order, each against a fresh stand-in:
the same requests (method, path and query, headers, body), sent over HTTP, with the waits
the recording made between them (rollouts finishing, the controller catching up). Only
resourceVersions are translated: a recorded one maps to the stand-in's answer to the same
request, and the few that came from unrecorded setup are the object's current (or an older)
resourceVersion. Each answer is compared with the recorded one: status code, and the
fields that matter (a Status's kind, reason, code, message and details in full; an object's
keys and values except identities and clocks; a list's items; a watch's events).

Exchanges that cannot be replayed meaningfully are listed in `NOT_REPLAYED` with the reason;
`test_every_recorded_exchange_is_replayed_or_listed` fails when a new fixture is neither.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from multidict import CIMultiDict

from tests.standins.kube.recorded import (
    differences,
    exchange,
    json_summary,
    protobuf_summary,
    sequences,
)
from tests.standins.kube.server import KubeStandIn

NS = "ml-prod"
REVISION = "deployment.kubernetes.io/revision"
VERSION_LABEL = "app.kubernetes.io/version"
FIRST_RUN = range(1, 88)
SECOND_RUN = range(88, 131)

NOT_REPLAYED: dict[int, str] = {
    11: "kubectl's aggregated discovery (apidiscovery.k8s.io/v2 APIGroupDiscoveryList): the "
    "stand-in serves the unaggregated documents (replayed in 002-006), which kubectl falls "
    "back to (test_kube_kubectl runs kubectl against it)",
    12: "kubectl's aggregated discovery of /apis, as 011",
    53: "creates the ServiceAccount 'nobody' for the permission checks: the stand-in has no "
    "ServiceAccounts; who is refused is set with kube.user and kube.deny() (055, 056 replayed)",
    54: "TokenRequest: a signed ServiceAccount token from the API server's issuer, which the "
    "stand-in does not have (kube.require_token() sets the one token it accepts)",
    86: "kubectl get asks for a server-side meta.k8s.io Table; the stand-in answers the object "
    "and kubectl prints it itself",
    97: "creates the ServiceAccount 'limited', as 053 (101-103 are replayed with kube.deny())",
    98: "creates an RBAC Role: the stand-in does not evaluate Roles; kube.deny() takes the "
    "permission away instead (101-103 replayed)",
    99: "creates an RBAC RoleBinding, as 098",
    100: "TokenRequest for 'limited', as 054",
    106: "creates a ValidatingAdmissionPolicy with a CEL expression: the stand-in does not "
    "evaluate CEL; kube.admission_policy() binds a Python check instead (108 replayed)",
    107: "creates the ValidatingAdmissionPolicyBinding of 106, as 106",
    109: "deletes the binding of 107 (kube.remove_admission_policy() in the replay of 108)",
    110: "deletes the policy of 106, as 109",
}

# Response headers the API server sends on every answer (README of the fixtures).
COMMON_HEADERS = (
    "Audit-Id",
    "Cache-Control",
    "Content-Type",
    "X-Kubernetes-Pf-Flowschema-Uid",
    "X-Kubernetes-Pf-Prioritylevel-Uid",
)
DROPPED_REQUEST_HEADERS = {
    "host",
    "authorization",
    "content-length",
    "accept-encoding",
    "connection",
}
NO_MANAGED = frozenset({"$.metadata.managedFields"})
SERVICE = NO_MANAGED | {"$.spec.clusterIPs"}  # allocated addresses (clusterIP is volatile)
# aiohttp would add these; the recorded clients sent their own or none (a POST without
# Content-Type is JSON to the API server, fixture 007)
AUTO_HEADERS = frozenset({"Accept", "Accept-Encoding", "Content-Type", "User-Agent"})


def test_every_recorded_exchange_is_replayed_or_listed() -> None:
    recorded = set(sequences())
    assert set(FIRST_RUN) | set(SECOND_RUN) == recorded, "a fixture outside both recorded runs"
    assert set(NOT_REPLAYED) <= recorded
    # every other exchange is replayed, with its entry in CHECKS or the default check
    assert not set(CHECKS) & set(NOT_REPLAYED)
    assert len(recorded) == 130


# ==================================================================== the replayer


@dataclass
class Answer:
    status: int
    headers: CIMultiDict[str]
    text: str

    @property
    def body(self) -> Any:
        return json.loads(self.text) if self.text else None


Action = Callable[["Replayer"], Awaitable[None]]
Compare = Callable[["Replayer", int, Answer], list[str]]


@dataclass(frozen=True)
class Check:
    """How one exchange is replayed: waits before, resourceVersion rewrite, comparison."""

    before: tuple[Action, ...] = ()
    after: tuple[Action, ...] = ()
    rv: str = "map"  # "map": through earlier answers; "current"/"stale": of the target object
    compare: Compare | None = None
    ignore: frozenset[str] = NO_MANAGED
    background: Callable[[list[dict[str, Any]]], bool] | None = None  # a watch: stop when True
    joined_after: int | None = None  # the background watch is read until this exchange is sent


@dataclass
class Replayer:
    kube: KubeStandIn
    session: aiohttp.ClientSession
    rv_map: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------ requests

    def _target(self, path: str) -> tuple[str, str | None, str] | None:
        """(plural, namespace, name) of an object path, for the current/stale rewrite."""
        match = re.match(
            r"^/(?:api/v1|apis/([^/]+)/v1)(?:/namespaces/([^/]+))?/([^/]+)/([^/?]+)", path
        )
        if not match:
            return None
        return match.group(3), match.group(2), match.group(4)

    def _object_rv(self, path: str, which: str) -> str:
        target = self._target(path)
        assert target is not None, f"no object in {path}"
        plural, namespace, name = target
        obj = self.kube.get(plural, namespace, name)
        assert obj is not None, f"{plural} {namespace}/{name} is not there to take its RV"
        current = obj["metadata"]["resourceVersion"]
        if which == "current":
            return current
        earlier = [
            str(change.rv)
            for change in self.kube.store.history
            if change.obj["metadata"].get("name") == name
            and change.obj["metadata"].get("namespace", "") == (namespace or "")
            and str(change.rv) != current
        ]
        assert earlier, f"{plural} {namespace}/{name} has no older resourceVersion"
        return earlier[0]

    def _rewrite_rv(self, value: str, path: str, mode: str) -> str:
        if mode == "map":
            return self.rv_map.get(value, value)
        return self._object_rv(path, mode)

    def request(self, sequence: int, mode: str) -> tuple[str, str, dict[str, str], bytes | None]:
        recorded = exchange(sequence)["request"]
        path = re.sub(
            r"([?&]resourceVersion=)(\d+)",
            lambda m: m.group(1) + self.rv_map.get(m.group(2), m.group(2)),
            recorded["path"],
        )
        headers = {
            k: v for k, v in recorded["headers"].items() if k.lower() not in DROPPED_REQUEST_HEADERS
        }
        body = recorded["body"]
        if isinstance(body, dict) and (body.get("metadata") or {}).get("resourceVersion"):
            body["metadata"]["resourceVersion"] = self._rewrite_rv(
                body["metadata"]["resourceVersion"], path, mode
            )
        elif isinstance(body, list):
            for op in body:
                if op.get("path") == "/metadata/resourceVersion" and op.get("op") == "test":
                    op["value"] = self._rewrite_rv(op["value"], path, mode)
        data = None if body is None else json.dumps(body).encode()
        return recorded["method"], path, headers, data

    async def send(self, sequence: int, mode: str = "map") -> Answer:
        method, path, headers, data = self.request(sequence, mode)
        async with self.session.request(
            method, self.kube.url + path, headers=headers, data=data, skip_auto_headers=AUTO_HEADERS
        ) as response:
            answer = Answer(response.status, CIMultiDict(response.headers), await response.text())
        self.learn(sequence, answer)
        return answer

    def learn(self, sequence: int, answer: Answer) -> None:
        """Map the recorded answer's resourceVersion to the stand-in's, for later requests."""
        recorded = exchange(sequence)["response"].get("body")
        if not isinstance(recorded, dict) or not answer.text.startswith("{"):
            return
        mine = answer.body
        recorded_rv = (recorded.get("metadata") or {}).get("resourceVersion")
        my_rv = (mine.get("metadata") or {}).get("resourceVersion")
        if recorded_rv and my_rv:
            self.rv_map[recorded_rv] = my_rv

    async def watch(
        self, sequence: int, until: Callable[[list[dict[str, Any]]], bool]
    ) -> tuple[Answer, list[dict[str, Any]]]:
        """Read a watch line by line until `until(events)` or the stream ends, then hang up."""
        method, path, headers, _ = self.request(sequence, "map")
        events: list[dict[str, Any]] = []
        async with self.session.request(
            method, self.kube.url + path, headers=headers, skip_auto_headers=AUTO_HEADERS
        ) as response:
            while not until(events):
                line = await response.content.readline()
                if not line:
                    break
                events.append(json.loads(line))
            answer = Answer(response.status, CIMultiDict(response.headers), "")
        return answer, events


# ==================================================================== actions


def wait_complete(name: str, generation: int) -> Action:
    async def action(replay: Replayer) -> None:
        def done() -> bool:
            d = replay.kube.get("deployments", NS, name)
            return bool(d) and d["metadata"]["generation"] == generation and complete(d)

        await replay.kube.wait_for(done, 10.0, f"{name} generation {generation} rolled out")
        await replay.kube.wait_settled()

    return action


def wait_observed(name: str, generation: int) -> Action:
    async def action(replay: Replayer) -> None:
        def observed() -> bool:
            d = replay.kube.get("deployments", NS, name)
            return bool(d) and d["status"].get("observedGeneration") == generation

        await replay.kube.wait_for(observed, 10.0, f"{name} generation {generation} observed")
        await replay.kube.wait_settled()

    return action


async def settle(replay: Replayer) -> None:
    await replay.kube.wait_settled()


def freeze(name: str) -> Action:
    async def action(replay: Replayer) -> None:
        replay.kube.freeze(NS, name)

    return action


def unfreeze(name: str) -> Action:
    async def action(replay: Replayer) -> None:
        replay.kube.unfreeze(NS, name)

    return action


def as_user(user: str, *denied: tuple[str, str]) -> Action:
    async def action(replay: Replayer) -> None:
        replay.kube.user = user
        for verb, resource in denied:
            replay.kube.deny(verb, resource, NS)

    return action


async def as_admin(replay: Replayer) -> None:
    replay.kube.allow()
    replay.kube.user = "kubernetes-admin"


async def bind_version_policy(replay: Replayer) -> None:
    """106/107's policy: CEL `...labels['app.kubernetes.io/version'] != 'v1'` as Python."""

    def serves_v1(deployment: dict[str, Any]) -> bool:
        labels = deployment["spec"]["template"].get("metadata", {}).get("labels") or {}
        return labels.get(VERSION_LABEL) == "v1"

    replay.kube.admission_policy(
        "deny-version-v1",
        "version v1 is blocked in ml-prod (known bad)",
        serves_v1,
        binding="deny-version-v1-ml-prod",
        namespace=NS,
    )


async def unbind_policies(replay: Replayer) -> None:
    replay.kube.remove_admission_policy()


def send(sequence: int) -> Action:
    """An unrecorded setup request of the second run, sent as the recorded one was."""

    async def action(replay: Replayer) -> None:
        answer = await replay.send(sequence)
        assert answer.status in (200, 201), f"setup request {sequence:03d}: {answer.text}"

    return action


# ==================================================================== comparisons


def complete(d: dict[str, Any]) -> bool:
    status, replicas = d.get("status") or {}, d["spec"].get("replicas", 1)
    return (
        status.get("observedGeneration") == d["metadata"]["generation"]
        and status.get("updatedReplicas", 0) == replicas
        and status.get("replicas", 0) == replicas
        and status.get("availableReplicas", 0) == replicas
        and progressing(d) == "NewReplicaSetAvailable"
    )


def progressing(d: dict[str, Any]) -> str | None:
    for condition in (d.get("status") or {}).get("conditions") or []:
        if condition["type"] == "Progressing":
            return condition["reason"]
    return None


def managers(obj: dict[str, Any]) -> list[tuple[str, str, str]]:
    """managedFields entries as (manager, operation, subresource), order aside (clock seconds)."""
    entries = (obj.get("metadata") or {}).get("managedFields") or []
    return sorted((e["manager"], e["operation"], e.get("subresource") or "") for e in entries)


def compare_object(actual: Any, recorded: Any, ignore: frozenset[str]) -> list[str]:
    found = differences(actual, recorded, ignore=ignore)
    if (
        isinstance(actual, dict)
        and isinstance(recorded, dict)
        and "$.metadata.managedFields" in ignore
        and managers(actual) != managers(recorded)
    ):
        found.append(f"managers {managers(actual)} vs recorded {managers(recorded)}")
    return found


def compare_default(replay: Replayer, sequence: int, answer: Answer) -> list[str]:
    recorded = exchange(sequence)["response"]
    check = CHECKS.get(sequence, Check())
    found = []
    if answer.status != recorded["status"]:
        found.append(f"status {answer.status} vs recorded {recorded['status']}: {answer.text}")
        return found
    headers = recorded["headers"]
    for name in COMMON_HEADERS:
        if name in headers and name not in answer.headers:
            found.append(f"header {name} missing")
    if "bodyBase64" in recorded:
        # kubectl asked for protobuf; the stand-in answers JSON to everyone
        mine, theirs = json_summary(answer.body), protobuf_summary(recorded["bodyBase64"])
        for summary in (mine, theirs):
            if "items" in summary:
                summary["items"].sort(key=lambda i: (i.get("annotations") or {}).get(REVISION, ""))
        return found + differences(mine, theirs)
    if recorded["headers"].get("Content-Type") != answer.headers.get("Content-Type"):
        found.append(f"Content-Type {answer.headers.get('Content-Type')}")
    body = recorded["body"]
    if isinstance(body, dict) and body.get("kind") == "Status":
        if answer.body != body:
            found.append(f"Status {answer.text} vs recorded {json.dumps(body)}")
        return found
    if isinstance(body, dict) and "items" in body:
        return found + compare_list(answer.body, body, check.ignore)
    return found + compare_object(answer.body, body, check.ignore)


def item_key(item: dict[str, Any]) -> str:
    """ReplicaSets by revision (their names hash the template differently), others by name."""
    annotations = item["metadata"].get("annotations") or {}
    return annotations.get(REVISION) or item["metadata"]["name"]


def compare_list(
    actual: dict[str, Any], recorded: dict[str, Any], ignore: frozenset[str]
) -> list[str]:
    found = differences(
        {k: v for k, v in actual.items() if k != "items"},
        {k: v for k, v in recorded.items() if k != "items"},
    )
    mine = {item_key(i): i for i in actual["items"]}
    theirs = {item_key(i): i for i in recorded["items"]}
    if sorted(mine) != sorted(theirs):
        return [*found, f"items {sorted(mine)} vs recorded {sorted(theirs)}"]
    for key in theirs:
        found.extend(f"[{key}] {d}" for d in compare_object(mine[key], theirs[key], ignore))
    return found


def compare_pods(replay: Replayer, sequence: int, answer: Answer) -> list[str]:
    """Pod names are random: the pods, in name order, against the recorded ones in theirs."""
    recorded = exchange(sequence)["response"]["body"]
    if answer.status != 200:
        return [f"status {answer.status}"]
    items, theirs = answer.body["items"], recorded["items"]
    if len(items) != len(theirs):
        return [f"{len(items)} pods vs recorded {len(theirs)}"]
    # the recorded build also projects an `openshift-service-ca.crt` source (fixtures README)
    ignore = NO_MANAGED | {"$.spec.volumes[0].projected.sources"}
    found = []
    for n, (mine, recorded_pod) in enumerate(zip(items, theirs, strict=True)):
        found.extend(f"[{n}] {d}" for d in differences(mine, recorded_pod, ignore=ignore))
        # the recording's kubelet was a script on the Python client (manager OpenAPI-Generator)
        expected = [("kube-controller-manager", "Update", ""), ("kubelet", "Update", "status")]
        if managers(mine) != expected:
            found.append(f"[{n}] managers {managers(mine)}")
        sources = [next(iter(s)) for s in mine["spec"]["volumes"][0]["projected"]["sources"]]
        if sources != ["serviceAccountToken", "configMap", "downwardAPI"]:
            found.append(f"[{n}] projected sources {sources}")
    return found


def compare_events(replay: Replayer, sequence: int, answer: Answer) -> list[str]:
    """Event lists: the same reasons, each in the recorded shape; ours exactly (062, 063)."""
    recorded = exchange(sequence)["response"]["body"]
    if answer.status != 200:
        return [f"status {answer.status}"]

    def by_reason(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        grouped: dict[str, dict[str, Any]] = {}
        for item in items:
            grouped.setdefault(item["reason"], item)
        return grouped

    mine, theirs = by_reason(answer.body["items"]), by_reason(recorded["items"])
    found = differences({**answer.body, "items": []}, {**recorded, "items": []})
    if sorted(mine) != sorted(theirs):
        return [*found, f"reasons {sorted(mine)} vs recorded {sorted(theirs)}"]
    # how many times a controller event repeated, and which one, is timing
    ignore = NO_MANAGED | {
        "$.metadata.name",
        "$.deprecatedCount",
        "$.count",
        "$.note",
        "$.message",
        "$.regarding.resourceVersion",
        "$.involvedObject.resourceVersion",
    }
    for reason, event in theirs.items():
        found.extend(f"[{reason}] {d}" for d in compare_object(mine[reason], event, ignore))
    return found


def compare_generated_name(replay: Replayer, sequence: int, answer: Answer) -> list[str]:
    """088: the refusal names the generated name (prefix + 5 random characters)."""
    recorded = exchange(sequence)["response"]["body"]
    name = (answer.body.get("details") or {}).get("name", "")
    if not re.fullmatch(r"fraud-scorer\.[bcdfghjklmnpqrstvwxz2456789]{5}", name):
        return [f"generated name {name!r}"]
    expected = json.loads(json.dumps(recorded).replace("fraud-scorer.krg5x", name))
    if (answer.status, answer.body) != (422, expected):
        return [f"{answer.status} {answer.text} vs recorded {json.dumps(expected)}"]
    return []


def compare_allowed_review(replay: Replayer, sequence: int, answer: Answer) -> list[str]:
    """102: allowed, with RBAC's reason naming a binding (the stand-in names it after the user)."""
    recorded = exchange(sequence)["response"]["body"]
    if answer.status != 201:
        return [f"status {answer.status}: {answer.text}"]
    found = compare_object(answer.body, recorded, NO_MANAGED | {"$.status.reason"})
    reason = answer.body["status"].get("reason", "")
    pattern = (
        r'RBAC: allowed by RoleBinding "[^"]+/ml-prod" of Role "[^"]+" '
        r'to ServiceAccount "limited/ml-prod"'
    )
    if not re.fullmatch(pattern, reason):
        found.append(f"reason {reason!r}")
    return found


def compare_discovery_subset(replay: Replayer, sequence: int, answer: Answer) -> list[str]:
    """Group and resource lists: what the stand-in serves is there, as recorded, in order."""
    recorded = exchange(sequence)["response"]["body"]
    mine = answer.body
    key = "groups" if "groups" in recorded else "resources"
    found = differences(
        {k: v for k, v in mine.items() if k != key}, {k: v for k, v in recorded.items() if k != key}
    )
    theirs = {entry["name"]: entry for entry in recorded[key]}
    names = [entry["name"] for entry in mine[key]]
    if names != [n for n in theirs if n in names]:
        found.append(f"order {names}")
    for entry in mine[key]:
        if entry["name"] not in theirs:
            found.append(f"{entry['name']} is not served by the real server")
        elif entry != theirs[entry["name"]]:
            found.append(f"{entry} vs recorded {theirs[entry['name']]}")
    return found


def watch_lines(sequence: int) -> list[dict[str, Any]]:
    return [json.loads(line) for line in exchange(sequence)["response"]["body"].splitlines()]


def milestones(events: list[dict[str, Any]], name: str) -> list[tuple[Any, ...]]:
    """(type, generation, revision, Progressing reason) of one object, repeats folded."""
    steps: list[tuple[Any, ...]] = []
    for event in events:
        obj = event["object"]
        if obj["metadata"].get("name") != name:
            continue
        step = (
            event["type"],
            obj["metadata"].get("generation"),
            (obj["metadata"].get("annotations") or {}).get(REVISION),
            progressing(obj),
        )
        if not steps or steps[-1] != step:
            steps.append(step)
    return steps


def fold(steps: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """(type, generation, revision) with repeats folded: the changes an object went through."""
    folded: list[tuple[Any, ...]] = []
    for step in steps:
        if not folded or folded[-1] != step[:3]:
            folded.append(step[:3])
    return folded


# States a recorded watch shows because of a race in the recorded controller, not a rule:
# after the resume (078) its status write with NewReplicaSetCreated lost a conflict to its
# own DeploymentResumed write, and the retry found the ReplicaSet already created, so the
# new revision first appears with the resumed condition. The stand-in writes the rule.
RECORDED_RACES: dict[int, set[tuple[Any, ...]]] = {
    87: {("MODIFIED", 9, "6", "DeploymentResumed")},
}


def is_subsequence(part: list[Any], whole: list[Any]) -> bool:
    remaining = iter(whole)
    return all(any(step == other for other in remaining) for step in part)


def compare_watch(sequence: int, answer: Answer, events: list[dict[str, Any]]) -> list[str]:
    """A watch: the first event exactly, then each object's course and its last state.

    The course is the series of (type, generation, revision, Progressing reason). The
    recorded one must be in the stand-in's in order; the stand-in may pass through states the
    recorded controller skipped (its kubelet made pods Ready at once; after the resume in
    087 its NewReplicaSetCreated write lost a conflict), never skip a recorded one.
    """
    recorded = exchange(sequence)["response"]
    lines = watch_lines(sequence)
    found = []
    if answer.status != recorded["status"]:
        return [f"status {answer.status}"]
    if answer.headers.get("Transfer-Encoding") != "chunked":
        found.append("not chunked")
    if not events:
        return [*found, "no events"]
    first, theirs = events[0], lines[0]
    if first["type"] != theirs["type"]:
        found.append(f"first event {first['type']} vs recorded {theirs['type']}")
    found.extend(
        f"first event {d}" for d in compare_object(first["object"], theirs["object"], NO_MANAGED)
    )
    names = {e["object"]["metadata"].get("name") for e in lines if e["type"] != "BOOKMARK"}
    for name in sorted(names):
        mine = milestones(events, name)
        recorded_steps = [
            s for s in milestones(lines, name) if s not in RECORDED_RACES.get(sequence, ())
        ]
        if not is_subsequence(recorded_steps, mine) or fold(mine) != fold(recorded_steps):
            found.append(f"{name}: {mine} vs recorded {recorded_steps}")
        last_mine = [e for e in events if e["object"]["metadata"].get("name") == name][-1]
        last_theirs = [e for e in lines if e["object"]["metadata"].get("name") == name][-1]
        found.extend(
            f"{name} last event {d}"
            for d in compare_object(last_mine["object"], last_theirs["object"], NO_MANAGED)
        )
    return found


def compare_bookmarks(events: list[dict[str, Any]], sequence: int) -> list[str]:
    """124: BOOKMARKs before the timeout, the kind's zero value with the last event's RV."""
    lines = watch_lines(sequence)
    recorded = [line for line in lines if line["type"] == "BOOKMARK"]
    mine = [e for e in events if e["type"] == "BOOKMARK"]
    found = []
    if len(mine) != len(recorded):
        found.append(f"{len(mine)} bookmarks vs recorded {len(recorded)}")
    if events and events[-1]["type"] != "BOOKMARK":
        found.append(f"the stream ends with {events[-1]['type']}, recorded with a BOOKMARK")
    last_rv = None
    for event in events:
        if event["type"] != "BOOKMARK":
            last_rv = event["object"]["metadata"]["resourceVersion"]
            continue
        expected = json.loads(json.dumps(recorded[0]["object"]))
        expected["metadata"]["resourceVersion"] = last_rv
        if event["object"] != expected:
            found.append(f"bookmark {event['object']} vs {expected}")
    return found


# ==================================================================== the recorded runs


def rolled(name: str) -> Callable[[list[dict[str, Any]]], bool]:
    """Stop reading a watch once `name` shows a finished rollout of its latest generation."""

    def done(events: list[dict[str, Any]]) -> bool:
        return any(
            e["object"]["metadata"].get("name") == name
            and e["object"]["metadata"].get("generation", 0) > 1
            and complete(e["object"])
            and e["object"]["status"].get("terminatingReplicas") == 0
            for e in events[1:]
        )

    return done


def one_event(events: list[dict[str, Any]]) -> bool:
    return len(events) >= 1


def to_the_end(events: list[dict[str, Any]]) -> bool:
    return False


CHECKS: dict[int, Check] = {
    2: Check(ignore=frozenset({"$.serverAddressByClientCIDRs"})),
    3: Check(compare=compare_discovery_subset),
    4: Check(compare=compare_discovery_subset),
    5: Check(compare=compare_discovery_subset),
    # "right after create": the controller has not looked at it yet
    8: Check(before=(freeze("fraud-scorer"),), ignore=frozenset()),
    9: Check(after=(unfreeze("fraud-scorer"),)),
    10: Check(before=(wait_complete("fraud-scorer", 1),)),
    # kubectl rollout status: the watch from the LIST's resourceVersion saw 020's PATCH
    15: Check(background=one_event, joined_after=20),
    19: Check(compare=compare_pods),
    21: Check(before=(wait_complete("fraud-scorer", 2),)),
    24: Check(before=(wait_complete("fraud-scorer", 3),)),
    38: Check(before=(wait_complete("fraud-scorer", 4),)),
    55: Check(
        before=(
            as_user(
                "system:serviceaccount:ml-prod:nobody",
                ("get", "deployments"),
                ("list", "deployments"),
            ),
        )
    ),
    56: Check(after=(as_admin,)),
    57: Check(ignore=SERVICE),
    58: Check(ignore=SERVICE),
    59: Check(ignore=SERVICE),
    62: Check(compare=compare_events),
    63: Check(compare=compare_events),
    66: Check(before=(wait_complete("fraud-scorer", 5),)),
    68: Check(background=rolled("fraud-scorer"), joined_after=69),
    70: Check(before=(wait_complete("fraud-scorer", 6),)),
    72: Check(before=(wait_observed("fraud-scorer", 8),)),
    # the recorded controller had not yet observed 070's generation 7 when 071 came in (it
    # wrote the DeploymentPaused condition first); the stand-in's does both in one pass
    71: Check(ignore=NO_MANAGED | {"$.status.observedGeneration"}),
    79: Check(before=(wait_complete("fraud-scorer", 9),)),
    87: Check(background=to_the_end, joined_after=87),
    # second run
    88: Check(
        before=(
            send(7),
            send(8),
            wait_complete("fraud-scorer", 1),
            send(20),
            wait_complete("fraud-scorer", 2),
        ),
        compare=compare_generated_name,
    ),
    101: Check(
        before=(as_user("system:serviceaccount:ml-prod:limited", ("patch", "deployments")),)
    ),
    102: Check(compare=compare_allowed_review),
    103: Check(rv="current", after=(as_admin,)),
    104: Check(rv="current"),
    108: Check(before=(bind_version_policy,), rv="current", after=(unbind_policies,)),
    111: Check(ignore=frozenset({"$.buildDate"})),
    114: Check(before=(wait_complete("fraud-scorer", 3),)),
    116: Check(before=(wait_complete("scorer-canary", 1),)),
    117: Check(before=(wait_observed("scorer-canary", 2),)),
    # 119 read the annotation PATCH before the controller observed it (observedGeneration 2)
    118: Check(before=(freeze("scorer-canary"),)),
    119: Check(after=(unfreeze("scorer-canary"), wait_observed("scorer-canary", 3))),
    120: Check(ignore=SERVICE),
    121: Check(ignore=SERVICE),
    123: Check(before=(settle,)),
    124: Check(background=to_the_end, joined_after=126),
    125: Check(rv="current"),
    130: Check(before=(wait_complete("fraud-scorer", 4),)),
}


async def replay_run(kube: KubeStandIn, run: range) -> list[str]:
    """Replay one recorded run in order; return every mismatch, prefixed by its fixture."""
    problems: list[str] = []
    async with aiohttp.ClientSession() as session:
        replay = Replayer(kube, session)
        pending: dict[int, tuple[int, asyncio.Task[tuple[Answer, list[dict[str, Any]]]]]] = {}
        for sequence in run:
            if sequence in NOT_REPLAYED:
                continue
            check = CHECKS.get(sequence, Check())
            try:
                for action in check.before:
                    await action(replay)
                if check.background is not None:
                    watches = len(watch_requests(kube))
                    task = asyncio.create_task(replay.watch(sequence, check.background))
                    pending[sequence] = (check.joined_after or sequence, task)
                    await kube.wait_for(
                        lambda n=watches: len(watch_requests(kube)) > n,
                        5.0,
                        f"the watch of {sequence:03d}",
                    )
                else:
                    answer = await replay.send(sequence, check.rv)
                    compare = check.compare or compare_default
                    problems.extend(
                        f"{sequence:03d}: {p}" for p in compare(replay, sequence, answer)
                    )
                for action in check.after:
                    await action(replay)
                for watched, (join_at, task) in list(pending.items()):
                    if join_at == sequence:
                        del pending[watched]
                        answer, events = await asyncio.wait_for(task, 15.0)
                        found = compare_watch(watched, answer, events)
                        if watched == 124:
                            found += compare_bookmarks(events, watched)
                        problems.extend(f"{watched:03d}: {p}" for p in found)
            except (AssertionError, TimeoutError, aiohttp.ClientError) as error:
                problems.append(f"{sequence:03d}: {type(error).__name__}: {error}")
        for watched, (_, task) in pending.items():
            problems.append(f"{watched:03d}: the watch was never read to its end")
            task.cancel()
        await asyncio.gather(*(task for _, task in pending.values()), return_exceptions=True)
    return problems


def watch_requests(kube: KubeStandIn) -> list[Any]:
    return [r for r in kube.requests if r.query.get("watch") in ("true", "1")]


async def test_the_first_run_replays_as_recorded(kube: KubeStandIn) -> None:
    problems = await replay_run(kube, FIRST_RUN)
    assert not problems, "\n".join(problems)


async def test_the_second_run_replays_as_recorded(kube: KubeStandIn) -> None:
    problems = await replay_run(kube, SECOND_RUN)
    assert not problems, "\n".join(problems)
