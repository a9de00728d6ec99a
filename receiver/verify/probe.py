"""One pass of the Open Inference Protocol checks against a model server.

Live, ready, model ready, metadata naming the expected version (ready is not the right
model), an optional dependencies route, and a sample inference, each request with its own
timeout (design.md, Verification). Being unhealthy is a ``Verdict``, not an exception.
What this module must not do: talk to Kubernetes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp

from receiver.errors import truncate
from receiver.models import Check, Verdict
from receiver.policy import HealthPaths

__all__ = ["probe_model"]


class _CheckFailed(Exception):
    """A check's answer is wrong; carries the reason for the verdict."""


def _url(base_url: str, path: str, model: str) -> str:
    # str.replace, not str.format: a custom path may hold other braces.
    return base_url.rstrip("/") + path.replace("{model}", quote(model, safe=""))


async def _request(
    session: aiohttp.ClientSession,
    name: str,
    method: str,
    url: str,
    *,
    request_timeout: float,
    body: Mapping[str, Any] | None = None,
) -> tuple[Check, Any]:
    """One request with its own timeout; a failed check on anything but a 2xx."""
    started = time.monotonic()
    status: int | None = None
    try:
        async with session.request(
            method,
            url,
            json=dict(body) if body is not None else None,
            timeout=aiohttp.ClientTimeout(total=request_timeout),
            allow_redirects=False,
        ) as response:
            status = response.status
            text = await response.text(errors="replace")
    except TimeoutError:
        detail = f"no answer within {request_timeout:g}s"
    except aiohttp.ClientError as exc:
        detail = truncate(f"{type(exc).__name__}: {exc}")
    else:
        seconds = time.monotonic() - started
        if status is not None and 200 <= status < 300:
            return Check(name, url, True, status, "", seconds), text
        detail = f"answered {status}: {truncate(text.strip())}"
    seconds = time.monotonic() - started
    check = Check(name, url, False, status, detail, seconds)
    return check, None


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise _CheckFailed(f"answered non-JSON: {truncate(text.strip())}") from exc


def _check_versions(text: str, model: str, version: str) -> None:
    body = _json(text)
    versions = body.get("versions") if isinstance(body, dict) else None
    if not isinstance(versions, list):
        raise _CheckFailed(f"metadata of {model} lists no versions, expected {version}")
    if version not in [str(v) for v in versions]:
        served = ", ".join(str(v) for v in versions) or "none"
        raise _CheckFailed(
            f"ready is not the right model: {model} serves {served}, expected {version}"
        )


def _check_outputs(text: str) -> None:
    body = _json(text)
    outputs = body.get("outputs") if isinstance(body, dict) else None
    if not isinstance(outputs, list) or not outputs:
        raise _CheckFailed(f"answered without outputs: {truncate(text.strip())}")


async def probe_model(
    session: aiohttp.ClientSession,
    *,
    base_url: str,
    model: str,
    version: str,
    paths: HealthPaths,
    sample_request: Mapping[str, Any] | None,
    request_timeout: float,
) -> Verdict:
    """One pass of the Open Inference Protocol checks against ``base_url``, stopping at the
    first failure: live, ready, model ready, metadata listing ``version``, the optional
    dependencies route, and an inference with ``sample_request`` when one is configured.

    Never raises for an unhealthy or unreachable server: the verdict names the check, the
    URL and the status or error. Cancellation propagates.
    """
    steps: list[tuple[str, str, str, Mapping[str, Any] | None]] = [
        ("live", "GET", paths.live, None),
        ("ready", "GET", paths.ready, None),
        ("model_ready", "GET", paths.model_ready, None),
        ("model_metadata", "GET", paths.model_metadata, None),
    ]
    if paths.dependencies:
        steps.append(("dependencies", "GET", paths.dependencies, None))
    if sample_request is not None:
        steps.append(("infer", "POST", paths.infer, sample_request))

    checks: list[Check] = []
    for name, method, path, body in steps:
        url = _url(base_url, path, model)
        check, text = await _request(
            session, name, method, url, request_timeout=request_timeout, body=body
        )
        if check.ok:
            try:
                if name == "model_metadata":
                    _check_versions(text, model, version)
                elif name == "infer":
                    _check_outputs(text)
            except _CheckFailed as exc:
                check = Check(name, url, False, check.status, str(exc), check.seconds)
        checks.append(check)
        if not check.ok:
            reason = f"{name} check failed ({method} {url}): {check.detail}"
            return Verdict(False, reason, tuple(checks))
    return Verdict(
        True, f"{model} {version} is healthy ({len(checks)} checks passed)", tuple(checks)
    )
