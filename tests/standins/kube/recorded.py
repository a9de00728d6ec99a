"""Access to the recorded kube-apiserver exchanges in `shared/fixtures/kubernetes/`."""

from __future__ import annotations

import base64
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "kubernetes"


@cache
def _by_sequence() -> dict[int, Path]:
    return {int(p.name[:3]): p for p in FIXTURES.glob("[0-9][0-9][0-9]-*.json")}


def sequences() -> list[int]:
    """The sequence numbers of every recorded exchange, in order."""
    return sorted(_by_sequence())


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


# ---------------------------------------------------------------- protobuf answers (kubectl)


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def _fields(data: bytes) -> list[tuple[int, Any]]:
    """(field number, value) pairs of one protobuf message: varints and length-delimited."""
    result: list[tuple[int, Any]] = []
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
        elif wire == 2:
            length, at = _varint(data, at)
            value, at = data[at : at + length], at + length
        elif wire == 1:
            value, at = data[at : at + 8], at + 8
        elif wire == 5:
            value, at = data[at : at + 4], at + 4
        else:
            raise ValueError(f"protobuf wire type {wire} is not expected in a Kubernetes object")
        result.append((number, value))
    return result


def _string_map(entries: list[bytes]) -> dict[str, str]:
    pairs = (dict(_fields(entry)) for entry in entries)
    return {p.get(1, b"").decode(): p.get(2, b"").decode() for p in pairs}


def _object_meta(data: bytes) -> dict[str, Any]:
    """ObjectMeta fields 1 name, 3 namespace, 7 generation, 11 labels, 12 annotations."""
    fields = _fields(data)
    single = dict(fields)
    meta: dict[str, Any] = {
        "name": single.get(1, b"").decode(),
        "namespace": single.get(3, b"").decode(),
    }
    if 7 in single:
        meta["generation"] = single[7]
    labels = _string_map([v for n, v in fields if n == 11])
    annotations = _string_map([v for n, v in fields if n == 12])
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    return meta


def protobuf_summary(encoded: str) -> dict[str, Any]:
    """What a recorded `application/vnd.kubernetes.protobuf` answer says, as comparable JSON.

    The envelope (`k8s\\0` + runtime.Unknown) gives kind and apiVersion; the object's (or each
    list item's) ObjectMeta gives name, namespace, generation, labels and annotations.
    """
    data = base64.b64decode(encoded)
    if data[:4] != b"k8s\x00":
        raise ValueError("not a Kubernetes protobuf body (no k8s\\0 magic)")
    envelope = dict(_fields(data[4:]))
    type_meta = dict(_fields(envelope[1]))
    kind = type_meta[2].decode()
    summary: dict[str, Any] = {"kind": kind, "apiVersion": type_meta[1].decode()}
    body = _fields(envelope[2])
    if kind.endswith("List"):
        summary["items"] = [_object_meta(dict(_fields(v))[1]) for n, v in body if n == 2]
    else:
        summary["metadata"] = _object_meta(dict(body)[1])
    return summary


def json_summary(body: dict[str, Any]) -> dict[str, Any]:
    """The same summary of a JSON answer, to compare with `protobuf_summary`."""

    def meta(obj: dict[str, Any]) -> dict[str, Any]:
        source = obj.get("metadata") or {}
        picked = {"name": source.get("name", ""), "namespace": source.get("namespace", "")}
        for key in ("generation", "labels", "annotations"):
            if source.get(key):
                picked[key] = source[key]
        return picked

    summary: dict[str, Any] = {"kind": body.get("kind"), "apiVersion": body.get("apiVersion")}
    if "items" in body:
        summary["items"] = [meta(item) for item in body["items"]]
    else:
        summary["metadata"] = meta(body)
    return summary
