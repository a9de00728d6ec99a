"""v1 Services: the ``slot`` selector a blue-green switch changes, and its patch."""

from receiver.kinds.service.patches import switch_patch
from receiver.kinds.service.view import (
    SLOT_LABEL,
    selected_slot,
    selector_changed_at,
    service_annotations,
)

__all__ = [
    "SLOT_LABEL",
    "selected_slot",
    "selector_changed_at",
    "service_annotations",
    "switch_patch",
]
