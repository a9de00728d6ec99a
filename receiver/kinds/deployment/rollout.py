"""A Deployment's rollout judged as ``kubectl rollout status`` judges it, plus no old pods.

kubectl ``polymorphichelpers/rollout_status.go`` (``DeploymentStatusViewer``), and then no
pod of an older pod template left, terminating ones included: an old model server that
still runs may still answer. Dicts in, a ``RolloutStatus`` out; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from receiver.kinds.deployment.view import (
    POD_TEMPLATE_HASH,
    controller_ref,
    owned_replicasets,
    revision_number,
)
from receiver.models import RolloutStatus

__all__ = ["current_template_hash", "rollout_status"]

# kubectl's deploymentutil.TimedOutReason: the controller gave up on the rollout.
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"


def _int(value: Any) -> int:
    # The API omits zero counts (``updatedReplicas`` is absent, not 0).
    return int(value) if value is not None else 0


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in status.get("conditions") or ():
        if cond.get("type") == kind:
            return cond
    return None


def _pod_template_hash(obj: Mapping[str, Any]) -> str | None:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(POD_TEMPLATE_HASH)


def current_template_hash(
    deployment: Mapping[str, Any], replica_sets: Sequence[Mapping[str, Any]]
) -> str | None:
    """The ``pod-template-hash`` of the Deployment's newest ReplicaSet (highest revision
    among those it controls), or ``None`` when it has none yet.

    The hash cannot be computed from the Deployment itself (the controller hashes the Go
    struct), so it is read from the ReplicaSet the controller made for the template. While
    the controller has not caught up, ``rollout_status`` already reports "waiting" from the
    generation check, so a momentarily stale answer here does no harm.
    """
    best: tuple[int, str] | None = None
    for rs in owned_replicasets(deployment, replica_sets):
        revision = revision_number(rs)
        if revision is None:
            continue
        template_hash = _pod_template_hash(rs)
        if template_hash and (best is None or revision > best[0]):
            best = (revision, template_hash)
    return best[1] if best else None


def _deployment_pod_hashes(name: str, pods: Sequence[Mapping[str, Any]]) -> list[str]:
    """Template hashes of the pods the Deployment's ReplicaSets control, one per pod.

    The controller names a ReplicaSet ``<deployment>-<pod-template-hash>`` and the hash has
    no dashes, so a pod belongs to this Deployment exactly when its controlling
    ReplicaSet's name is its own hash behind the Deployment's name. That needs no
    ReplicaSet list and cannot match a Deployment whose name is a prefix of this one.
    """
    hashes = []
    for pod in pods:
        template_hash = _pod_template_hash(pod)
        ref = controller_ref(pod)
        if (
            template_hash
            and ref is not None
            and ref.get("kind") == "ReplicaSet"
            and ref.get("name") == f"{name}-{template_hash}"
        ):
            hashes.append(template_hash)
    return hashes


def rollout_status(
    deployment: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]] = (),
    *,
    current_hash: str | None = None,
) -> RolloutStatus:
    """Judge a Deployment's rollout as ``kubectl rollout status`` does, then require that
    no pod of an older template is left among ``pods``.

    ``pods`` is a pod list of the Deployment's namespace (other workloads' pods are
    ignored). ``current_hash`` is the new ReplicaSet's ``pod-template-hash``
    (``current_template_hash``); without it, pods of more than one template mean old ones
    are left. A paused Deployment whose rollout is not complete is ``failed``: it will not
    progress until a person resumes it, so waiting out the deadline would only hide why.
    """
    metadata = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    name = metadata.get("name", "")

    if _int(metadata.get("generation")) > _int(status.get("observedGeneration")):
        return RolloutStatus(False, False, "Waiting for deployment spec update to be observed...")

    progressing = _condition(status, "Progressing")
    if progressing is not None and progressing.get("reason") == PROGRESS_DEADLINE_EXCEEDED:
        return RolloutStatus(False, True, f'deployment "{name}" exceeded its progress deadline')

    replicas = spec.get("replicas")
    updated = _int(status.get("updatedReplicas"))
    total = _int(status.get("replicas"))
    available = _int(status.get("availableReplicas"))
    waiting = f'Waiting for deployment "{name}" rollout to finish: '
    message = None
    if replicas is not None and updated < int(replicas):
        message = f"{waiting}{updated} out of {int(replicas)} new replicas have been updated..."
    elif total > updated:
        message = f"{waiting}{total - updated} old replicas are pending termination..."
    elif available < updated:
        message = f"{waiting}{available} of {updated} updated replicas are available..."
    else:
        hashes = _deployment_pod_hashes(name, pods)
        if current_hash is not None:
            old = sum(1 for h in hashes if h != current_hash)
        else:
            old = len(hashes) if len(set(hashes)) > 1 else 0
        if old:
            message = f"{waiting}{old} old pods are still running or terminating..."

    if message is None:
        return RolloutStatus(True, False, f'deployment "{name}" successfully rolled out')
    if spec.get("paused"):
        return RolloutStatus(
            False, True, f'deployment "{name}" is paused and cannot finish its rollout: {message}'
        )
    return RolloutStatus(False, False, message)
