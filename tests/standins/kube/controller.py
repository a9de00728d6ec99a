"""Deployment, ReplicaSet and kubelet behaviour, condensed into one asyncio task.

Each tick runs, in order: the deployment controller once per Deployment (one sync, as
kube-controller-manager's `syncDeployment`: revision bookkeeping, rolling update steps,
status), a kubelet pass (pods created in an earlier tick turn Running/Ready unless held), and
the ReplicaSet controller (create/delete pods to match `spec.replicas`, then status). Ticks
are `step` seconds apart while anything changes, so rollouts pass through the recorded
intermediate states (NewReplicaSetCreated -> ReplicaSetUpdated -> NewReplicaSetAvailable)
quickly and in a fixed order.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import math
import random
from typing import Any

from .defaults import apply_defaults
from .objects import (
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    NOT_COPIED_ANNOTATIONS,
    POD_TEMPLATE_HASH,
    PODS,
    REVISION,
    REVISION_HISTORY,
    SAFE_ALPHABET,
    VERSION_LABEL,
    fields_v1,
    now,
    pod_template_hash,
    record_manager,
    templates_equal,
    timestamp,
)
from .store import Store

CONTROLLER_MANAGER = "kube-controller-manager"

Obj = dict[str, Any]


def _meta(obj: Obj) -> Obj:
    return obj["metadata"]


def _revision(rs: Obj) -> int:
    try:
        return int((_meta(rs).get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _spec_replicas(obj: Obj) -> int:
    return int(obj.get("spec", {}).get("replicas", 0))


def _status_int(obj: Obj, key: str) -> int:
    return int((obj.get("status") or {}).get(key, 0))


def _resolve(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    text = str(value)
    if text.endswith("%"):
        exact = total * int(text[:-1]) / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(text)


def _fenceposts(d: Obj) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) resolved against spec.replicas (ResolveFenceposts)."""
    strategy = d["spec"].get("strategy") or {}
    if strategy.get("type") != "RollingUpdate":
        return 0, 0
    rolling = strategy.get("rollingUpdate") or {}
    replicas = _spec_replicas(d)
    surge = _resolve(rolling.get("maxSurge", "25%"), replicas, True)
    unavailable = _resolve(rolling.get("maxUnavailable", "25%"), replicas, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def max_surge(d: Obj) -> int:
    return _fenceposts(d)[0]


def max_unavailable(d: Obj) -> int:
    replicas = _spec_replicas(d)
    if replicas == 0:
        return 0
    return min(_fenceposts(d)[1], replicas)


def _condition(status: Obj, kind: str) -> Obj | None:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), None)


def _set_condition(
    status: Obj, kind: str, value: str, reason: str, message: str, *, force: bool = False
) -> None:
    """SetDeploymentCondition: same status+reason is a no-op; a change moves it to the end."""
    current = _condition(status, kind)
    if current and current["status"] == value and current["reason"] == reason and not force:
        return
    moment = timestamp()
    condition = {
        "type": kind,
        "status": value,
        "lastUpdateTime": moment,
        "lastTransitionTime": moment,
        "reason": reason,
        "message": message,
    }
    if current and current["status"] == value:
        condition["lastTransitionTime"] = current["lastTransitionTime"]
    status["conditions"] = [c for c in status.get("conditions") or [] if c["type"] != kind]
    status["conditions"].append(condition)


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


