"""The test suite's Kubernetes stand-in, scaled to hundreds or thousands of Deployments, and
one model-server stand-in that answers for every model name.

``tests/standins/kube`` is built for a few objects per test: each controller tick syncs
every Deployment and ReplicaSet, and each sync scans every object of its kind. That is
quadratic in the number of Deployments (about 0.25 s per tick at 300 Deployments on the
benchmark machine, seconds at 1,000), and it runs on the same event loop as whatever
shares its process. For the benchmarks, without changing any file of the stand-in:

- ``IndexedStore`` (a ``Store`` subclass) indexes objects by (kind, namespace) so that
  ``items(kind, namespace)`` and ``owned_by`` read one namespace instead of the whole kind,
  remembers which namespaces were written since the controller's last tick, and keeps only
  the last ``HISTORY_KEPT`` changes (older watches get 410, as after ``compact()``; the
  receiver does not watch).
- ``ScopedController`` runs the stand-in's own ``reconcile`` over the namespaces written
  since its previous tick only (every model lives in a namespace of its own). The per-object
  behaviour (revisions, rolling update steps, kubelet readiness, status) is the stand-in's,
  unchanged; what is lost is the re-evaluation of time-based conditions (progress
  deadlines) in a namespace nobody writes to, which no benchmark rollout comes near.

Deployments are seeded through the stand-in's own Python API (``create_deployment``,
``set_version``), all models at once per step, then the serving ReplicaSet is backdated
before the alert's ``startsAt`` as ``tests/worker/conftest.py``'s ``backdate_current`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from _common import ROOT  # noqa: F401  (puts the repository on sys.path)
from aiohttp import web

from tests.standins.kube.controller import Controller
from tests.standins.kube.server import KubeStandIn, rollout_complete
from tests.standins.kube.store import ObjectKey, Store
from tests.standins.model_server import ModelServer, _error
from tests.worker.conftest import SAMPLE_REQUEST, VERSION_LABEL, backdate_current

HISTORY_KEPT = 20_000


@dataclass
class IndexedStore(Store):
    """``Store`` with a (kind, namespace) index and the set of namespaces written lately."""

    index: dict[tuple[str, str], set[ObjectKey]] = field(default_factory=dict)
    touched: set[str] = field(default_factory=set)
    scope: set[str] | None = None

    def items(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        bucket = self.objects.get(kind, {})
        if namespace is not None:
            keys = sorted(self.index.get((kind, namespace), ()))
        elif self.scope is not None:
            keys = sorted(k for ns in self.scope for k in self.index.get((kind, ns), ()))
        else:
            keys = sorted(bucket)
        return [bucket[k] for k in keys if k in bucket]

    def _commit(
        self, kind: str, obj: dict[str, Any], change_type: str, old: dict[str, Any] | None
    ) -> dict[str, Any]:
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        result = super()._commit(kind, obj, change_type, old)
        keys = self.index.setdefault((kind, key[0]), set())
        if change_type == "DELETED":
            keys.discard(key)
        else:
            keys.add(key)
        self.touched.add(key[0])
        if len(self.history) > HISTORY_KEPT * 2:
            dropped = len(self.history) - HISTORY_KEPT
            self.floor = self.history[dropped - 1].rv
            del self.history[:dropped]
        return result

    @contextlib.contextmanager
    def scoped(self, namespaces: set[str]) -> Iterator[None]:
        """While inside, whole-kind listings see only ``namespaces``."""
        self.scope = namespaces
        try:
            yield
        finally:
            self.scope = None


class ScopedController(Controller):
    """The stand-in's controller, ticking only the namespaces written since the last tick."""

    store: IndexedStore

    def __init__(self, store: IndexedStore, step: float = 0.01, seed: int = 0) -> None:
        super().__init__(store, step=step, seed=seed)
        self.tick_seconds: list[float] = []

    def reconcile(self) -> bool:
        namespaces, self.store.touched = self.store.touched, set()
        if not namespaces:
            return False
        started = time.perf_counter()
        with self.store.scoped(namespaces):
            acted = super().reconcile()
        self.tick_seconds.append(time.perf_counter() - started)
        if len(self.tick_seconds) > 10_000:
            del self.tick_seconds[:5_000]
        return acted


def scaled_kube(step: float = 0.01) -> KubeStandIn:
    """A ``KubeStandIn`` (not started) with the indexed store and the scoped controller."""
    kube = KubeStandIn(step=step)
    kube.store = IndexedStore()
    kube.controller = ScopedController(kube.store, step=step)
    return kube


# -------------------------------------------------------------------------- seeding


@dataclass(frozen=True)
class BenchModel:
    namespace: str
    name: str


def bench_models(count: int, tag: str = "m") -> list[BenchModel]:
    """``count`` models, each alone in its namespace (``bench-m0001/m0001``...)."""
    return [BenchModel(f"bench-{tag}{i:04d}", f"{tag}{i:04d}") for i in range(count)]


