"""The only door to the Kubernetes API: the official client's asyncio API, dicts in and out.

Objects travel as plain JSON dicts (raw responses, no model classes): the decision code reads
a handful of fields, and the generated models reject some real responses (events with a
null ``eventTime``). Every failure leaves this module as one of ``receiver.errors``' Kube*
errors, with the API server's ``Status`` message cut to a safe size.

Long because it is the only importer of ``kubernetes``: every call the product makes, and
the watch, live here so no other module learns the client library.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes.aio import client as kclient
from kubernetes.aio import config as kconfig
from kubernetes.aio.client.exceptions import ApiException
from kubernetes.aio.config.config_exception import ConfigException

from receiver.errors import (
    ConfigError,
    KubeConflict,
    KubeError,
    KubeForbidden,
    KubeInvalid,
    KubeNotFound,
    KubeUnavailable,
    truncate,
)

log = logging.getLogger(__name__)

Obj = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
# Our writes are attributed to this field manager in managedFields.
FIELD_MANAGER = "rollback-receiver"
# One API call never waits longer than this; the job's own deadline bounds the rest.
REQUEST_TIMEOUT_SECONDS = 10.0
# A watch request asks the server to end it after this long; it is then opened again from
# the last resourceVersion seen (kubectl's rollout status asks for a few minutes too).
WATCH_SECONDS = 300
# Watches held open at once per cluster. Each holds a connection of the client's pool (100
# by default) while a rollout is verified; past this many, a verification polls instead
# so watches can never starve the reads and writes of other jobs.
WATCHES_MAX = 48


def error_from_status(status: int, body: str | bytes | None, what: str) -> KubeError:
    """Translate an HTTP status and its ``Status`` body into our error, naming the call."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else (body or "")
    reason = ""
    message = text
    retry_after = 1.0
    try:
        parsed = json.loads(text) if text else {}
        if isinstance(parsed, dict):
            message = parsed.get("message") or text
            reason = parsed.get("reason") or ""
            retry_after = float((parsed.get("details") or {}).get("retryAfterSeconds") or 1.0)
    except ValueError:
        pass
    detail = f"{what}: {status} {reason}: {truncate(message)}".replace(":  :", ":")
    if status == 404:
        return KubeNotFound(detail, status=status, reason=reason)
    if status == 403:
        return KubeForbidden(
            detail + " (grant the verb in deploy/rbac-*.yaml)", status=status, reason=reason
        )
    if status == 409:
        return KubeConflict(detail, status=status, reason=reason)
    if status in (400, 415, 422):
        return KubeInvalid(detail, status=status, reason=reason)
    if status == 401:
        return KubeForbidden(
            detail + " (the receiver's credentials were refused)", status=status, reason=reason
        )
    return KubeUnavailable(detail, status=status, reason=reason, delay=retry_after)


