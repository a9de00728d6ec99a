"""A Deployment and its ReplicaSets read into the ``WorkloadView`` the decision table reads.

Owns what "serving", "revision" and "became current" mean for a Deployment (design.md,
the rollout-undo row of the decision table). Dicts in, values out; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from receiver import annotations as ours
from receiver.kinds.merge_patch import normalized_template
from receiver.models import Revision, WorkloadView, parse_time

__all__ = [
    "LABEL_VERSION",
    "POD_TEMPLATE_HASH",
    "REVISION_ANNOTATION",
    "REVISION_HISTORY_ANNOTATION",
    "available_replicas",
    "controller_ref",
    "deployment_view",
    "gitops_manager",
    "last_rollout_at",
    "owned_replicasets",
    "pod_template",
    "revision_number",
    "selector_string",
    "spec_replicas",
    "template_version",
]

LABEL_VERSION = "app.kubernetes.io/version"
"""The pod template label that names the model version (design.md, serving version)."""
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
REVISION_HISTORY_ANNOTATION = "deployment.kubernetes.io/revision-history"
"""Set by the controller when it re-adopts an old ReplicaSet (an undo, a re-apply)."""
POD_TEMPLATE_HASH = "pod-template-hash"
"""Added by the controller to each ReplicaSet's template; never part of the Deployment's."""

# Argo CD: annotation-based tracking (the default since 2.x for new installs) and the
# common custom instance label; plain `app.kubernetes.io/instance` is Argo CD's legacy label
# tracking but also every Helm chart's, so it counts only beside another Argo CD marker.
_ARGO_MARKERS = ("argocd.argoproj.io/tracking-id", "argocd.argoproj.io/instance")
_ARGO_PREFIX = "argocd.argoproj.io/"
_FLUX_LABELS = ("kustomize.toolkit.fluxcd.io/name", "helm.toolkit.fluxcd.io/name")


def deployment_view(
    deployment: Mapping[str, Any],
    replicasets: Sequence[Mapping[str, Any]],
    *,
    strategy: str = "rollout-undo",
) -> WorkloadView:
    """What the decision reads from a Deployment and its ReplicaSets (any list that holds
    them; ReplicaSets not owned by this Deployment are ignored)."""
    metadata = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    annotations: dict[str, str] = dict(metadata.get("annotations") or {})
    template = normalized_template(spec.get("template") or {})
    serving_version = _labels(template).get(LABEL_VERSION, "")
    generation = int(metadata.get("generation") or 0)
    bad_versions = ours.bad_versions(annotations)

    owned = owned_replicasets(deployment, replicasets)
    serving_rs = _serving_replicaset(owned, template)
    serving = _revision(serving_rs, bad_versions) if serving_rs is not None else None
    serving_number = serving.number if serving is not None else None

    candidates = []
    for rs in owned:
        if rs is serving_rs:
            continue
        revision = _revision(rs, bad_versions)
        if revision is None:
            continue
        if serving_number is None or revision.number < serving_number:
            candidates.append(revision)
    candidates.sort(key=lambda r: r.number, reverse=True)

    made_current_by_us = _made_current_by_us(annotations, serving_version, generation)
    if made_current_by_us:
        became_current_at = ours.changed_at(annotations)
    elif serving_rs is not None:
        became_current_at = _version_became_current(deployment, owned, serving_rs)
    else:
        became_current_at = None

    return WorkloadView(
        strategy=strategy,
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata.get("name", "")),
        resource_version=str(metadata.get("resourceVersion", "")),
        serving_version=serving_version,
        serving_revision=str(serving.number) if serving is not None else "",
        became_current_at=became_current_at,
        annotations=annotations,
        spec_paused=bool(spec.get("paused", False)),
        gitops=gitops_manager(metadata),
        candidates=tuple(candidates),
        made_current_by_us=made_current_by_us,
        serving=serving,
        generation=generation,
    )


def gitops_manager(metadata: Mapping[str, Any]) -> str | None:
    """``"Argo CD"`` or ``"Flux"`` when their tracking marks are on the object, else None."""
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    if any(m in annotations or m in labels for m in _ARGO_MARKERS):
        return "Argo CD"
    if "app.kubernetes.io/instance" in labels and any(
        k.startswith(_ARGO_PREFIX) for k in (*labels, *annotations)
    ):
        return "Argo CD"
    if any(label in labels for label in _FLUX_LABELS):
        return "Flux"
    return None


def template_version(deployment: Mapping[str, Any]) -> str:
    """The version the Deployment's pod template names (``app.kubernetes.io/version``), or
    ``""`` when the label is absent."""
    template = (deployment.get("spec") or {}).get("template") or {}
    return _labels(template).get(LABEL_VERSION, "")


def spec_replicas(deployment: Mapping[str, Any]) -> int:
    """The desired replica count (``spec.replicas``; the API defaults an absent one to 1)."""
    value = (deployment.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def available_replicas(deployment: Mapping[str, Any]) -> int:
    """Pods available to serve, as the controller last counted them (absent means 0)."""
    return int((deployment.get("status") or {}).get("availableReplicas") or 0)


def last_rollout_at(deployment: Mapping[str, Any]) -> datetime | None:
    """When the Deployment last rolled out: its ``Progressing`` condition's last update
    (the controller moves it at each step of a rollout or a scale-up, and it stays at the
    step that completed it), else its creation. None when neither is readable.

    The ReplicaSets would date the version more finely (``deployment_view``), at the cost
    of a list per Deployment; strategies that only need "since when does this Deployment
    serve what it serves" (a blue-green slot, a canary) read this instead.
    """
    for condition in (deployment.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Progressing":
            updated = parse_time(condition.get("lastUpdateTime"))
            if updated is not None:
                return updated
    return parse_time((deployment.get("metadata") or {}).get("creationTimestamp"))


def pod_template(replicaset: Mapping[str, Any]) -> dict[str, Any]:
    """The ReplicaSet's pod template as the Deployment would carry it: without the
    ``pod-template-hash`` label (what ``kubectl rollout undo`` restores)."""
    template = normalized_template((replicaset.get("spec") or {}).get("template") or {})
    labels = _labels(template)
    if POD_TEMPLATE_HASH in labels:
        labels = {k: v for k, v in labels.items() if k != POD_TEMPLATE_HASH}
        template["metadata"] = {**template.get("metadata", {}), "labels": labels}
    return template


def revision_number(replicaset: Mapping[str, Any]) -> int | None:
    """The ReplicaSet's ``deployment.kubernetes.io/revision``, or None when unreadable."""
    annotations = (replicaset.get("metadata") or {}).get("annotations") or {}
    try:
        return int(annotations[REVISION_ANNOTATION])
    except (KeyError, TypeError, ValueError):
        return None


