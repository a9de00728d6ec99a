"""JSON merge patches (RFC 7386) between two objects, shared by every kind."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

__all__ = ["merge_patch_to", "normalized_template"]


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


def normalized_template(template: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy without the ``creationTimestamp: null`` kubectl and old clients write into
    pod templates; it means nothing and would make equal templates differ."""
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
