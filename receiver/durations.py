"""Prometheus duration syntax (``30s``, ``10m``, ``1h30m``), the one users already type,
or a bare number of seconds (``30``, ``1.5``).

Used by the settings, the policy file, the API and the CLI so every duration reads the same
way wherever it is typed.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_UNITS_SECONDS = {
    "y": 365 * 86400,
    "w": 7 * 86400,
    "d": 86400,
    "h": 3600,
    "m": 60,
    "s": 1,
    "ms": 0.001,
}
# Units must appear in this order, each at most once, as Prometheus' model.ParseDuration wants.
_DURATION_RE = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$"
)


_SECONDS_RE = re.compile(r"^\d+(?:\.\d+)?$")


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration or a bare number of seconds; ``ValueError`` naming
    the accepted syntax otherwise."""
    text = text.strip()
    if _SECONDS_RE.match(text):
        return float(text)
    match = _DURATION_RE.match(text)
    if not text or match is None or not any(match.groups()):
        raise ValueError(
            f"invalid duration {text!r}: use Prometheus syntax such as 30s, 10m, 1h30m, 7d,"
            " or a number of seconds"
        )
    total = 0.0
    for value, unit in zip(match.groups(), ("y", "w", "d", "h", "m", "s", "ms"), strict=True):
        if value is not None:
            total += int(value) * _UNITS_SECONDS[unit]
    return total


def format_duration(seconds: float) -> str:
    """The shortest Prometheus duration for ``seconds`` (whole milliseconds)."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    out = []
    for unit in ("d", "h", "m", "s"):
        size = int(_UNITS_SECONDS[unit] * 1000)
        if ms >= size:
            out.append(f"{ms // size}{unit}")
            ms %= size
    if ms:
        out.append(f"{ms}ms")
    return "".join(out)


def _coerce(value: Any) -> Any:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, bool):
        raise ValueError("a duration must be a string such as 30s, or a number of seconds")
    return value


Duration = Annotated[
    float,
    BeforeValidator(_coerce),
    PlainSerializer(format_duration, return_type=str),
]
"""Seconds, written in Prometheus syntax in files and the environment."""