class KubeClient:
    """One cluster, through ``kubernetes.aio``. Construct with ``connect``."""

    def __init__(self, api: kclient.ApiClient, *, request_timeout: float = REQUEST_TIMEOUT_SECONDS):
        self._api = api
        self._apps = kclient.AppsV1Api(api)
        self._core = kclient.CoreV1Api(api)
        self._events = kclient.EventsV1Api(api)
        self._timeout = request_timeout
        self._watches = 0

    @classmethod
    async def connect(
        cls,
        kubeconfig: Path | None = None,
        context: str | None = None,
        *,
        request_timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> KubeClient:
        """Load a kubeconfig (``KUBECONFIG``), else the in-cluster service account."""
        configuration = kclient.Configuration()
        try:
            if kubeconfig is not None:
                await kconfig.load_kube_config(
                    config_file=str(kubeconfig),
                    context=context,
                    client_configuration=configuration,
                    persist_config=False,
                )
            else:
                try:
                    kconfig.load_incluster_config(client_configuration=configuration)
                except ConfigException:
                    await kconfig.load_kube_config(
                        context=context,
                        client_configuration=configuration,
                        persist_config=False,
                    )
        except (ConfigException, OSError, ValueError) as e:
            raise ConfigError(
                f"cannot load Kubernetes configuration ({e}); set KUBECONFIG or run in a pod "
                "with a service account"
            ) from e
        return cls(kclient.ApiClient(configuration), request_timeout=request_timeout)

    async def close(self) -> None:
        await self._api.close()

    async def _call(self, what: str, call: Callable[..., Awaitable[Any]], **kwargs: Any) -> Obj:
        try:
            resp = await call(_request_timeout=self._timeout, **kwargs)
            body = await resp.read()
        except ApiException as e:
            raise error_from_status(e.status or 0, e.body, what) from e
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise KubeUnavailable(
                f"{what}: API server unreachable: {truncate(str(e) or type(e).__name__)}"
            ) from e
        if resp.status >= 400:
            raise error_from_status(resp.status, body, what)
        try:
            return json.loads(body) if body else {}
        except ValueError as e:
            raise KubeUnavailable(f"{what}: the API server answered with non-JSON") from e

    # -- apps/v1 -----------------------------------------------------------------------

    async def get_deployment(self, namespace: str, name: str) -> Obj:
        return await self._call(
            f"get deployment {namespace}/{name}",
            self._apps.read_namespaced_deployment_without_preload_content,
            name=name,
            namespace=namespace,
        )

    async def watch_deployment(
        self,
        namespace: str,
        name: str,
        *,
        resource_version: str | None = None,
        watch_seconds: int = WATCH_SECONDS,
    ) -> AsyncIterator[Obj]:
        """Yield the Deployment each time it changes, for as long as the caller iterates.

        Without ``resource_version`` the Deployment is read first and yielded, and the
        watch starts from that read, so no change between a caller's last read and the
        watch is missed. The watch asks for bookmarks (``allowWatchBookmarks``): they
        move the resourceVersion forward without a yield, so a reconnect after the
        server ends the request (``timeoutSeconds``) starts where it left off. A 410
        Gone (the resourceVersion was compacted away) reads the Deployment again, yields
        it and watches from there. A deletion raises ``KubeNotFound``; an API or
        connection failure raises ``KubeUnavailable`` (or the error of its status), and
        the caller decides whether to poll instead.
        """
        what = f"watch deployment {namespace}/{name}"
        if self._watches >= WATCHES_MAX:
            raise KubeUnavailable(f"{what}: {WATCHES_MAX} watches open already; poll instead")
        self._watches += 1
        try:
            async with contextlib.aclosing(
                self._watch_deployment(what, namespace, name, resource_version, watch_seconds)
            ) as changes:
                async for obj in changes:
                    yield obj
        finally:
            self._watches -= 1

    async def _watch_deployment(
        self,
        what: str,
        namespace: str,
        name: str,
        resource_version: str | None,
        watch_seconds: int,
    ) -> AsyncIterator[Obj]:
        if resource_version is None:
            current = await self.get_deployment(namespace, name)
            yield current
            resource_version = _resource_version(current)
        while True:
            relist = False
            try:
                resp = await self._apps.list_namespaced_deployment_without_preload_content(
                    namespace,
                    field_selector=f"metadata.name={name}",
                    watch=True,
                    allow_watch_bookmarks=True,
                    resource_version=resource_version,
                    timeout_seconds=watch_seconds,
                    _request_timeout=float(watch_seconds) + self._timeout,
                )
            except ApiException as e:
                if e.status != 410:
                    raise error_from_status(e.status or 0, e.body, what) from e
                relist = True
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                raise KubeUnavailable(
                    f"{what}: API server unreachable: {truncate(str(e) or type(e).__name__)}"
                ) from e
            else:
                try:
                    if resp.status == 410:
                        relist = True
                    elif resp.status >= 400:
                        raise error_from_status(resp.status, await resp.read(), what)
                    while not relist:
                        line = await resp.content.readline()
                        if not line:
                            break  # the server ended the watch: open it again
                        event = _watch_event(line, what)
                        kind = event.get("type")
                        obj = event.get("object") or {}
                        if kind == "ERROR":
                            if obj.get("code") == 410:
                                relist = True
                                break
                            raise error_from_status(
                                int(obj.get("code") or 0), json.dumps(obj), what
                            )
                        resource_version = _resource_version(obj) or resource_version
                        if kind == "BOOKMARK":
                            continue
                        if kind == "DELETED":
                            raise KubeNotFound(f"{what}: the Deployment was deleted", status=404)
                        yield obj
                except (aiohttp.ClientError, TimeoutError, OSError) as e:
                    raise KubeUnavailable(
                        f"{what}: the watch broke: {truncate(str(e) or type(e).__name__)}"
                    ) from e
                finally:
                    # Closes the connection of an unfinished stream (not back to the pool).
                    resp.close()
            if relist:
                current = await self.get_deployment(namespace, name)
                yield current
                resource_version = _resource_version(current)

    async def list_replicasets(self, namespace: str, selector: str) -> list[Obj]:
        out = await self._call(
            f"list replicasets in {namespace} ({selector})",
            self._apps.list_namespaced_replica_set_without_preload_content,
            namespace=namespace,
            label_selector=selector,
        )
        return list(out.get("items") or [])

    async def _patch(
        self,
        what: str,
        call: Callable[..., Awaitable[Any]],
        namespace: str,
        name: str,
        body: Mapping[str, Any],
        *,
        content_type: str = MERGE_PATCH,
        dry_run: bool = False,
    ) -> Obj:
        """Every write: attributed to our field manager, server-side dry run on request."""
        kwargs: dict[str, Any] = {"dry_run": "All"} if dry_run else {}
        return await self._call(
            f"{what} {namespace}/{name}",
            call,
            name=name,
            namespace=namespace,
            body=dict(body),
            field_manager=FIELD_MANAGER,
            _content_type=content_type,
            **kwargs,
        )

    async def patch_deployment(
        self,
        namespace: str,
        name: str,
        patch: Mapping[str, Any],
        *,
        content_type: str = MERGE_PATCH,
        dry_run: bool = False,
    ) -> Obj:
        return await self._patch(
            "patch deployment",
            self._apps.patch_namespaced_deployment_without_preload_content,
            namespace,
            name,
            patch,
            content_type=content_type,
            dry_run=dry_run,
        )

    async def patch_replicaset(
        self, namespace: str, name: str, patch: Mapping[str, Any], *, dry_run: bool = False
    ) -> Obj:
        return await self._patch(
            "patch replicaset",
            self._apps.patch_namespaced_replica_set_without_preload_content,
            namespace,
            name,
            patch,
            dry_run=dry_run,
        )

    async def patch_deployment_scale(
        self, namespace: str, name: str, replicas: int, *, dry_run: bool = False
    ) -> Obj:
        return await self._patch(
            "scale deployment",
            self._apps.patch_namespaced_deployment_scale_without_preload_content,
            namespace,
            name,
            {"spec": {"replicas": replicas}},
            dry_run=dry_run,
        )

    # -- core/v1 -----------------------------------------------------------------------

    async def list_pods(self, namespace: str, selector: str) -> list[Obj]:
        out = await self._call(
            f"list pods in {namespace} ({selector})",
            self._core.list_namespaced_pod_without_preload_content,
            namespace=namespace,
            label_selector=selector,
        )
        return list(out.get("items") or [])

    async def get_service(self, namespace: str, name: str) -> Obj:
        return await self._call(
            f"get service {namespace}/{name}",
            self._core.read_namespaced_service_without_preload_content,
            name=name,
            namespace=namespace,
        )

    async def patch_service(
        self, namespace: str, name: str, patch: Mapping[str, Any], *, dry_run: bool = False
    ) -> Obj:
        return await self._patch(
            "patch service",
            self._core.patch_namespaced_service_without_preload_content,
            namespace,
            name,
            patch,
            dry_run=dry_run,
        )

    async def get_configmap(self, namespace: str, name: str) -> Obj:
        return await self._call(
            f"get configmap {namespace}/{name}",
            self._core.read_namespaced_config_map_without_preload_content,
            name=name,
            namespace=namespace,
        )

    async def create_configmap(self, namespace: str, body: Mapping[str, Any]) -> Obj:
        name = (body.get("metadata") or {}).get("name", "")
        return await self._call(
            f"create configmap {namespace}/{name}",
            self._core.create_namespaced_config_map_without_preload_content,
            namespace=namespace,
            body=dict(body),
            field_manager=FIELD_MANAGER,
        )

    async def patch_configmap(self, namespace: str, name: str, patch: Mapping[str, Any]) -> Obj:
        return await self._patch(
            "patch configmap",
            self._core.patch_namespaced_config_map_without_preload_content,
            namespace,
            name,
            patch,
        )

    # -- events.k8s.io/v1 --------------------------------------------------------------

    async def create_event(self, namespace: str, event: Mapping[str, Any]) -> Obj:
        return await self._call(
            f"create event in {namespace}",
            self._events.create_namespaced_event_without_preload_content,
            namespace=namespace,
            body=dict(event),
        )


SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def own_namespace(
    explicit: str | None,
    kubeconfig: Path | None,
    *,
    service_account_file: Path = SERVICE_ACCOUNT_NAMESPACE,
) -> str:
    """The receiver's own namespace (where its state ConfigMap lives), as design.md orders
    it: ``RECEIVER_NAMESPACE``, else the service account's namespace file in a pod, else
    the kubeconfig's current context namespace, else ``default`` (what kubectl assumes)."""
    if explicit and explicit.strip():
        return explicit.strip()
    try:
        text = service_account_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        text = ""
    if text:
        return text
    try:
        path = str(kubeconfig) if kubeconfig is not None else None
        _, active = kconfig.list_kube_config_contexts(config_file=path)
        namespace = ((active or {}).get("context") or {}).get("namespace")
    except (ConfigException, OSError, ValueError, TypeError):
        namespace = None
    return str(namespace) if namespace else "default"


def _resource_version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _watch_event(line: bytes, what: str) -> Obj:
    """One line of a watch stream: ``{"type", "object"}``."""
    try:
        event = json.loads(line)
    except ValueError as e:
        raise KubeUnavailable(f"{what}: the API server sent a line that is not JSON") from e
    if not isinstance(event, dict) or "type" not in event:
        raise KubeUnavailable(f"{what}: the API server sent an event without a type")
    return event


class Clusters:
    """Clients per cluster: the alert's ``cluster`` label selects a kubeconfig context.

    The default cluster ("") uses the current context or the in-cluster account. Clients are
    created on first use and kept; a cluster whose configuration cannot load raises
    ``ConfigError`` each time it is asked for, which the caller records.
    """

    def __init__(
        self, kubeconfig: Path | None, *, request_timeout: float = REQUEST_TIMEOUT_SECONDS
    ) -> None:
        self._kubeconfig = kubeconfig
        self._timeout = request_timeout
        self._clients: dict[str, KubeClient] = {}
        self._failures: dict[str, ConfigError] = {}
        self._lock = asyncio.Lock()

    async def get(self, cluster: str = "") -> KubeClient:
        """The cluster's client; ``ConfigError`` when its configuration cannot load.

        A configuration that failed to load is not tried again on every job (it is a file
        or a service account: it does not heal by itself), and it is logged once."""
        client = self._clients.get(cluster)
        if client is not None:
            return client
        failure = self._failures.get(cluster)
        if failure is not None:
            raise failure
        async with self._lock:
            if cluster not in self._clients:
                try:
                    self._clients[cluster] = await KubeClient.connect(
                        self._kubeconfig, context=cluster or None, request_timeout=self._timeout
                    )
                except ConfigError as e:
                    self._failures[cluster] = e
                    log.warning(
                        "Kubernetes %s: %s", f"cluster {cluster!r}" if cluster else "access", e
                    )
                    raise
            return self._clients[cluster]

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