class Controller:
    """The simulated control plane for Deployments, ReplicaSets and Pods."""

    def __init__(self, store: Store, step: float = 0.01, seed: int = 0) -> None:
        self.store = store
        self.step = step
        self.tick = 0
        self._rng = random.Random(seed)
        self._born: dict[str, int] = {}
        # knobs
        self.unready_deployments: dict[tuple[str, str], int] = {}
        self.unready_versions: set[str] = set()
        self.unready_pods: set[tuple[str, str]] = set()
        self.frozen: set[tuple[str, str]] = set()
        self.events_enabled = True
        self.stopping = False
        self._settled_waiters: list[asyncio.Future[None]] = []

    # ------------------------------------------------------------ loop

    async def run(self) -> None:
        """Tick while there is work; sleep until the next write when everything has converged."""
        while not self.stopping:
            self.tick += 1
            acted = self.reconcile()
            if acted:
                await asyncio.sleep(self.step)
            else:
                for waiter in self._settled_waiters:
                    if not waiter.done():
                        waiter.set_result(None)
                self._settled_waiters.clear()
                # Progress deadlines are time based, so an idle controller still looks again.
                await self.store.changed(timeout=0.2)

    async def settled(self) -> None:
        """Return after the next pass that wrote nothing: no controller write is pending."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._settled_waiters.append(waiter)
        self.store.notify()  # an idle controller looks again now rather than in 0.2 s
        await waiter

    def reconcile(self) -> bool:
        acted = False
        for d in list(self.store.items("deployments")):
            key = (_meta(d)["namespace"], _meta(d)["name"])
            if key not in self.frozen:
                acted = self.sync_deployment(copy.deepcopy(d)) or acted
        acted = self.kubelet() or acted
        for rs in list(self.store.items("replicasets")):
            acted = self.sync_replicaset(copy.deepcopy(rs)) or acted
        return acted

    # ------------------------------------------------------------ writes

    def _write(self, kind: str, obj: Obj, *, status: bool = False) -> Obj:
        fields: Obj
        if status:
            fields = {"f:status": fields_v1(obj.get("status") or {})}
            annotations = _meta(obj).get("annotations")
            if annotations and kind == "deployments":
                fields = {
                    "f:metadata": {"f:annotations": {".": {}, **fields_v1(annotations)}},
                    **fields,
                }
        else:
            fields = {
                "f:metadata": fields_v1(
                    {
                        k: v
                        for k, v in _meta(obj).items()
                        if k in ("labels", "annotations", "ownerReferences")
                    }
                ),
                "f:spec": fields_v1(obj.get("spec") or {}),
            }
        api_version = "v1" if kind in ("pods", "events") else "apps/v1"
        record_manager(obj, CONTROLLER_MANAGER, api_version, fields, "status" if status else None)
        return self.store.update(kind, obj)

    def _event(
        self, regarding: Obj, api_version: str, kind: str, reason: str, message: str, component: str
    ) -> None:
        """Record an Event as the controllers do; a repeat bumps `count` (README: folded)."""
        if not self.events_enabled:
            return
        meta = _meta(regarding)
        namespace = meta["namespace"]
        for existing in self.store.items("events", namespace):
            involved = existing.get("involvedObject") or {}
            if (
                involved.get("uid") == meta["uid"]
                and existing.get("reason") == reason
                and existing.get("message") == message
                and (existing.get("source") or {}).get("component") == component
            ):
                updated = copy.deepcopy(existing)
                updated["count"] = int(updated.get("count") or 1) + 1
                updated["lastTimestamp"] = timestamp()
                self.store.update("events", updated)
                return
        stamp = timestamp()
        suffix = f"{int(now().timestamp() * 1e9) + self.store.rv:x}"
        event: Obj = {
            "metadata": {"name": f"{meta['name']}.{suffix}", "namespace": namespace},
            "involvedObject": {
                "kind": kind,
                "namespace": namespace,
                "name": meta["name"],
                "uid": meta["uid"],
                "apiVersion": api_version,
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "reason": reason,
            "message": message,
            "source": {"component": component},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "type": "Normal",
            "eventTime": None,
            "reportingComponent": component,
            "reportingInstance": "",
        }
        record_manager(
            event,
            CONTROLLER_MANAGER,
            "v1",
            {
                "f:count": {},
                "f:firstTimestamp": {},
                "f:involvedObject": {},
                "f:lastTimestamp": {},
                "f:message": {},
                "f:reason": {},
                "f:reportingComponent": {},
                "f:source": {"f:component": {}},
                "f:type": {},
            },
        )
        self.store.create("events", event)

    # ------------------------------------------------------------ deployment controller

    def _replicasets_of(self, d: Obj) -> list[Obj]:
        meta = _meta(d)
        owned = self.store.owned_by("replicasets", meta["namespace"], meta["uid"])
        return [copy.deepcopy(rs) for rs in owned]

    def sync_deployment(self, d: Obj) -> bool:
        if _meta(d).get("deletionTimestamp"):
            return False
        rs_list = self._replicasets_of(d)
        acted = False
        d, changed = self._check_paused_conditions(d)
        acted = acted or changed
        if d["spec"].get("paused"):
            return self._sync_scale_and_status(d, rs_list) or acted
        if self._is_scaling_event(d, rs_list):
            return self._sync_scale_and_status(d, rs_list) or acted
        return self._rollout(d, rs_list) or acted

    def _check_paused_conditions(self, d: Obj) -> tuple[Obj, bool]:
        status = d.setdefault("status", {})
        if d["spec"].get("progressDeadlineSeconds") is None:
            return d, False
        cond = _condition(status, "Progressing")
        if cond and cond["reason"] == "ProgressDeadlineExceeded":
            return d, False
        paused_cond = cond is not None and cond["reason"] == "DeploymentPaused"
        if d["spec"].get("paused") and not paused_cond:
            _set_condition(
                status, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused"
            )
        elif not d["spec"].get("paused") and paused_cond:
            _set_condition(
                status, "Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed"
            )
        else:
            return d, False
        return copy.deepcopy(self._write("deployments", d, status=True)), True

    def _is_scaling_event(self, d: Obj, rs_list: list[Obj]) -> bool:
        for rs in rs_list:
            if _spec_replicas(rs) <= 0:
                continue
            desired = (_meta(rs).get("annotations") or {}).get(DESIRED_REPLICAS)
            if desired is not None and int(desired) != _spec_replicas(d):
                return True
        return False

    def _find_new_rs(self, d: Obj, rs_list: list[Obj]) -> Obj | None:
        matching = [
            rs for rs in rs_list if templates_equal(rs["spec"]["template"], d["spec"]["template"])
        ]
        matching.sort(key=lambda rs: (_meta(rs)["creationTimestamp"], _meta(rs)["name"]))
        return matching[0] if matching else None

    def _copy_annotations(self, d: Obj, rs: Obj) -> bool:
        changed = False
        annotations = _meta(rs).setdefault("annotations", {})
        for key, value in (_meta(d).get("annotations") or {}).items():
            if key in NOT_COPIED_ANNOTATIONS:
                continue
            if annotations.get(key) != value:
                annotations[key] = value
                changed = True
        return changed

    def _set_replicas_annotations(self, d: Obj, rs: Obj) -> bool:
        annotations = _meta(rs).setdefault("annotations", {})
        desired, maximum = str(_spec_replicas(d)), str(_spec_replicas(d) + max_surge(d))
        if (annotations.get(DESIRED_REPLICAS), annotations.get(MAX_REPLICAS)) == (desired, maximum):
            return False
        annotations[DESIRED_REPLICAS] = desired
        annotations[MAX_REPLICAS] = maximum
        return True

    def _new_revision_annotations(self, d: Obj, rs: Obj, new_revision: int) -> bool:
        """SetNewReplicaSetAnnotations: a re-used RS takes the next revision, history the old."""
        changed = self._copy_annotations(d, rs)
        annotations = _meta(rs).setdefault("annotations", {})
        old_text = annotations.get(REVISION)
        old = int(old_text) if old_text else 0
        if old < new_revision:
            annotations[REVISION] = str(new_revision)
            changed = True
            if old_text:
                history = annotations.get(REVISION_HISTORY)
                annotations[REVISION_HISTORY] = f"{history},{old_text}" if history else old_text
        return changed

    def _sync_revision(self, d: Obj, revision: str) -> bool:
        annotations = _meta(d).setdefault("annotations", {})
        if annotations.get(REVISION) == revision:
            return False
        annotations[REVISION] = revision
        return True

    def _new_rs_replicas(self, d: Obj, all_rs: list[Obj], new_rs_replicas: int) -> int:
        strategy = (d["spec"].get("strategy") or {}).get("type")
        if strategy != "RollingUpdate":
            return _spec_replicas(d)
        current = sum(_spec_replicas(rs) for rs in all_rs)
        max_total = _spec_replicas(d) + max_surge(d)
        if current >= max_total:
            return new_rs_replicas
        scale_up = min(max_total - current, _spec_replicas(d) - new_rs_replicas)
        return new_rs_replicas + max(scale_up, 0)

    def _get_all_rs(
        self, d: Obj, rs_list: list[Obj], create: bool
    ) -> tuple[Obj, Obj | None, list[Obj]]:
        """getAllReplicaSetsAndSyncRevision: find/adopt or create the new RS, move the revision."""
        new_rs = self._find_new_rs(d, rs_list)
        old = [rs for rs in rs_list if rs is not new_rs]
        new_revision = max((_revision(rs) for rs in old), default=0) + 1
        meta = _meta(d)
        if new_rs is not None:
            if self._new_revision_annotations(d, new_rs, new_revision):
                new_rs = copy.deepcopy(self._write("replicasets", new_rs))
            needs = self._sync_revision(d, _meta(new_rs)["annotations"][REVISION])
            status = d.setdefault("status", {})
            if (
                d["spec"].get("progressDeadlineSeconds") is not None
                and _condition(status, "Progressing") is None
            ):
                _set_condition(
                    status,
                    "Progressing",
                    "True",
                    "FoundNewReplicaSet",
                    f'Found new replica set "{_meta(new_rs)["name"]}"',
                )
                needs = True
            if needs:
                d = copy.deepcopy(self._write("deployments", d, status=True))
            return d, new_rs, old
        if not create:
            return d, None, old
        collisions = int(d.get("status", {}).get("collisionCount", 0))
        while True:
            template_hash = pod_template_hash(d["spec"]["template"], collisions)
            name = f"{meta['name']}-{template_hash}"
            if self.store.get("replicasets", meta["namespace"], name) is None:
                break
            collisions += 1
        template = copy.deepcopy(d["spec"]["template"])
        template.setdefault("metadata", {}).setdefault("labels", {})[POD_TEMPLATE_HASH] = (
            template_hash
        )
        selector = copy.deepcopy(d["spec"]["selector"])
        selector.setdefault("matchLabels", {})[POD_TEMPLATE_HASH] = template_hash
        replicas = self._new_rs_replicas(d, old, 0)
        rs: Obj = {
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "generation": 1,
                "labels": dict(template["metadata"]["labels"]),
                "annotations": {},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {"replicas": replicas, "selector": selector, "template": template},
            "status": {"replicas": 0},
        }
        self._copy_annotations(d, rs)
        self._set_replicas_annotations(d, rs)
        rs["metadata"]["annotations"][REVISION] = str(new_revision)
        rs["metadata"]["annotations"] = dict(sorted(rs["metadata"]["annotations"].items()))
        record_manager(
            rs,
            CONTROLLER_MANAGER,
            "apps/v1",
            {
                "f:metadata": fields_v1(
                    {k: rs["metadata"][k] for k in ("annotations", "labels", "ownerReferences")}
                ),
                "f:spec": fields_v1(rs["spec"]),
            },
        )
        created = self.store.create("replicasets", rs)
        if replicas > 0:
            self._event(
                d,
                "apps/v1",
                "Deployment",
                "ScalingReplicaSet",
                f"Scaled up replica set {name} from 0 to {replicas}",
                "deployment-controller",
            )
        self._sync_revision(d, str(new_revision))
        status = d.setdefault("status", {})
        if collisions:
            status["collisionCount"] = collisions
        if d["spec"].get("progressDeadlineSeconds") is not None:
            _set_condition(
                status,
                "Progressing",
                "True",
                "NewReplicaSetCreated",
                f'Created new replica set "{name}"',
                force=True,
            )
        d = copy.deepcopy(self._write("deployments", d, status=True))
        return d, copy.deepcopy(created), old

    def _scale_rs(self, d: Obj, rs: Obj, size: int) -> bool:
        """scaleReplicaSet: new size and replica annotations in one write, plus the Event."""
        old_size = _spec_replicas(rs)
        annotations_changed = self._set_replicas_annotations(d, rs)
        if old_size == size and not annotations_changed:
            return False
        if old_size != size:
            rs["spec"]["replicas"] = size
            _meta(rs)["generation"] = int(_meta(rs).get("generation", 1)) + 1
        rs.update(copy.deepcopy(self._write("replicasets", rs)))
        if old_size != size:
            direction = "up" if size > old_size else "down"
            self._event(
                d,
                "apps/v1",
                "Deployment",
                "ScalingReplicaSet",
                f"Scaled {direction} replica set {_meta(rs)['name']} from {old_size} to {size}",
                "deployment-controller",
            )
        return old_size != size

    def _rollout(self, d: Obj, rs_list: list[Obj]) -> bool:
        revision_before = (_meta(d).get("annotations") or {}).get(REVISION)
        rv_before = self.store.rv
        d, new_rs, old = self._get_all_rs(d, rs_list, create=True)
        assert new_rs is not None
        acted = self.store.rv != rv_before or revision_before != _meta(d)["annotations"][REVISION]
        all_rs = [*old, new_rs]
        if (d["spec"].get("strategy") or {}).get("type") == "Recreate":
            scaled = self._recreate(d, new_rs, old)
        else:
            scaled = self._reconcile_new(d, all_rs, new_rs)
            if not scaled:
                scaled = self._reconcile_old(d, all_rs, old, new_rs)
        if not scaled and self._complete(d, d.get("status", {})):
            scaled = self._cleanup(d, old)
        return self._sync_rollout_status(d, [*old, new_rs], new_rs) or scaled or acted

    def _recreate(self, d: Obj, new_rs: Obj, old: list[Obj]) -> bool:
        active_old = [rs for rs in old if _spec_replicas(rs) > 0]
        if active_old:
            for rs in active_old:
                self._scale_rs(d, rs, 0)
            return True
        if any(_status_int(rs, "replicas") for rs in old):
            return False
        return self._scale_rs(d, new_rs, _spec_replicas(d))

    def _reconcile_new(self, d: Obj, all_rs: list[Obj], new_rs: Obj) -> bool:
        wanted = _spec_replicas(d)
        if _spec_replicas(new_rs) == wanted:
            return False
        if _spec_replicas(new_rs) > wanted:
            return self._scale_rs(d, new_rs, wanted)
        return self._scale_rs(d, new_rs, self._new_rs_replicas(d, all_rs, _spec_replicas(new_rs)))

    def _reconcile_old(self, d: Obj, all_rs: list[Obj], old: list[Obj], new_rs: Obj) -> bool:
        active = sorted(
            (rs for rs in old if _spec_replicas(rs) > 0),
            key=lambda rs: (_meta(rs)["creationTimestamp"], _meta(rs)["name"]),
        )
        if not active:
            return False
        all_pods = sum(_spec_replicas(rs) for rs in all_rs)
        min_available = _spec_replicas(d) - max_unavailable(d)
        new_unavailable = _spec_replicas(new_rs) - _status_int(new_rs, "availableReplicas")
        max_scaled_down = all_pods - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False
        cleaned = 0
        for rs in active:
            if cleaned >= max_scaled_down:
                break
            unhealthy = _spec_replicas(rs) - _status_int(rs, "availableReplicas")
            if unhealthy <= 0:
                continue
            count = min(max_scaled_down - cleaned, unhealthy)
            self._scale_rs(d, rs, _spec_replicas(rs) - count)
            cleaned += count
        available = sum(_status_int(rs, "availableReplicas") for rs in all_rs)
        scaled = 0
        if available > min_available:
            total = available - min_available
            for rs in active:
                if scaled >= total:
                    break
                if _spec_replicas(rs) == 0:
                    continue
                count = min(_spec_replicas(rs), total - scaled)
                self._scale_rs(d, rs, _spec_replicas(rs) - count)
                scaled += count
        return cleaned + scaled > 0

    def _cleanup(self, d: Obj, old: list[Obj]) -> bool:
        """Delete the oldest idle ReplicaSets beyond `revisionHistoryLimit`."""
        limit = d["spec"].get("revisionHistoryLimit")
        if limit is None:
            return False
        idle = sorted(
            (rs for rs in old if _spec_replicas(rs) == 0 and _status_int(rs, "replicas") == 0),
            key=_revision,
        )
        excess = len(idle) - int(limit)
        for rs in idle[: max(excess, 0)]:
            meta = _meta(rs)
            self.store.delete("replicasets", meta["namespace"], meta["name"])
        return excess > 0

    def _sync_scale_and_status(self, d: Obj, rs_list: list[Obj]) -> bool:
        """`sync`: used while paused or on a scaling event; never creates a ReplicaSet."""
        rv_before = self.store.rv
        d, new_rs, old = self._get_all_rs(d, rs_list, create=False)
        self._scale(d, new_rs, old)
        all_rs = [*old, *([new_rs] if new_rs else [])]
        status = self._calculate_status(d, all_rs, new_rs)
        if status != d.get("status"):
            d["status"] = status
            self._write("deployments", d, status=True)
        return self.store.rv != rv_before

    def _scale(self, d: Obj, new_rs: Obj | None, old: list[Obj]) -> None:
        all_rs = [*old, *([new_rs] if new_rs else [])]
        active = [rs for rs in all_rs if _spec_replicas(rs) > 0]
        wanted = _spec_replicas(d)
        if len(active) <= 1:
            target = active[0] if active else (new_rs or max(old, key=_revision, default=None))
            if target is not None:
                self._scale_rs(d, target, wanted)
            return
        if new_rs is not None and _spec_replicas(new_rs) == wanted:
            for rs in old:
                if _spec_replicas(rs) > 0:
                    self._scale_rs(d, rs, 0)
            return
        # Proportional scaling, simplified: the newest active RS absorbs growth, the oldest
        # give up replicas first when shrinking.
        allowed = wanted + max_surge(d)
        delta = allowed - sum(_spec_replicas(rs) for rs in all_rs)
        ordered = sorted(active, key=_revision)
        if delta > 0:
            newest = new_rs or ordered[-1]
            self._scale_rs(d, newest, _spec_replicas(newest) + delta)
        elif delta < 0:
            for rs in ordered:
                if delta == 0:
                    break
                take = min(_spec_replicas(rs), -delta)
                self._scale_rs(d, rs, _spec_replicas(rs) - take)
                delta += take
        for rs in active:
            self._scale_rs(d, rs, _spec_replicas(rs))

    def _calculate_status(self, d: Obj, all_rs: list[Obj], new_rs: Obj | None) -> Obj:
        available = sum(_status_int(rs, "availableReplicas") for rs in all_rs)
        total_spec = sum(_spec_replicas(rs) for rs in all_rs)
        counts = {
            "observedGeneration": int(_meta(d).get("generation", 1)),
            "replicas": sum(_status_int(rs, "replicas") for rs in all_rs),
            "updatedReplicas": _status_int(new_rs, "replicas") if new_rs else 0,
            "readyReplicas": sum(_status_int(rs, "readyReplicas") for rs in all_rs),
            "availableReplicas": available,
            "unavailableReplicas": max(total_spec - available, 0),
        }
        status: Obj = {k: v for k, v in counts.items() if v}
        status["terminatingReplicas"] = 0
        old_status = d.get("status") or {}
        conditions = copy.deepcopy(old_status.get("conditions") or [])
        status["conditions"] = conditions
        if available >= _spec_replicas(d) - max_unavailable(d):
            _set_condition(
                status,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        else:
            _set_condition(
                status,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        if old_status.get("collisionCount"):
            status["collisionCount"] = old_status["collisionCount"]
        if not status["conditions"]:
            del status["conditions"]
        return status

    @staticmethod
    def _complete(d: Obj, status: Obj) -> bool:
        replicas = _spec_replicas(d)
        return (
            int(status.get("updatedReplicas", 0)) == replicas
            and int(status.get("replicas", 0)) == replicas
            and int(status.get("availableReplicas", 0)) == replicas
            and int(status.get("observedGeneration", 0)) >= int(_meta(d).get("generation", 1))
        )

    @staticmethod
    def _progressing(old: Obj, new: Obj) -> bool:
        def get(status: Obj, key: str) -> int:
            return int(status.get(key, 0))

        return (
            get(new, "updatedReplicas") > get(old, "updatedReplicas")
            or get(new, "readyReplicas") > get(old, "readyReplicas")
            or (get(old, "replicas") - get(old, "updatedReplicas"))
            > (get(new, "replicas") - get(new, "updatedReplicas"))
            or get(new, "availableReplicas") > get(old, "availableReplicas")
        )

    def _sync_rollout_status(self, d: Obj, all_rs: list[Obj], new_rs: Obj) -> bool:
        new_status = self._calculate_status(d, all_rs, new_rs)
        old_status = d.get("status") or {}
        deadline = d["spec"].get("progressDeadlineSeconds")
        current = _condition(old_status, "Progressing")
        name = _meta(new_rs)["name"]
        complete_already = (
            new_status.get("replicas", 0) == new_status.get("updatedReplicas", 0)
            and current is not None
            and current["reason"] == "NewReplicaSetAvailable"
        )
        if deadline is not None and not complete_already:
            if self._complete(d, new_status):
                _set_condition(
                    new_status,
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    f'ReplicaSet "{name}" has successfully progressed.',
                )
            elif self._progressing(old_status, new_status):
                moment = timestamp()
                condition = {
                    "type": "Progressing",
                    "status": "True",
                    "lastUpdateTime": moment,
                    "lastTransitionTime": moment,
                    "reason": "ReplicaSetUpdated",
                    "message": f'ReplicaSet "{name}" is progressing.',
                }
                if current is not None and current["status"] == "True":
                    condition["lastTransitionTime"] = current["lastTransitionTime"]
                new_status["conditions"] = [
                    c for c in new_status.get("conditions", []) if c["type"] != "Progressing"
                ] + [condition]
            elif self._timed_out(d, current):
                _set_condition(
                    new_status,
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    f'ReplicaSet "{name}" has timed out progressing.',
                )
        if deadline is None:
            new_status["conditions"] = [
                c for c in new_status.get("conditions", []) if c["type"] != "Progressing"
            ]
        if new_status == old_status:
            return False
        d["status"] = new_status
        self._write("deployments", d, status=True)
        return True

    @staticmethod
    def _timed_out(d: Obj, current: Obj | None) -> bool:
        if current is None or current["reason"] == "NewReplicaSetAvailable":
            return False
        if current["reason"] == "ProgressDeadlineExceeded":
            return True
        seconds = int(d["spec"]["progressDeadlineSeconds"])
        return now() > _parse_time(current["lastUpdateTime"]) + dt.timedelta(seconds=seconds)

    # ------------------------------------------------------------ kubelet

    def adopt_pod(self, uid: str) -> None:
        """Treat a pod as started long ago (seeded pods are Running at once)."""
        self._born[uid] = -1

    def _held(self, pod: Obj) -> bool:
        meta = _meta(pod)
        if (meta["namespace"], meta["name"]) in self.unready_pods:
            return True
        if (meta.get("labels") or {}).get(VERSION_LABEL) in self.unready_versions:
            return True
        owner = self._deployment_of(pod)
        if owner is not None:
            since = self.unready_deployments.get(owner)
            if since is not None and self._born.get(meta["uid"], 0) >= since:
                return True
        return False

    def _deployment_of(self, pod: Obj) -> tuple[str, str] | None:
        meta = _meta(pod)
        for ref in meta.get("ownerReferences") or []:
            if ref.get("kind") != "ReplicaSet":
                continue
            rs = self.store.get("replicasets", meta["namespace"], ref["name"])
            if rs is None:
                continue
            for rs_ref in _meta(rs).get("ownerReferences") or []:
                if rs_ref.get("kind") == "Deployment":
                    return meta["namespace"], rs_ref["name"]
        return None

    def kubelet(self) -> bool:
        """Pods turn Running and Ready one tick after creation, unless a knob holds them."""
        acted = False
        for pod in self.store.items("pods"):
            meta = _meta(pod)
            if meta.get("deletionTimestamp"):
                continue
            born = self._born.setdefault(meta["uid"], self.tick)
            if born >= self.tick:
                continue
            ready = not self._held(pod)
            status = pod.get("status") or {}
            is_ready = any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in status.get("conditions") or []
            )
            if status.get("phase") == "Running" and is_ready == ready:
                continue
            updated = copy.deepcopy(pod)
            updated["status"] = running_status(updated, ready, status)
            record_manager(
                updated, "kubelet", "v1", {"f:status": fields_v1(updated["status"])}, "status"
            )
            self.store.update("pods", updated)
            acted = True
        return acted

    # ------------------------------------------------------------ replicaset controller

    def sync_replicaset(self, rs: Obj) -> bool:
        meta = _meta(rs)
        namespace = meta["namespace"]
        pods = [
            p
            for p in self.store.owned_by("pods", namespace, meta["uid"])
            if not _meta(p).get("deletionTimestamp")
        ]
        acted = False
        diff = len(pods) - _spec_replicas(rs)
        if diff < 0:
            for _ in range(-diff):
                pods.append(self._create_pod(rs))
            acted = True
        elif diff > 0:

            def rank(pod: Obj) -> tuple[bool, str]:
                ready = any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in (pod.get("status") or {}).get("conditions") or []
                )
                return ready, _meta(pod)["creationTimestamp"]

            doomed = sorted(pods, key=rank)[:diff]
            for pod in doomed:
                self.store.delete("pods", namespace, _meta(pod)["name"])
                self._event(
                    rs,
                    "apps/v1",
                    "ReplicaSet",
                    "SuccessfulDelete",
                    f"Deleted pod: {_meta(pod)['name']}",
                    "replicaset-controller",
                )
                pods.remove(pod)
            acted = True
        labels = rs["spec"]["template"].get("metadata", {}).get("labels") or {}
        ready = sum(
            1
            for p in pods
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (p.get("status") or {}).get("conditions") or []
            )
        )
        fully = sum(
            1
            for p in pods
            if all((_meta(p).get("labels") or {}).get(k) == v for k, v in labels.items())
        )
        status: Obj = {"replicas": len(pods)}
        for key, value in (
            ("fullyLabeledReplicas", fully),
            ("readyReplicas", ready),
            ("availableReplicas", ready),
        ):
            if value:
                status[key] = value
        status["terminatingReplicas"] = 0
        status["observedGeneration"] = int(meta.get("generation", 1))
        if status != rs.get("status"):
            current = self.store.get("replicasets", namespace, meta["name"])
            if current is not None:
                updated = copy.deepcopy(current)
                updated["status"] = status
                self._write("replicasets", updated, status=True)
                acted = True
        return acted

    def _create_pod(self, rs: Obj) -> Obj:
        meta = _meta(rs)
        template = copy.deepcopy(rs["spec"]["template"])
        suffix = "".join(self._rng.choice(SAFE_ALPHABET) for _ in range(5))
        name = f"{meta['name']}-{suffix}"
        spec = template.get("spec", {})
        volume = f"kube-api-access-{''.join(self._rng.choice(SAFE_ALPHABET) for _ in range(5))}"
        spec.setdefault("volumes", []).insert(
            0,
            {
                "name": volume,
                "projected": {
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {
                            "configMap": {
                                "name": "kube-root-ca.crt",
                                "items": [{"key": "ca.crt", "path": "ca.crt"}],
                            }
                        },
                        {
                            "downwardAPI": {
                                "items": [
                                    {
                                        "path": "namespace",
                                        "fieldRef": {
                                            "apiVersion": "v1",
                                            "fieldPath": "metadata.namespace",
                                        },
                                    }
                                ]
                            }
                        },
                    ],
                    "defaultMode": 420,
                },
            },
        )
        for container in spec.get("containers") or []:
            container.setdefault("volumeMounts", []).append(
                {
                    "name": volume,
                    "readOnly": True,
                    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                }
            )
        spec["serviceAccountName"] = spec.get("serviceAccountName", "default")
        spec["serviceAccount"] = spec["serviceAccountName"]
        spec["nodeName"] = "fake-node-0"
        spec["tolerations"] = [
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
        ]
        spec["priority"] = 0
        spec["enableServiceLinks"] = True
        spec["preemptionPolicy"] = "PreemptLowerPriority"
        pod: Obj = {
            "metadata": {
                "name": name,
                "generateName": f"{meta['name']}-",
                "namespace": meta["namespace"],
                "generation": 1,
                "labels": dict(template.get("metadata", {}).get("labels") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": spec,
        }
        if template.get("metadata", {}).get("annotations"):
            pod["metadata"]["annotations"] = dict(template["metadata"]["annotations"])
        pod = apply_defaults(PODS, pod)
        stamp = timestamp()
        pod["status"] = {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastProbeTime": None,
                    "lastTransitionTime": stamp,
                }
            ],
            "qosClass": "BestEffort",
        }
        record_manager(
            pod,
            CONTROLLER_MANAGER,
            "v1",
            {
                "f:metadata": fields_v1(
                    {
                        k: pod["metadata"][k]
                        for k in ("labels", "ownerReferences")
                        if k in pod["metadata"]
                    }
                ),
                "f:spec": fields_v1({k: v for k, v in pod["spec"].items() if k != "volumes"}),
            },
        )
        created = self.store.create("pods", pod)
        self._born[_meta(created)["uid"]] = self.tick
        self._event(
            rs,
            "apps/v1",
            "ReplicaSet",
            "SuccessfulCreate",
            f"Created pod: {name}",
            "replicaset-controller",
        )
        return created


_pod_ips = iter(range(2, 1 << 16))


def running_status(pod: Obj, ready: bool, previous: Obj | None = None) -> Obj:
    """A Running pod status as the recorded kubelet reports it (fixture 019)."""
    previous = previous or {}
    stamp = timestamp()
    flag = "True" if ready else "False"

    def condition(kind: str, value: str) -> Obj:
        entry: Obj = {
            "type": kind,
            "status": value,
            "lastProbeTime": None,
            "lastTransitionTime": stamp,
        }
        if value == "False":
            entry["reason"] = "ContainersNotReady"
            entry["message"] = (
                "containers with unready status: ["
                + " ".join(c["name"] for c in pod["spec"].get("containers") or [])
                + "]"
            )
        return entry

    ip = previous.get("podIP")
    if ip is None:
        n = next(_pod_ips)
        ip = f"10.244.{n // 254}.{n % 254 + 1}"
    start = previous.get("startTime", stamp)
    return {
        "phase": "Running",
        "conditions": [
            condition("PodScheduled", "True"),
            condition("Initialized", "True"),
            condition("ContainersReady", flag),
            condition("Ready", flag),
        ],
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": start,
        "containerStatuses": [
            {
                "name": c["name"],
                "state": {"running": {"startedAt": start}},
                "lastState": {},
                "ready": ready,
                "restartCount": 0,
                "image": c.get("image", ""),
                "imageID": "",
                "started": True,
            }
            for c in pod["spec"].get("containers") or []
        ],
        "qosClass": "BestEffort",
    }
