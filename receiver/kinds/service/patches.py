"""The patch that switches a blue-green Service to another slot (a JSON merge patch).

No I/O: the strategy sends what this module builds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from receiver.kinds.service.view import SLOT_LABEL

__all__ = ["switch_patch"]


def switch_patch(
    service: Mapping[str, Any], slot: str, annotations: Mapping[str, str | None]
) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386) that points the Service's ``slot`` selector at
    ``slot`` and sets our annotations, in one request.

    A merge patch merges maps, so the selector's other keys (``app``...) stay as they are.
    It carries the ``resourceVersion`` that was read: if the Service changed since (someone
    switched it by hand), the API server answers 409 and the job reads and decides again.
    """
    if not slot:
        raise ValueError("no slot to switch to")
    resource_version = (service.get("metadata") or {}).get("resourceVersion")
    if not resource_version:
        raise ValueError(
            "the Service has no metadata.resourceVersion: patch a fresh GET of it, not a"
            " hand-built object"
        )
    return {
        "metadata": {"resourceVersion": resource_version, "annotations": dict(annotations)},
        "spec": {"selector": {SLOT_LABEL: slot}},
    }