def controller_ref(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The owner reference marked ``controller: true``, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return ref
    return None


def owned_replicasets(
    deployment: Mapping[str, Any], replicasets: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The ReplicaSets this Deployment owns (by uid; by name when the read has no uid)."""
    metadata = deployment.get("metadata") or {}
    uid = metadata.get("uid")
    owned = []
    for rs in replicasets:
        for ref in (rs.get("metadata") or {}).get("ownerReferences") or []:
            if ref.get("kind") != "Deployment":
                continue
            if (uid and ref.get("uid") == uid) or (
                not uid and ref.get("name") == metadata.get("name")
            ):
                owned.append(rs)
                break
    return owned


def selector_string(selector: Mapping[str, Any] | None) -> str:
    """A label selector as the API's ``labelSelector`` query parameter (matchLabels)."""
    labels = (selector or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


# --- helpers --------------------------------------------------------------------------------


def _labels(template: Mapping[str, Any]) -> dict[str, str]:
    return dict((template.get("metadata") or {}).get("labels") or {})


def _made_current_by_us(
    annotations: Mapping[str, str], serving_version: str, generation: int
) -> bool:
    """Our last rollback restored the serving version and nobody changed the spec since.

    The generation our write produced is on the workload; a person's later change (even a
    restore of the same version) bumps it, and is then not ours. Marks written before the
    generation was recorded fall back to the version alone."""
    if not serving_version or annotations.get(ours.ROLLED_BACK_TO) != serving_version:
        return False
    if ours.changed_at(annotations) is None:
        return False
    recorded = annotations.get(ours.GENERATION)
    return recorded is None or recorded == str(generation)


def _serving_replicaset(
    owned: Sequence[Mapping[str, Any]], template: Mapping[str, Any]
) -> Mapping[str, Any] | None:
    """The ReplicaSet whose template equals the Deployment's (the controller keeps one)."""
    matching = [rs for rs in owned if pod_template(rs) == template]
    return max(matching, key=lambda rs: revision_number(rs) or -1, default=None)


def _revision(replicaset: Mapping[str, Any], bad_versions: frozenset[str]) -> Revision | None:
    number = revision_number(replicaset)
    if number is None:
        return None
    metadata = replicaset.get("metadata") or {}
    template = pod_template(replicaset)
    version = _labels(template).get(LABEL_VERSION, "")
    return Revision(
        number=number,
        version=version,
        name=str(metadata.get("name", "")),
        bad=ours.BAD in (metadata.get("annotations") or {}) or version in bad_versions,
        template=template,
    )


def _version_became_current(
    deployment: Mapping[str, Any],
    owned: Sequence[Mapping[str, Any]],
    serving_rs: Mapping[str, Any],
) -> datetime | None:
    """When the serving **version** (not the pod template) started serving.

    A ``kubectl rollout restart``, an env or resources tweak or a sidecar bump makes a new
    ReplicaSet of the same version: it must not re-date the version. So walk back the
    unbroken run of newest revisions that carry the serving version and take when its
    oldest member became current: its creation, or for a ReplicaSet the controller
    re-adopted (an undo: it carries ``revision-history``) the later of its creation and
    the Deployment's ``Progressing`` update, since it is older than its return. A
    re-adopted ReplicaSet restarted since: unknown (None), so causality notifies.
    """
    version = _labels(pod_template(serving_rs)).get(LABEL_VERSION, "")
    ordered = sorted(
        (rs for rs in owned if revision_number(rs) is not None),
        key=lambda rs: revision_number(rs) or 0,
        reverse=True,
    )
    serving_number = revision_number(serving_rs)
    run: list[Mapping[str, Any]] = []
    for rs in ordered:
        if serving_number is not None and (revision_number(rs) or 0) > serving_number:
            continue  # a newer template not serving (cannot happen once the read settles)
        if _labels(pod_template(rs)).get(LABEL_VERSION, "") != version:
            break
        run.append(rs)
    oldest = run[-1] if run else serving_rs
    rs_metadata = oldest.get("metadata") or {}
    created = parse_time(rs_metadata.get("creationTimestamp"))
    readopted = REVISION_HISTORY_ANNOTATION in (rs_metadata.get("annotations") or {})
    if not readopted:
        return created
    if oldest is not serving_rs:
        # Re-adopted, then restarted: when it returned is no longer on any object.
        return None
    progressing = None
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Progressing":
            progressing = parse_time(condition.get("lastUpdateTime"))
    moments = [t for t in (created, progressing) if t is not None]
    return max(moments, default=None)
