"""Recorded Kubernetes objects (tests/kinds/data) and small edits of them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"


def load(prefix: str) -> dict[str, Any]:
    """A fresh copy of the recorded body whose file name starts with ``prefix``."""
    (path,) = DATA.glob(f"{prefix}-*.json")
    return json.loads(path.read_text())


def items(prefix: str) -> list[dict[str, Any]]:
    """The items of a recorded list."""
    return load(prefix)["items"]


def pod_of(
    template_hash: str,
    *,
    suffix: str = "x",
    deployment: str = "fraud-scorer",
    terminating: bool = False,
) -> dict[str, Any]:
    """A recorded pod moved to another ReplicaSet of ``deployment``."""
    pod = copy.deepcopy(items("019")[0])
    meta = pod["metadata"]
    rs_name = f"{deployment}-{template_hash}"
    meta["name"] = f"{rs_name}-{suffix}"
    meta["labels"]["pod-template-hash"] = template_hash
    meta["ownerReferences"][0]["name"] = rs_name
    meta["ownerReferences"][0]["uid"] = f"uid-of-{rs_name}"
    if terminating:
        meta["deletionTimestamp"] = "2026-11-25T08:41:40Z"
        meta["deletionGracePeriodSeconds"] = 30
    return pod
