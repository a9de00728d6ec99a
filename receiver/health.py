"""Verification after an action: is the rollout complete, and does the model answer right?

Healthy means two things, checked in this order (design.md, "Verification and
confirmation"):

1. The rollout is complete as ``kubectl rollout status`` judges a Deployment (kubectl
   ``polymorphichelpers/rollout_status.go``, ``DeploymentStatusViewer``), plus no pod of an
   older pod template is left, terminating ones included: an old model server that still
   runs may still answer.
2. The model server passes one pass of the Open Inference Protocol checks (live, ready,
   model ready, metadata naming the expected version, optional dependencies, a sample
   inference), each request with its own timeout.

``verify`` polls both within an overall deadline and returns a ``Verdict``; being
unhealthy is an answer, not an exception.

What this module must not do: talk to Kubernetes. The caller passes readers (callables
returning a ``RolloutStatus`` or a ``Verdict``) built on ``k8s``; this module judges
mappings shaped like the API's JSON and speaks HTTP only to the model server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from receiver.errors import TemporaryError, truncate
from receiver.models import HealthPaths

logger = logging.getLogger(__name__)

POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
# kubectl's deploymentutil.TimedOutReason: the controller gave up on the rollout.
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"


# --- rollout ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RolloutStatus:
    """kubectl's judgement of a rollout: ``done``, ``failed`` (will not finish on its own),
    or neither (still waiting), with kubectl's wording in ``message``."""

    done: bool
    failed: bool
    message: str


def _int(value: Any) -> int:
    # The API omits zero counts (``updatedReplicas`` is absent, not 0).
    return int(value) if value is not None else 0


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in status.get("conditions") or ():
        if cond.get("type") == kind:
            return cond
    return None


def _controller_ref(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return ref
    return None


def _pod_template_hash(obj: Mapping[str, Any]) -> str | None:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(POD_TEMPLATE_HASH_LABEL)


def current_template_hash(
    deployment: Mapping[str, Any], replica_sets: Sequence[Mapping[str, Any]]
) -> str | None:
    """The ``pod-template-hash`` of the Deployment's newest ReplicaSet (highest revision
    among those it controls), or ``None`` when it has none yet.

    The hash cannot be computed from the Deployment itself (the controller hashes the Go
    struct), so it is read from the ReplicaSet the controller made for the template. While
    the controller has not caught up, ``rollout_status`` already reports "waiting" from the
    generation check, so a momentarily stale answer here does no harm.
    """
    uid = (deployment.get("metadata") or {}).get("uid")
    best: tuple[int, str] | None = None
    for rs in replica_sets:
        ref = _controller_ref(rs)
        if ref is None or ref.get("kind") != "Deployment" or ref.get("uid") != uid:
            continue
        annotations = (rs.get("metadata") or {}).get("annotations") or {}
        try:
            revision = int(annotations.get(REVISION_ANNOTATION, ""))
        except ValueError:
            continue
        template_hash = _pod_template_hash(rs)
        if template_hash and (best is None or revision > best[0]):
            best = (revision, template_hash)
    return best[1] if best else None


def _deployment_pod_hashes(name: str, pods: Sequence[Mapping[str, Any]]) -> list[str]:
    """Template hashes of the pods the Deployment's ReplicaSets control, one per pod.

    The controller names a ReplicaSet ``<deployment>-<pod-template-hash>`` and the hash has
    no dashes, so a pod belongs to this Deployment exactly when its controlling
    ReplicaSet's name is its own hash behind the Deployment's name. That needs no
    ReplicaSet list and cannot match a Deployment whose name is a prefix of this one.
    """
    hashes = []
    for pod in pods:
        template_hash = _pod_template_hash(pod)
        ref = _controller_ref(pod)
        if (
            template_hash
            and ref is not None
            and ref.get("kind") == "ReplicaSet"
            and ref.get("name") == f"{name}-{template_hash}"
        ):
            hashes.append(template_hash)
    return hashes


def rollout_status(
    deployment: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]] = (),
    *,
    current_hash: str | None = None,
) -> RolloutStatus:
    """Judge a Deployment's rollout as ``kubectl rollout status`` does, then require that
    no pod of an older template is left among ``pods``.

    ``pods`` is a pod list of the Deployment's namespace (other workloads' pods are
    ignored). ``current_hash`` is the new ReplicaSet's ``pod-template-hash``
    (``current_template_hash``); without it, pods of more than one template mean old ones
    are left. A paused Deployment whose rollout is not complete is ``failed``: it will not
    progress until a person resumes it, so waiting out the deadline would only hide why.
    """
    metadata = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    name = metadata.get("name", "")

    if _int(metadata.get("generation")) > _int(status.get("observedGeneration")):
        return RolloutStatus(False, False, "Waiting for deployment spec update to be observed...")

    progressing = _condition(status, "Progressing")
    if progressing is not None and progressing.get("reason") == PROGRESS_DEADLINE_EXCEEDED:
        return RolloutStatus(False, True, f'deployment "{name}" exceeded its progress deadline')

    replicas = spec.get("replicas")
    updated = _int(status.get("updatedReplicas"))
    total = _int(status.get("replicas"))
    available = _int(status.get("availableReplicas"))
    waiting = f'Waiting for deployment "{name}" rollout to finish: '
    message = None
    if replicas is not None and updated < int(replicas):
        message = f"{waiting}{updated} out of {int(replicas)} new replicas have been updated..."
    elif total > updated:
        message = f"{waiting}{total - updated} old replicas are pending termination..."
    elif available < updated:
        message = f"{waiting}{available} of {updated} updated replicas are available..."
    else:
        hashes = _deployment_pod_hashes(name, pods)
        if current_hash is not None:
            old = sum(1 for h in hashes if h != current_hash)
        else:
            old = len(hashes) if len(set(hashes)) > 1 else 0
        if old:
            message = f"{waiting}{old} old pods are still running or terminating..."

    if message is None:
        return RolloutStatus(True, False, f'deployment "{name}" successfully rolled out')
    if spec.get("paused"):
        return RolloutStatus(
            False, True, f'deployment "{name}" is paused and cannot finish its rollout: {message}'
        )
    return RolloutStatus(False, False, message)


