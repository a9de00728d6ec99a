"""Pure readers and patch builders for the rollout-undo strategy (a Deployment and its
ReplicaSets, as the API server returns them).

Dicts in, values out: ``deployment_view`` turns a fresh GET of the Deployment and a LIST
of its ReplicaSets into the ``WorkloadView`` the decision table reads, and ``undo_patch``
builds the one JSON merge patch (``application/merge-patch+json``) that restores a target
revision's pod template and records why, under optimistic concurrency. No I/O here: the
``k8s`` adapter sends what this module builds.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from receiver.decide import (
    ANNOTATION_BAD,
    ANNOTATION_CHANGED_AT,
    ANNOTATION_ROLLED_BACK_TO,
    Revision,
    WorkloadView,
    parse_time,
)

__all__ = [
    "LABEL_VERSION",
    "POD_TEMPLATE_HASH",
    "REVISION_ANNOTATION",
    "REVISION_HISTORY_ANNOTATION",
    "deployment_view",
    "gitops_manager",
    "mark_bad_patch",
    "merge_patch_to",
    "pod_template",
    "revision_number",
    "template_matches",
    "undo_patch",
    "unmark_bad_patch",
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
    template = _normalized(spec.get("template") or {})
    serving_version = _labels(template).get(LABEL_VERSION, "")

    owned = [rs for rs in replicasets if _owned_by(rs, metadata)]
    serving_rs = _serving_replicaset(owned, template)
    serving = _revision(serving_rs) if serving_rs is not None else None
    serving_number = serving.number if serving is not None else None

    candidates = []
    for rs in owned:
        if rs is serving_rs:
            continue
        revision = _revision(rs)
        if revision is None:
            continue
        if serving_number is None or revision.number < serving_number:
            candidates.append(revision)
    candidates.sort(key=lambda r: r.number, reverse=True)

    made_current_by_us = bool(serving_version) and (
        annotations.get(ANNOTATION_ROLLED_BACK_TO) == serving_version
        and parse_time(annotations.get(ANNOTATION_CHANGED_AT)) is not None
    )
    if made_current_by_us:
        became_current_at = parse_time(annotations.get(ANNOTATION_CHANGED_AT))
    elif serving_rs is not None:
        became_current_at = _became_current(deployment, serving_rs)
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


def pod_template(replicaset: Mapping[str, Any]) -> dict[str, Any]:
    """The ReplicaSet's pod template as the Deployment would carry it: without the
    ``pod-template-hash`` label (what ``kubectl rollout undo`` restores)."""
    template = _normalized((replicaset.get("spec") or {}).get("template") or {})
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


def template_matches(deployment: Mapping[str, Any], target: Revision) -> bool:
    """The Deployment already runs the target's template: an undo would change nothing."""
    current = _normalized((deployment.get("spec") or {}).get("template") or {})
    return current == _normalized(target.template)


def undo_patch(
    deployment: Mapping[str, Any], target: Revision, annotations: Mapping[str, str]
) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386) that restores ``target``'s pod template and sets our
    annotations in one request.

    It carries the ``resourceVersion`` that was read, so the API server answers 409 if the
    Deployment changed since (optimistic concurrency). ``spec.replicas`` is never in it:
    an HPA may own it.
    """
    metadata = deployment.get("metadata") or {}
    resource_version = metadata.get("resourceVersion")
    if not resource_version:
        raise ValueError(
            "the Deployment has no metadata.resourceVersion: patch a fresh GET of it, not a"
            " hand-built object"
        )
    if not target.template:
        raise ValueError(f"revision {target.number} ({target.name}) has no pod template to restore")
    current = (deployment.get("spec") or {}).get("template") or {}
    patch: dict[str, Any] = {
        "metadata": {"resourceVersion": resource_version, "annotations": dict(annotations)}
    }
    template_patch = merge_patch_to(current, _normalized(target.template))
    if template_patch:
        patch["spec"] = {"template": template_patch}
    return patch


def merge_patch_to(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch turning ``current`` into ``desired``: keys only in ``current``
    become ``null``, changed maps are diffed recursively, lists are replaced whole (RFC 7386
    has no list operations). ``None`` in ``desired`` means absent."""
    patch: dict[str, Any] = {}
    for key in current:
        if (key not in desired or desired[key] is None) and current[key] is not None:
            patch[key] = None
    for key, want in desired.items():
        if want is None:
            continue
        have = current.get(key)
        if isinstance(want, Mapping) and isinstance(have, Mapping):
            sub = merge_patch_to(have, want)
            if sub:
                patch[key] = sub
        elif have != want or key not in current:
            patch[key] = _without_nulls(want)
    return patch


