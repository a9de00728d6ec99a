"""Kubernetes object shapes: resource table, server defaults, validation, Status bodies, selectors.

Everything here copies what kube-apiserver v1.36 answered in `shared/fixtures/kubernetes/`;
the comments name the fixture a rule comes from.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any

SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
POD_TEMPLATE_HASH = "pod-template-hash"
VERSION_LABEL = "app.kubernetes.io/version"

# Annotations the deployment controller never copies from a Deployment to its ReplicaSets.
NOT_COPIED_ANNOTATIONS = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        REVISION_HISTORY,
        DESIRED_REPLICAS,
        MAX_REPLICAS,
        "deprecated.deployment.rollback.to",
    }
)


@dataclass(frozen=True)
class Resource:
    """One REST resource as served under a group/version (events are served twice)."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    storage: str = ""
    storage_hash: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        """`deployments.apps` for grouped resources, `services` for core (Status messages)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def group_kind(self) -> str:
        """`Deployment.apps` / `Service`, as in 422 Invalid messages (fixture 052)."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def key(self) -> str:
        """Store key: both Event views share `events`."""
        return self.storage or self.plural


RESOURCES: tuple[Resource, ...] = (
    Resource(
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        namespaced=False,
        short_names=("ns",),
        subresources=("status",),
        storage_hash="Q3oi5N2YM8M=",
    ),
    Resource(
        "",
        "v1",
        "pods",
        "pod",
        "Pod",
        short_names=("po",),
        categories=("all",),
        subresources=("status",),
        storage_hash="xPOwRZ+Yhw8=",
    ),
    Resource(
        "",
        "v1",
        "services",
        "service",
        "Service",
        short_names=("svc",),
        categories=("all",),
        subresources=("status",),
        storage_hash="0/CO1lhkEBI=",
    ),
    Resource(
        "",
        "v1",
        "events",
        "event",
        "Event",
        short_names=("ev",),
        storage="events",
        storage_hash="r2yiGXH7wu8=",
    ),
    Resource(
        "apps",
        "v1",
        "deployments",
        "deployment",
        "Deployment",
        short_names=("deploy",),
        categories=("all",),
        subresources=("scale", "status"),
        storage_hash="8aSe+NMegvE=",
    ),
    Resource(
        "apps",
        "v1",
        "replicasets",
        "replicaset",
        "ReplicaSet",
        short_names=("rs",),
        categories=("all",),
        subresources=("scale", "status"),
        storage_hash="P1RzHs8/mWQ=",
    ),
    Resource(
        "",
        "v1",
        "configmaps",
        "configmap",
        "ConfigMap",
        short_names=("cm",),
        storage_hash="qFsyl6wFWjQ=",
    ),
    Resource(
        "events.k8s.io",
        "v1",
        "events",
        "event",
        "Event",
        short_names=("ev",),
        storage="events",
        storage_hash="r2yiGXH7wu8=",
    ),
)

BY_PATH: dict[tuple[str, str, str], Resource] = {
    (r.group, r.version, r.plural): r for r in RESOURCES
}
GROUP_VERSIONS: dict[str, list[Resource]] = {}
for _r in RESOURCES:
    GROUP_VERSIONS.setdefault(_r.api_version, []).append(_r)

CORE = {r.plural: r for r in RESOURCES if r.group == ""}
DEPLOYMENTS = BY_PATH[("apps", "v1", "deployments")]
REPLICASETS = BY_PATH[("apps", "v1", "replicasets")]
PODS = CORE["pods"]
SERVICES = CORE["services"]
NAMESPACES = CORE["namespaces"]
CORE_EVENTS = CORE["events"]
EVENTS_V1 = BY_PATH[("events.k8s.io", "v1", "events")]

VERSION_INFO: dict[str, str] = {
    "major": "1",
    "minor": "36",
    "emulationMajor": "1",
    "emulationMinor": "36",
    "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "35",
    "gitVersion": "v1.36.2",
    "gitCommit": "98b35193b2ac7a23a673325f5e9b830ecd5ba406",
    "gitTreeState": "clean",
    "buildDate": "2026-11-25T07:27:31Z",
    "goVersion": "go1.27.3",
    "compiler": "gc",
    "platform": "linux/amd64",
}

