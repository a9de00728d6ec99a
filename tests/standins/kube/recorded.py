"""Access to the recorded kube-apiserver exchanges in `shared/fixtures/kubernetes/`."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "kubernetes"


@cache
def _by_sequence() -> dict[int, Path]:
    return {int(p.name[:3]): p for p in FIXTURES.glob("[0-9][0-9][0-9]-*.json")}


def exchange(sequence: int) -> dict[str, Any]:
    """The recorded exchange with this sequence number (`{"request", "response", "timing"}`)."""
    return json.loads(_by_sequence()[sequence].read_text())


def response_body(sequence: int) -> Any:
    return exchange(sequence)["response"]["body"]


def text(name: str) -> str:
    """A recorded kubectl stdout file, e.g. `kubectl-rollout-history-final.txt`."""
    return (FIXTURES / name).read_text()


# Values that differ between any two runs of the same scenario: identities, clocks, addresses.
VOLATILE_KEYS = frozenset(
    {
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "time",
        "lastUpdateTime",
        "lastTransitionTime",
        "startTime",
        "startedAt",
        "podIP",
        "ip",
        "clusterIP",
        "eventTime",
        "firstTimestamp",
        "lastTimestamp",
        "deprecatedFirstTimestamp",
        "deprecatedLastTimestamp",
        "deletionTimestamp",
        "pod-template-hash",
    }
)
_GENERATED = re.compile(
    r"\b(kube-api-access-|(?:fraud-scorer|[a-z]+(?:-[a-z]+)*)-)"
    r"[bcdfghjklmnpqrstvwxz2456789]{5,10}(-[bcdfghjklmnpqrstvwxz2456789]{5})?\b"
)


def _normalise(value: Any) -> Any:
    if isinstance(value, str):
        return _GENERATED.sub(lambda m: m.group(1) + "HASH" + ("-POD" if m.group(2) else ""), value)
    return value


def differences(
    actual: Any, recorded: Any, path: str = "$", ignore: frozenset[str] = frozenset()
) -> list[str]:
    """Field-by-field comparison: same keys everywhere, same values except volatile ones.

    Generated names (ReplicaSet/pod hashes) are compared with the hash masked. `ignore`
    holds dotted paths (`$.spec.clusterIPs`) left out altogether.
    """
    if path in ignore:
        return []
    if isinstance(recorded, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {actual!r}"]
        result = []
        for key in sorted(set(recorded) ^ set(actual)):
            if f"{path}.{key}" in ignore:
                continue
            where = "missing" if key in recorded else "unexpected"
            result.append(f"{path}.{key}: {where}")
        for key in sorted(set(recorded) & set(actual)):
            child = f"{path}.{key}"
            if key in VOLATILE_KEYS and not isinstance(recorded[key], (dict, list)):
                if (recorded[key] is None) != (actual[key] is None):
                    result.append(f"{child}: {actual[key]!r} vs recorded {recorded[key]!r}")
                continue
            result.extend(differences(actual[key], recorded[key], child, ignore))
        return result
    if isinstance(recorded, list):
        if not isinstance(actual, list) or len(actual) != len(recorded):
            return [f"{path}: {actual!r} vs recorded {recorded!r}"]
        return [
            d
            for n, (a, r) in enumerate(zip(actual, recorded, strict=True))
            for d in differences(a, r, f"{path}[{n}]", ignore)
        ]
    if _normalise(actual) != _normalise(recorded):
        return [f"{path}: {actual!r} vs recorded {recorded!r}"]
    return []
