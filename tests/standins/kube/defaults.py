"""Server-side defaulting and validation, and the two views of an Event.

Defaults are applied on every write (create, update, patch), as the API server decodes into
defaulted types each time; this is why a merge patch that sends a bare container (fixture 023)
reads back with `imagePullPolicy`, `terminationMessagePath` and the probe defaults.
"""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any

from .objects import (
    CONFIGMAPS,
    CORE_EVENTS,
    DEPLOYMENTS,
    EVENTS_V1,
    LEASES,
    PODS,
    REPLICASETS,
    SERVICES,
    Resource,
    canonical,
    invalid_errors,
    micro_timestamp,
    normalise_time,
)
from .validation import (
    FieldError,
    invalid_value,
    required,
    validate_config_map,
    validate_event_create,
    validate_lease,
    validate_object_meta,
)

_cluster_ips = itertools.count(10)


def _probe_defaults(probe: dict[str, Any]) -> None:
    for handler in ("httpGet",):
        if isinstance(probe.get(handler), dict):
            probe[handler].setdefault("scheme", "HTTP")
    probe.setdefault("timeoutSeconds", 1)
    probe.setdefault("periodSeconds", 10)
    probe.setdefault("successThreshold", 1)
    probe.setdefault("failureThreshold", 3)


def _container_defaults(container: dict[str, Any]) -> None:
    container.setdefault("resources", {})
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        if isinstance(container.get(probe), dict):
            _probe_defaults(container[probe])
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    image = str(container.get("image", ""))
    tag = image.rsplit("/", 1)[-1]
    latest = "@" not in tag and (":" not in tag or tag.endswith(":latest"))
    container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")


def pod_spec_defaults(spec: dict[str, Any]) -> None:
    """Pod template defaults from fixture 008."""
    containers = itertools.chain(spec.get("initContainers") or [], spec.get("containers") or [])
    for container in containers:
        _container_defaults(container)
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")


