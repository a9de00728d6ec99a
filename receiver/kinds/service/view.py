"""What a blue-green rollback reads from a v1 Service: the slot it selects, and since when.

Owns what "selected slot" and "the selector changed at" mean for a Service. Dicts in,
values out; no I/O. The Deployments behind the slots are ``receiver.kinds.deployment``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from receiver.models import parse_time

__all__ = ["SLOT_LABEL", "selected_slot", "selector_changed_at", "service_annotations"]

SLOT_LABEL = "slot"
"""The selector key whose value names the slot that takes the traffic (design.md,
Strategies: ``blue`` or ``green``)."""


def selected_slot(service: Mapping[str, Any]) -> str | None:
    """The value of the Service's ``slot`` selector, or None when it selects no slot."""
    selector = (service.get("spec") or {}).get("selector") or {}
    value = selector.get(SLOT_LABEL)
    return str(value) if value else None


def service_annotations(service: Mapping[str, Any]) -> dict[str, str]:
    """The Service's annotations (ours among them: the Service is the blue-green workload)."""
    return dict((service.get("metadata") or {}).get("annotations") or {})


def selector_changed_at(service: Mapping[str, Any]) -> datetime | None:
    """The latest time a field manager that owns ``spec.selector`` wrote the Service.

    The API server keeps no history of a field, only, per manager, the fields it owns and
    the time of its last write (``managedFields``). The selector is an atomic map, so its
    owner is the manager that last set it; that manager's time is when the selector last
    changed, or later if the same manager changed something else since (then the version
    looks younger than it is, which the causality rule errs towards: it blames the
    version later, never earlier). None when no entry owns the selector (managed fields
    stripped, or an object from a client that sends none).
    """
    latest: datetime | None = None
    for entry in (service.get("metadata") or {}).get("managedFields") or ():
        fields = entry.get("fieldsV1") or {}
        if "f:selector" not in (fields.get("f:spec") or {}):
            continue
        at = parse_time(entry.get("time"))
        if at is not None and (latest is None or at > latest):
            latest = at
    return latest
