"""apps/v1 Deployments and their ReplicaSets: view, patches, rollout status."""

from receiver.kinds.deployment.patches import (
    mark_bad_patch,
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
    deployment_view,
    gitops_manager,
    owned_replicasets,
    pod_template,
    revision_number,
    selector_string,
)

__all__ = [
    "LABEL_VERSION",
    "POD_TEMPLATE_HASH",
    "REVISION_ANNOTATION",
    "REVISION_HISTORY_ANNOTATION",
    "current_template_hash",
    "deployment_view",
    "gitops_manager",
    "mark_bad_patch",
    "owned_replicasets",
    "pod_template",
    "revision_number",
    "rollout_status",
    "selector_string",
    "template_matches",
    "undo_patch",
    "unmark_bad_patch",
]