def _order(obj: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """Render keys in the Go struct order the API server uses; unknown keys keep their place."""
    ordered = {k: obj[k] for k in keys if k in obj}
    ordered.update({k: v for k, v in obj.items() if k not in ordered})
    return ordered


_CONTAINER_ORDER = [
    "name",
    "image",
    "command",
    "args",
    "workingDir",
    "ports",
    "envFrom",
    "env",
    "resources",
    "resizePolicy",
    "restartPolicy",
    "volumeMounts",
    "volumeDevices",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "imagePullPolicy",
    "securityContext",
    "stdin",
    "stdinOnce",
    "tty",
]
_POD_SPEC_ORDER = [
    "volumes",
    "initContainers",
    "containers",
    "restartPolicy",
    "terminationGracePeriodSeconds",
    "activeDeadlineSeconds",
    "dnsPolicy",
    "nodeSelector",
    "serviceAccountName",
    "serviceAccount",
    "nodeName",
    "securityContext",
    "imagePullSecrets",
    "affinity",
    "schedulerName",
    "tolerations",
    "priority",
    "enableServiceLinks",
    "preemptionPolicy",
]
_DEPLOYMENT_SPEC_ORDER = [
    "replicas",
    "selector",
    "template",
    "strategy",
    "minReadySeconds",
    "revisionHistoryLimit",
    "paused",
    "progressDeadlineSeconds",
]


def _order_template(template: dict[str, Any]) -> dict[str, Any]:
    spec = template.get("spec")
    if isinstance(spec, dict):
        spec["containers"] = [_order(c, _CONTAINER_ORDER) for c in spec.get("containers") or []]
        template["spec"] = _order(spec, _POD_SPEC_ORDER)
    return _order(template, ["metadata", "spec"])


def apply_defaults(resource: Resource, obj: dict[str, Any]) -> dict[str, Any]:
    """Fill server defaults for `resource` in place and return the object in server key order."""
    obj = canonical(obj)
    metadata = obj.setdefault("metadata", {})
    if "creationTimestamp" in metadata:
        metadata["creationTimestamp"] = normalise_time(metadata["creationTimestamp"])
    if resource in (DEPLOYMENTS, REPLICASETS):
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        template = spec.setdefault("template", {})
        template.setdefault("metadata", {})
        template["metadata"].pop("creationTimestamp", None)
        pod_spec_defaults(template.setdefault("spec", {}))
        spec["template"] = _order_template(template)
        if resource is DEPLOYMENTS:
            strategy = spec.setdefault("strategy", {})
            strategy.setdefault("type", "RollingUpdate")
            if strategy["type"] == "RollingUpdate":
                rolling = strategy.setdefault("rollingUpdate", {})
                rolling.setdefault("maxUnavailable", "25%")
                rolling.setdefault("maxSurge", "25%")
                strategy["rollingUpdate"] = _order(rolling, ["maxUnavailable", "maxSurge"])
            spec["strategy"] = _order(strategy, ["type", "rollingUpdate"])
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
            if spec.get("paused") is False:
                del spec["paused"]
            obj["spec"] = _order(spec, _DEPLOYMENT_SPEC_ORDER)
        obj.setdefault("status", {})
    elif resource is PODS:
        spec = obj.setdefault("spec", {})
        pod_spec_defaults(spec)
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        spec.setdefault("priority", 0)
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        spec["containers"] = [_order(c, _CONTAINER_ORDER) for c in spec.get("containers") or []]
        obj["spec"] = _order(spec, _POD_SPEC_ORDER)
        obj.setdefault("status", {"phase": "Pending", "qosClass": "BestEffort"})
    elif resource is SERVICES:
        spec = obj.setdefault("spec", {})
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
        spec.setdefault("type", "ClusterIP")
        if "clusterIP" not in spec:
            address = str(ipaddress.IPv4Address("10.96.0.0") + next(_cluster_ips))
            spec["clusterIP"] = address
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("sessionAffinity", "None")
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
        spec["ports"] = [
            _order(p, ["name", "protocol", "port", "targetPort", "nodePort"])
            for p in spec.get("ports") or []
        ]
        obj["spec"] = _order(
            spec,
            [
                "ports",
                "selector",
                "clusterIP",
                "clusterIPs",
                "type",
                "sessionAffinity",
                "ipFamilies",
                "ipFamilyPolicy",
                "internalTrafficPolicy",
            ],
        )
        obj.setdefault("status", {"loadBalancer": {}})
    elif resource is CONFIGMAPS:
        obj = _order(obj, ["metadata", "immutable", "data", "binaryData"])
    elif resource is LEASES:
        spec = obj.setdefault("spec", {})
        for key in ("acquireTime", "renewTime"):
            if key in spec:
                spec[key] = micro_timestamp(spec[key])
        obj["spec"] = _order(
            spec,
            [
                "holderIdentity",
                "leaseDurationSeconds",
                "acquireTime",
                "renewTime",
                "leaseTransitions",
                "strategy",
                "preferredHolder",
            ],
        )
    elif resource.plural == "namespaces":
        labels = metadata.setdefault("labels", {})
        labels.setdefault("kubernetes.io/metadata.name", metadata.get("name", ""))
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj.setdefault("status", {"phase": "Active"})
    return obj


def validate(resource: Resource, obj: dict[str, Any]) -> dict[str, Any] | None:
    """A 422 Status for what the API server refuses in this object, or None when valid.

    ObjectMeta first (the kind's name rule, generateName, labels, annotations), then the
    kind's own fields, as each `Validate<Kind>` orders them.
    """
    metadata = obj.get("metadata") or {}
    if resource.key == "events":
        errors = validate_event_create(obj, events_v1=resource is EVENTS_V1)
        if not errors and not metadata.get("name"):
            # the generic ObjectMeta check that follows every kind's own validation
            errors = [required("metadata.name", "name or generateName is required")]
    else:
        errors = validate_object_meta(resource.kind, metadata, namespaced=resource.namespaced)
        errors.extend(_validate_kind(resource, obj))
    if errors:
        return invalid_errors(resource, metadata.get("name") or "", errors)
    return None


def _validate_kind(resource: Resource, obj: dict[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    if resource in (DEPLOYMENTS, REPLICASETS):
        spec = obj.get("spec", {})
        replicas = spec.get("replicas")
        if isinstance(replicas, int) and replicas < 0:
            errors.append(
                invalid_value("spec.replicas", replicas, "must be greater than or equal to 0")
            )
        selector = spec.get("selector")
        labels = spec.get("template", {}).get("metadata", {}).get("labels") or {}
        match_labels = (selector or {}).get("matchLabels") or {}
        if not selector:
            errors.append(required("spec.selector"))
        elif any(labels.get(k) != v for k, v in match_labels.items()):
            errors.append(
                invalid_value(
                    "spec.template.metadata.labels",
                    labels,
                    "`selector` does not match template `labels`",
                )
            )
        for index, container in enumerate(
            spec.get("template", {}).get("spec", {}).get("containers") or []
        ):
            if not container.get("image"):
                errors.append(required(f"spec.template.spec.containers[{index}].image"))
    elif resource is CONFIGMAPS:
        errors.extend(validate_config_map(obj))
    elif resource is LEASES:
        errors.extend(validate_lease(obj))
    return errors


# ---------------------------------------------------------------- Events: one object, two views

_CORE_EVENT_ORDER = [
    "kind",
    "apiVersion",
    "metadata",
    "involvedObject",
    "reason",
    "message",
    "source",
    "firstTimestamp",
    "lastTimestamp",
    "count",
    "type",
    "eventTime",
    "series",
    "action",
    "related",
    "reportingComponent",
    "reportingInstance",
]


def event_from_request(resource: Resource, body: dict[str, Any]) -> dict[str, Any]:
    """Store every Event in its core/v1 form; an events.k8s.io/v1 body is converted first."""
    if resource is EVENTS_V1:
        stored: dict[str, Any] = {
            "metadata": body.get("metadata", {}),
            "involvedObject": body.get("regarding") or {},
            "reason": body.get("reason", ""),
            "message": body.get("note", ""),
            "source": body.get("deprecatedSource") or {},
            "firstTimestamp": body.get("deprecatedFirstTimestamp"),
            "lastTimestamp": body.get("deprecatedLastTimestamp"),
            "count": body.get("deprecatedCount", 0),
            "type": body.get("type", ""),
            "eventTime": body.get("eventTime"),
            "series": body.get("series"),
            "action": body.get("action", ""),
            "related": body.get("related"),
            "reportingComponent": body.get("reportingController", ""),
            "reportingInstance": body.get("reportingInstance", ""),
        }
    else:
        stored = {k: v for k, v in body.items() if k not in ("kind", "apiVersion")}
        stored.setdefault("source", {})
        stored.setdefault("firstTimestamp", None)
        stored.setdefault("lastTimestamp", None)
        stored.setdefault("eventTime", None)
        stored.setdefault("reportingComponent", "")
        stored.setdefault("reportingInstance", "")
    for key in ("firstTimestamp", "lastTimestamp"):
        stored[key] = normalise_time(stored.get(key))
    stored["eventTime"] = micro_timestamp(stored.get("eventTime"))
    return stored


def event_view(resource: Resource, stored: dict[str, Any]) -> dict[str, Any]:
    """Render a stored Event for the API group asked for (fixtures 062 and 063)."""
    if resource is CORE_EVENTS:
        view = {
            k: v
            for k, v in stored.items()
            if not (k in ("count", "series", "related", "action") and not v)
        }
        return _order(view, _CORE_EVENT_ORDER)
    view: dict[str, Any] = {"metadata": stored["metadata"], "eventTime": stored.get("eventTime")}
    if stored.get("series"):
        view["series"] = stored["series"]
    if stored.get("reportingComponent"):
        view["reportingController"] = stored["reportingComponent"]
    if stored.get("reportingInstance"):
        view["reportingInstance"] = stored["reportingInstance"]
    if stored.get("action"):
        view["action"] = stored["action"]
    view["reason"] = stored.get("reason", "")
    view["regarding"] = stored.get("involvedObject", {})
    if stored.get("related"):
        view["related"] = stored["related"]
    view["note"] = stored.get("message", "")
    view["type"] = stored.get("type", "")
    view["deprecatedSource"] = stored.get("source") or {}
    view["deprecatedFirstTimestamp"] = stored.get("firstTimestamp")
    view["deprecatedLastTimestamp"] = stored.get("lastTimestamp")
    if stored.get("count"):
        view["deprecatedCount"] = stored["count"]
    return view