# --- model server probe ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check:
    """One request of a probe: what was asked, what came back, how long it took."""

    name: str
    url: str
    ok: bool
    status: int | None
    detail: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer of a probe or of ``verify``: healthy, or unhealthy with a reason a person
    can act on, plus the checks that led to it."""

    healthy: bool
    reason: str
    checks: tuple[Check, ...] = ()


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


# --- verification loop -------------------------------------------------------------------


async def verify(
    *,
    read_rollout: Callable[[], Awaitable[RolloutStatus]],
    probe: Callable[[], Awaitable[Verdict]],
    # A parameter, not the caller's asyncio.timeout: the deadline is measured on ``clock``
    # and its expiry is a verdict, not an exception.
    timeout: float,  # noqa: ASYNC109
    poll_interval: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
) -> Verdict:
    """Wait for the rollout to complete, then for the probe to pass, within ``timeout``.

    A model server may need a while to load after its pod is ready, so a failing probe is
    retried every ``poll_interval`` until the deadline, as is an unfinished rollout. A
    failed rollout (progress deadline exceeded, paused) ends at once. Past the deadline
    the verdict reads ``timed out after Ns: <last reason>``. A ``TemporaryError`` from
    ``read_rollout`` (API server busy) is a failed poll; other exceptions propagate, and
    so does cancellation. Each read or probe is also cut at the deadline, so a hanging
    call cannot stretch verification.
    """
    deadline = clock() + timeout
    last = Verdict(False, "no check finished")
    rollout_done = False

    def timed_out() -> Verdict:
        return Verdict(False, f"timed out after {timeout:g}s: {last.reason}", last.checks)

    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            return timed_out()
        running = "the probe" if rollout_done else "the rollout read"
        # Cut a hanging read or probe at the deadline; this is the only TimeoutError
        # caught below (``expired()``), so one raised by a reader still propagates.
        cut = asyncio.timeout(remaining)
        try:
            async with cut:
                if not rollout_done:
                    try:
                        status = await read_rollout()
                    except TemporaryError as exc:
                        last = Verdict(False, f"could not read the rollout: {exc}")
                    else:
                        if status.failed:
                            return Verdict(False, f"rollout failed: {status.message}")
                        rollout_done = status.done
                        if not rollout_done:
                            last = Verdict(False, status.message)
                if rollout_done:
                    running = "the probe"
                    verdict = await probe()
                    if verdict.healthy:
                        return verdict
                    last = verdict
        except TimeoutError:
            if not cut.expired():
                raise
            last = Verdict(False, f"{last.reason} ({running} was still running)", last.checks)
            return timed_out()
        remaining = deadline - clock()
        if remaining <= 0:
            return timed_out()
        logger.debug("verification continues: %s", last.reason)
        await asyncio.sleep(min(poll_interval, remaining))