async def wait_all_complete(
    kube: KubeStandIn,
    models: list[BenchModel],
    revision: int,
    timeout: float,  # noqa: ASYNC109
) -> None:
    """Poll until every model's Deployment is at ``revision`` and its rollout is complete."""
    deadline = time.monotonic() + timeout
    pending = list(models)
    while pending:
        still = []
        for m in pending:
            d = kube.store.get("deployments", m.namespace, m.name)
            annotations = (d or {}).get("metadata", {}).get("annotations") or {}
            rev = annotations.get("deployment.kubernetes.io/revision")
            if d is None or rev != str(revision) or not rollout_complete(d):
                still.append(m)
        pending = still
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} rollouts not complete after {timeout}s")
        await asyncio.sleep(0.1)


async def seed(
    kube: KubeStandIn, models: list[BenchModel], alert_started: datetime, *, backdate_by: float
) -> float:
    """Every model's Deployment rolled out v1 -> v2 -> v3, serving RS backdated; seconds."""
    from datetime import timedelta

    started = time.perf_counter()
    for m in models:
        await kube.create_deployment(m.namespace, m.name, "v1", wait=False)
    await wait_all_complete(kube, models, 1, timeout=60 + len(models) * 0.2)
    for revision, version in ((2, "v2"), (3, "v3")):
        for m in models:
            await kube.set_version(m.namespace, m.name, version)
        await wait_all_complete(kube, models, revision, timeout=60 + len(models) * 0.2)
    for m in models:
        backdate_current(
            kube, alert_started - timedelta(seconds=backdate_by), namespace=m.namespace, name=m.name
        )
    kube.requests.clear()
    if isinstance(kube.controller, ScopedController):
        kube.controller.tick_seconds.clear()
    return time.perf_counter() - started


def write_policy(
    path: Path, models: list[BenchModel], base_url: str | None, verify_timeout: str = "30s"
) -> Path:
    entries = []
    for m in models:
        entry: dict[str, Any] = {
            "name": m.name,
            "namespace": m.namespace,
            "tier": "critical",
            "deployment": m.name,
        }
        if base_url:
            entry["health"] = {"base_url": base_url, "sample_request": SAMPLE_REQUEST}
        entries.append(entry)
    policy = {"defaults": {"verify_timeout": verify_timeout, "cooldown": "30m"}, "models": entries}
    path.write_text(yaml.safe_dump(policy))
    return path


def serving_version(kube: KubeStandIn, namespace: str, name: str) -> str | None:
    d = kube.store.get("deployments", namespace, name)
    if d is None:
        return None
    return d["spec"]["template"]["metadata"]["labels"].get(VERSION_LABEL)


# -------------------------------------------------------------------------- model server


class AnyModelServer(ModelServer):
    """The model-server stand-in, answering for every model name: model ``m0001`` in any
    namespace serves the version its Deployment's pod template names (``bench-<name>``)."""

    def __init__(self, kube: KubeStandIn) -> None:
        super().__init__(model="*", version=None)
        self.kube = kube

    def _served(self, request: web.Request) -> tuple[str, str | None]:
        name = request.match_info["name"]
        return name, serving_version(self.kube, f"bench-{name}", name)

    async def _enter(self, request: web.Request, route: str) -> None:
        await request.read()  # no request log: thousands of probes

    def _unknown_model(self, request: web.Request) -> web.Response | None:
        _, version = self._served(request)
        if version is None:
            return _error(404, f"model {request.match_info['name']!r} not found")
        return None

    def current_version(self) -> str | None:
        return "any"  # live/ready of the server itself

    async def _model_metadata(self, request: web.Request) -> web.Response:
        await self._enter(request, "model_metadata")
        name, version = self._served(request)
        if version is None:
            return _error(404, f"model {name!r} is not loaded")
        return web.json_response(
            {
                "name": name,
                "versions": [version],
                "platform": "standin",
                "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}],
                "outputs": [{"name": "output-0", "datatype": "FP32", "shape": [-1, 1]}],
            }
        )

    async def _infer(self, request: web.Request) -> web.Response:
        await self._enter(request, "infer")
        name, version = self._served(request)
        if version is None:
            return _error(404, f"model {name!r} is not loaded")
        return web.json_response(
            {
                "model_name": name,
                "model_version": version,
                "outputs": [
                    {"name": "output-0", "datatype": "FP32", "shape": [1, 1], "data": [0.5]}
                ],
            }
        )


def template_patches(kube: KubeStandIn) -> list[Any]:
    """PATCHes of a Deployment that change its pod template (the rollbacks)."""
    out = []
    for r in kube.requests_to("PATCH", "/apis/apps/v1/namespaces/*/deployments/*"):
        body = r.body if isinstance(r.body, dict) else {}
        if "template" in (body.get("spec") or {}):
            out.append(r)
    return out
