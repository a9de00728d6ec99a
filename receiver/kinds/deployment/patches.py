"""The patches that change a Deployment and its ReplicaSets (JSON merge patches).

``undo_patch`` restores a target revision's pod template and records why in one request,
under optimistic concurrency. No I/O: the strategy sends what this module builds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from receiver import annotations as ours
from receiver.kinds.merge_patch import merge_patch_to, normalized_template
from receiver.models import Revision

__all__ = [
    "mark_bad_patch",
    "scale_to_zero_patch",
    "template_matches",
    "undo_patch",
    "unmark_bad_patch",
]


def template_matches(deployment: Mapping[str, Any], target: Revision) -> bool:
    """The Deployment already runs the target's template: an undo would change nothing."""
    current = normalized_template((deployment.get("spec") or {}).get("template") or {})
    return current == normalized_template(target.template)


def undo_patch(
    deployment: Mapping[str, Any], target: Revision, annotations: Mapping[str, str | None]
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
    template_patch = merge_patch_to(current, normalized_template(target.template))
    if template_patch:
        patch["spec"] = {"template": template_patch}
    return patch


def scale_to_zero_patch(
    deployment: Mapping[str, Any], annotations: Mapping[str, str | None]
) -> dict[str, Any]:
    """A JSON merge patch that scales the Deployment (a canary) to zero and sets our
    annotations, with its current replica count kept in ``previous-replicas`` for a roll
    forward, in one request.

    It carries the ``resourceVersion`` that was read, so a concurrent change (a person
    scaling or updating the canary) is a 409 and the job reads and decides again. The
    ``/scale`` subresource would take no annotations, so it would need a second write.
    """
    metadata = deployment.get("metadata") or {}
    resource_version = metadata.get("resourceVersion")
    if not resource_version:
        raise ValueError(
            "the Deployment has no metadata.resourceVersion: patch a fresh GET of it, not a"
            " hand-built object"
        )
    replicas = (deployment.get("spec") or {}).get("replicas")
    previous = str(1 if replicas is None else int(replicas))
    marks = dict(annotations)
    if previous != "0":
        marks[ours.PREVIOUS_REPLICAS] = previous
    return {
        "metadata": {"resourceVersion": resource_version, "annotations": marks},
        "spec": {"replicas": 0},
    }


def mark_bad_patch(incident: str) -> dict[str, Any]:
    """Merge patch for the bad version's ReplicaSet: ``rollback-receiver.io/bad`` names the
    incident, so rule 7 never picks that revision again. Adding one annotation cannot
    clobber anyone's change, so no resourceVersion is needed, and it is idempotent."""
    return {"metadata": {"annotations": {ours.BAD: incident}}}


def unmark_bad_patch() -> dict[str, Any]:
    """Merge patch removing ``rollback-receiver.io/bad`` (a person vouched for the version)."""
    return {"metadata": {"annotations": {ours.BAD: None}}}
