"""apps/v1 Deployments and their ReplicaSets: view, patches, rollout status."""

from receiver.kinds.deployment.patches import (
    mark_bad_patch,
    scale_to_zero_patch,
    template_matches,
    undo_patch,
    unmark_bad_patch,
)
from receiver.kinds.deployment.rollout import current_template_hash, rollout_status
from receiver.kinds.deployment.view import (
    LABEL_VERSION,
    POD_TEMPLATE_HASH,
    REVISION_ANNOTATION,
    REVISION_HISTORY_ANNOTATION,
    available_replicas,
    deployment_view,
    gitops_manager,
    last_rollout_at,
    owned_replicasets,
    pod_template,
    revision_number,
    selector_string,
    spec_replicas,
    template_version,
)

__all__ = [
    "LABEL_VERSION",
    "POD_TEMPLATE_HASH",
    "REVISION_ANNOTATION",
    "REVISION_HISTORY_ANNOTATION",
    "available_replicas",
    "current_template_hash",
    "deployment_view",
    "gitops_manager",
    "last_rollout_at",
    "mark_bad_patch",
    "owned_replicasets",
    "pod_template",
    "revision_number",
    "rollout_status",
    "scale_to_zero_patch",
    "selector_string",
    "spec_replicas",
    "template_matches",
    "template_version",
    "undo_patch",
    "unmark_bad_patch",
]