def mark_bad_patch(incident: str) -> dict[str, Any]:
    """Merge patch for the bad version's ReplicaSet: ``rollback-receiver.io/bad`` names the
    incident, so rule 7 never picks that revision again. Adding one annotation cannot
    clobber anyone's change, so no resourceVersion is needed."""
    return {"metadata": {"annotations": {ANNOTATION_BAD: incident}}}


def unmark_bad_patch() -> dict[str, Any]:
    """Merge patch removing ``rollback-receiver.io/bad`` (a person cleared the version)."""
    return {"metadata": {"annotations": {ANNOTATION_BAD: None}}}


# --- helpers --------------------------------------------------------------------------------


def _normalized(template: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy without the ``creationTimestamp: null`` kubectl and old clients write into
    templates; it means nothing and would make equal templates differ."""
    out = copy.deepcopy(dict(template))
    metadata = out.get("metadata")
    if isinstance(metadata, dict) and metadata.get("creationTimestamp", ...) is None:
        out["metadata"] = {k: v for k, v in metadata.items() if k != "creationTimestamp"}
    return out


def _without_nulls(value: Any) -> Any:
    """A copy without ``None`` map values: in a merge patch ``null`` deletes a key, and a
    key that is absent now needs no deleting."""
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _labels(template: Mapping[str, Any]) -> dict[str, str]:
    return dict((template.get("metadata") or {}).get("labels") or {})


def _owned_by(replicaset: Mapping[str, Any], owner_metadata: Mapping[str, Any]) -> bool:
    uid = owner_metadata.get("uid")
    for ref in (replicaset.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") != "Deployment":
            continue
        if uid and ref.get("uid") == uid:
            return True
        if not uid and ref.get("name") == owner_metadata.get("name"):
            return True
    return False


def _serving_replicaset(
    owned: Sequence[Mapping[str, Any]], template: Mapping[str, Any]
) -> Mapping[str, Any] | None:
    """The ReplicaSet whose template equals the Deployment's (the controller keeps one)."""
    matching = [rs for rs in owned if pod_template(rs) == template]
    return max(matching, key=lambda rs: revision_number(rs) or -1, default=None)


def _revision(replicaset: Mapping[str, Any]) -> Revision | None:
    number = revision_number(replicaset)
    if number is None:
        return None
    metadata = replicaset.get("metadata") or {}
    template = pod_template(replicaset)
    return Revision(
        number=number,
        version=_labels(template).get(LABEL_VERSION, ""),
        name=str(metadata.get("name", "")),
        bad=ANNOTATION_BAD in (metadata.get("annotations") or {}),
        template=template,
    )


def _became_current(
    deployment: Mapping[str, Any], serving_rs: Mapping[str, Any]
) -> datetime | None:
    """When the serving ReplicaSet's template became the Deployment's.

    A ReplicaSet created for this template became current when it was created. One the
    controller re-adopted (an undo, or a re-apply of an older template: it then carries
    ``revision-history``) is older than its return, so the later of its creation and the
    ``Progressing`` condition's last update is used.
    """
    rs_metadata = serving_rs.get("metadata") or {}
    created = parse_time(rs_metadata.get("creationTimestamp"))
    readopted = REVISION_HISTORY_ANNOTATION in (rs_metadata.get("annotations") or {})
    if not readopted:
        return created
    progressing = None
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Progressing":
            progressing = parse_time(condition.get("lastUpdateTime"))
    moments = [t for t in (created, progressing) if t is not None]
    return max(moments, default=None)
