"""Helpers shared by this package's tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

KUBE_FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "kubernetes"


def recorded(seq: str) -> Any:
    (path,) = KUBE_FIXTURES.glob(f"{seq}-*.json")
    return json.loads(path.read_text())["response"]["body"]