SUBRESOURCE_VERBS = {"scale": ["get", "patch", "update"], "status": ["get", "patch", "update"]}
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


# ---------------------------------------------------------------- time, names, hashing


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def timestamp(moment: dt.datetime | None = None) -> str:
    """RFC 3339 seconds with `Z`, as every metadata/condition time is rendered."""
    return (moment or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_timestamp(value: Any) -> Any:
    """MicroTime (`eventTime`): six fraction digits and `Z` (fixture 061)."""
    if not isinstance(value, str):
        return value
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def normalise_time(value: Any) -> Any:
    """Client datetimes come as `+00:00`; the server stores and answers `Z`."""
    if not isinstance(value, str):
        return value
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return timestamp(parsed.astimezone(dt.UTC))


def fnv32a(data: bytes) -> int:
    value = 0x811C9DC5
    for byte in data:
        value ^= byte
        value = (value * 0x01000193) & 0xFFFFFFFF
    return value


def safe_encode(text: str) -> str:
    """k8s.io/apimachinery rand.SafeEncodeString: no vowels, no look-alike characters."""
    return "".join(SAFE_ALPHABET[ord(c) % len(SAFE_ALPHABET)] for c in text)


def template_without_hash(template: dict[str, Any]) -> dict[str, Any]:
    clone = copy.deepcopy(template)
    labels = clone.get("metadata", {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(POD_TEMPLATE_HASH, None)
    return canonical(clone)


def canonical(value: Any) -> Any:
    """Drop nulls and empty metadata so semantically equal templates compare equal."""
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def pod_template_hash(template: dict[str, Any], collision_count: int = 0) -> str:
    """Hash of the template minus its `pod-template-hash` label (FNV-32a, safe-encoded)."""
    data = json.dumps(template_without_hash(template), sort_keys=True).encode()
    if collision_count:
        data += str(collision_count).encode()
    return safe_encode(str(fnv32a(data)))


def templates_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """EqualIgnoreHash: same template once `pod-template-hash` is ignored."""
    return template_without_hash(a) == template_without_hash(b)


# ---------------------------------------------------------------- Status bodies


def status_body(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A `Status` failure exactly as the API server renders one (key order included)."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def _details(resource: Resource, name: str | None, kind: str | None = None) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if resource.group:
        details["group"] = resource.group
    details["kind"] = kind or resource.plural
    return details


def not_found(resource: Resource, name: str) -> dict[str, Any]:
    return status_body(
        404, "NotFound", f'{resource.group_resource} "{name}" not found', _details(resource, name)
    )


def namespace_not_found(name: str) -> dict[str, Any]:
    return not_found(NAMESPACES, name)


def conflict(resource: Resource, name: str) -> dict[str, Any]:
    message = (
        f'Operation cannot be fulfilled on {resource.group_resource} "{name}": the object has '
        "been modified; please apply your changes to the latest version and try again"
    )
    return status_body(409, "Conflict", message, _details(resource, name))


def already_exists(resource: Resource, name: str) -> dict[str, Any]:
    return status_body(
        409,
        "AlreadyExists",
        f'{resource.group_resource} "{name}" already exists',
        _details(resource, name),
    )


def invalid(resource: Resource, name: str, causes: list[tuple[str, Any, str]]) -> dict[str, Any]:
    """422 Invalid with field causes: (field, bad value, detail) (fixture 052)."""
    rendered = [
        (field, f"Invalid value: {_go_value(value)}: {detail}") for field, value, detail in causes
    ]
    if len(rendered) == 1:
        summary = f"{rendered[0][0]}: {rendered[0][1]}"
    else:
        summary = "[" + ", ".join(f"{f}: {m}" for f, m in rendered) + "]"
    details = _details(resource, name, kind=resource.kind)
    details["causes"] = [
        {"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in rendered
    ]
    return status_body(
        422, "Invalid", f'{resource.group_kind} "{name}" is invalid: {summary}', details
    )


def _go_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        inner = " ".join(f"{k}:{v}" for k, v in sorted(value.items()))
        return f"map[string]string{{{inner}}}"
    return json.dumps(value)


def patch_rejected() -> dict[str, Any]:
    """A JSON patch that fails to apply (a failing `test` op included): fixture 050."""
    return status_body(
        422, "Invalid", "the server rejected our request due to an error in our request", {}
    )


def bad_request(message: str) -> dict[str, Any]:
    return status_body(400, "BadRequest", message)


def forbidden(
    resource: Resource | None, verb: str, name: str | None, namespace: str | None, user: str
) -> dict[str, Any]:
    """403 as RBAC words it (fixtures 055, 056)."""
    if resource is None:
        return status_body(403, "Forbidden", f'forbidden: User "{user}" cannot {verb} path', {})
    subject = f'{resource.group_resource} "{name}"' if name else resource.group_resource
    group = resource.group
    where = f' in the namespace "{namespace}"' if namespace else ""
    message = (
        f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource.plural}" '
        f'in API group "{group}"{where}'
    )
    return status_body(403, "Forbidden", message, _details(resource, name))


def unsupported_media_type(patch: bool) -> dict[str, Any]:
    """415 for a body in an unknown format (README: octet-stream on POST)."""
    accepted = (
        "application/json-patch+json, application/merge-patch+json, "
        "application/apply-patch+yaml, application/strategic-merge-patch+json"
        if patch
        else "application/json, application/yaml, application/vnd.kubernetes.protobuf"
    )
    return status_body(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: "
        f"{accepted}",
        {},
    )


def generic_error(
    code: int,
    message: str | None = None,
    retry_after: int | None = None,
    resource: Resource | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Status for injected faults (500, 429, 503 ...) in the API server's wording."""
    reasons = {
        400: ("BadRequest", "the server rejected our request for an unknown reason"),
        401: ("Unauthorized", "Unauthorized"),
        404: ("NotFound", "the server could not find the requested resource"),
        405: (
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        ),
        410: ("Expired", "too old resource version"),
        429: ("TooManyRequests", "Too many requests, please try again later."),
        500: ("InternalError", "Internal error occurred: injected failure"),
        503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
        504: ("Timeout", "the server was unable to return a response in the time allotted"),
    }
    reason, default = reasons.get(
        code,
        (
            "Unknown",
            f"the server responded with the status code {code} but did not return more information",
        ),
    )
    details: dict[str, Any] | None = None
    if resource is not None or retry_after is not None:
        details = _details(resource, name) if resource is not None else {}
        if retry_after is not None:
            details["retryAfterSeconds"] = retry_after
    if code == 401:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message or default,
            "reason": reason,
            "code": 401,
        }
    return status_body(code, reason, message or default, details)


# ---------------------------------------------------------------- selectors


_REQUIREMENT = re.compile(
    r"\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(==|=|!=)\s*([^,]*)|"
    r"\s+(in|notin)\s*\(([^)]*)\))?\s*"
)


def parse_label_selector(text: str | None) -> list[tuple[str, str, list[str]]]:
    """`a=b,c!=d,e in (x,y),!f,g` -> requirements; raises ValueError on bad syntax."""
    if not text:
        return []
    parts: list[str] = []
    depth, current = 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    requirements: list[tuple[str, str, list[str]]] = []
    for part in parts:
        match = _REQUIREMENT.fullmatch(part)
        if not match:
            raise ValueError(f"unable to parse requirement: {part!r}")
        negate, key, op, value, set_op, values = match.groups()
        if negate:
            requirements.append((key, "!", []))
        elif op:
            requirements.append((key, "!=" if op == "!=" else "=", [value.strip()]))
        elif set_op:
            requirements.append((key, set_op, [v.strip() for v in values.split(",") if v.strip()]))
        else:
            requirements.append((key, "exists", []))
    return requirements


def labels_match(labels: dict[str, str], requirements: list[tuple[str, str, list[str]]]) -> bool:
    for key, op, values in requirements:
        present = key in labels
        value = labels.get(key)
        if op == "=" and value != values[0]:
            return False
        if op == "!=" and present and value == values[0]:
            return False
        if op == "in" and value not in values:
            return False
        if op == "notin" and present and value in values:
            return False
        if op == "exists" and not present:
            return False
        if op == "!" and present:
            return False
    return True


def match_selector(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels + matchExpressions) against labels; empty matches nothing."""
    if not selector:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, op, values = expression["key"], expression["operator"], expression.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def selector_string(selector: dict[str, Any] | None) -> str:
    """`app=fraud-scorer`, the Scale `status.selector` form (fixture 064)."""
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        key, op = expression["key"], expression["operator"]
        values = ",".join(sorted(expression.get("values") or []))
        parts.append(
            {
                "In": f"{key} in ({values})",
                "NotIn": f"{key} notin ({values})",
                "Exists": key,
                "DoesNotExist": f"!{key}",
            }[op]
        )
    return ",".join(sorted(parts))


def parse_field_selector(text: str | None) -> list[tuple[str, bool, str]]:
    """`metadata.name=x,status.phase!=Running` -> (path, equal, value)."""
    if not text:
        return []
    result = []
    for part in text.split(","):
        if "!=" in part:
            path, value = part.split("!=", 1)
            result.append((path.strip(), False, value.strip()))
        elif "==" in part:
            path, value = part.split("==", 1)
            result.append((path.strip(), True, value.strip()))
        elif "=" in part:
            path, value = part.split("=", 1)
            result.append((path.strip(), True, value.strip()))
        else:
            raise ValueError(f"invalid selector: {text!r}; can't understand {part!r}")
    return result


def fields_match(obj: dict[str, Any], requirements: list[tuple[str, bool, str]]) -> bool:
    for path, equal, value in requirements:
        node: Any = obj
        for step in path.split("."):
            node = node.get(step) if isinstance(node, dict) else None
        actual = "" if node is None else str(node)
        if (actual == value) != equal:
            return False
    return True


# ---------------------------------------------------------------- managed fields


def fields_v1(value: Any, *, atomic: frozenset[str] = frozenset({"selector"})) -> dict[str, Any]:
    """A FieldsV1 set for a JSON value: maps as `f:` keys, keyed lists as `k:` entries."""
    result: dict[str, Any] = {}
    if not isinstance(value, dict):
        return result
    for key, item in sorted(value.items()):
        name = f"f:{key}"
        if key in atomic or item is None:
            result[name] = {}
        elif isinstance(item, dict):
            inner = fields_v1(item, atomic=frozenset())
            if item and key not in ("resources", "securityContext"):
                inner = (
                    {".": {}, **inner}
                    if key
                    in (
                        "labels",
                        "annotations",
                        "rollingUpdate",
                        "httpGet",
                        "readinessProbe",
                        "livenessProbe",
                    )
                    else inner
                )
            result[name] = inner
        elif isinstance(item, list) and item and all(isinstance(i, dict) for i in item):
            merge_key = "type" if key == "conditions" else "name"
            entries: dict[str, Any] = {}
            for element in item:
                if merge_key in element:
                    ident = json.dumps({merge_key: element[merge_key]}, separators=(",", ":"))
                    entries[f"k:{ident}"] = {".": {}, **fields_v1(element, atomic=frozenset())}
            result[name] = {".": {}, **entries} if key == "conditions" else entries or {}
        else:
            result[name] = {}
    return result


_METADATA_ORDER = [
    "name",
    "generateName",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
]


def ordered_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """ObjectMeta in Go struct order, so responses read like the recorded ones."""
    ordered = {k: metadata[k] for k in _METADATA_ORDER if k in metadata}
    ordered.update({k: v for k, v in metadata.items() if k not in ordered})
    return ordered


def manager_from_user_agent(user_agent: str | None) -> str:
    """The field manager the API server derives from the User-Agent (`OpenAPI-Generator`)."""
    if not user_agent:
        return "unknown"
    return user_agent.split("/", 1)[0]


def record_manager(
    obj: dict[str, Any],
    manager: str,
    api_version: str,
    fields: dict[str, Any],
    subresource: str | None = None,
) -> None:
    """Add or refresh the Update entry for (manager, subresource) in `managedFields`."""
    entries: list[dict[str, Any]] = obj["metadata"].setdefault("managedFields", [])
    entry: dict[str, Any] = {
        "manager": manager,
        "operation": "Update",
        "apiVersion": api_version,
        "time": timestamp(),
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    }
    if subresource:
        entry["subresource"] = subresource
    for index, existing in enumerate(entries):
        if existing["manager"] == manager and existing.get("subresource") == subresource:
            entries[index] = entry
            return
    entries.append(entry)
