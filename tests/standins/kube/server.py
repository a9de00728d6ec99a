"""An aiohttp server that answers like kube-apiserver v1.36 for the objects the product touches.

The product reaches it through a generated kubeconfig with the official client, unchanged.
Tests seed and inspect objects through `KubeStandIn`'s Python API, inject faults, turn the
rollout knobs, and assert on `requests` (every request as received).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import fnmatch
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from multidict import CIMultiDict

from .controller import Controller, running_status
from .defaults import apply_defaults, event_from_request, event_view, validate
from .objects import (
    ACCESS_REVIEWS,
    BY_PATH,
    DEPLOYMENTS,
    GROUP_VERSIONS,
    LEASES,
    NAMESPACES,
    PODS,
    REPLICASETS,
    RESOURCES,
    REVISION,
    SAFE_ALPHABET,
    SERVICES,
    SUBRESOURCE_VERBS,
    VERSION_INFO,
    VERSION_LABEL,
    Resource,
    already_exists,
    bad_request,
    canonical,
    conflict,
    fields_match,
    fields_v1,
    forbidden,
    forget_manager,
    generic_error,
    invalid,
    invalid_errors,
    labels_match,
    manager_from_user_agent,
    namespace_not_found,
    not_found,
    now,
    parse_field_selector,
    parse_label_selector,
    patch_rejected,
    record_manager,
    selector_string,
    status_body,
    timestamp,
    unsupported_media_type,
)
from .patch import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    PatchError,
    apply_json_patch,
    apply_merge_patch,
    apply_strategic_merge_patch,
)
from .store import Store
from .validation import GoLiteral, generated_name, invalid_value

Obj = dict[str, Any]

FLOWSCHEMA_UID = "17cb8861-fc85-479b-92df-779a4563b8a2"
PRIORITYLEVEL_UID = "579a8138-81ef-495f-975c-fbacfbe713f9"
CHUNKED_ABOVE = 2048  # recorded responses from 2.1 KB up were chunked
_HELD = web.RequestKey("standin_reply_held", bool)  # an `after` fault holds the reply
SEED_MANAGER = "kubectl"
DEFAULT_USER = "system:serviceaccount:ml-prod:rollback-receiver"
BOOKMARK_INTERVAL = 60.0  # the watch cache's bookmark heartbeat


class ApiError(Exception):
    """Answer the request with this Status body (and optional extra headers)."""

    def __init__(self, body: Obj, headers: dict[str, str] | None = None) -> None:
        super().__init__(body.get("message"))
        self.body = body
        self.headers = headers or {}


@dataclass
class RecordedRequest:
    """One request as the stand-in received it; `status` is what it answered."""

    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    content_type: str | None
    body: Any
    raw: bytes
    status: int | None = None
    fault: bool = False


@dataclass
class Fault:
    """An injected answer for matching requests: from the `nth` match on, `times` times.

    With `after`, the request is carried out first and only its answer is replaced (a write
    that lands but whose reply is lost); `drop` closes the connection instead of answering.
    """

    method: str
    path: str | re.Pattern[str]
    status: int | None = 500
    nth: int = 1
    times: int | None = 1
    retry_after: int | None = None
    delay: float = 0.0
    message: str | None = None
    user: str = "system:serviceaccount:ml-prod:rollback-receiver"
    after: bool = False
    drop: bool = False
    seen: int = 0
    hits: int = 0
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        """End the `delay` of the requests held now and to come: they are answered at once."""
        self.released.set()

    async def hold(self) -> None:
        if self.delay and not self.released.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.released.wait(), self.delay)

    def matches(self, method: str, path: str) -> bool:
        if self.method not in ("*", method.upper()):
            return False
        if isinstance(self.path, re.Pattern):
            return self.path.search(path) is not None
        return fnmatch.fnmatchcase(path, self.path)

    def take(self) -> bool:
        """Count a matching request; True when this one is to be faulted."""
        self.seen += 1
        if self.seen < self.nth:
            return False
        if self.times is not None and self.seen >= self.nth + self.times:
            return False
        self.hits += 1
        return True


@dataclass
class Denial:
    """An RBAC permission taken away: matching requests get 403, access reviews `allowed: false`.

    `resource` is the plural, with `/subresource` for one (`deployments/scale`); `"*"` matches
    any verb or resource; `namespace`, `name` and `group` narrow it when given.
    """

    verb: str
    resource: str
    namespace: str | None = None
    name: str | None = None
    group: str | None = None
    hits: int = 0

    def matches(
        self, verb: str, group: str, resource: str, namespace: str | None, name: str | None
    ) -> bool:
        return (
            self.verb in ("*", verb)
            and self.resource in ("*", resource)
            and (self.group is None or self.group == group)
            and (self.namespace is None or self.namespace == namespace)
            and (self.name is None or self.name == name)
        )


@dataclass
class AdmissionPolicy:
    """A ValidatingAdmissionPolicy and its binding, with a Python check in place of CEL.

    `denies(obj)` sees the object the write would store (after patch, defaults and
    validation); True refuses the request with the API server's 422 (fixture 108).
    """

    policy: str
    binding: str
    message: str
    denies: Callable[[Obj], bool]
    resource: str = "deployments"
    operations: tuple[str, ...] = ("UPDATE",)
    namespace: str | None = None
    hits: int = 0

    def refusal(self, resource: Resource, name: str) -> Obj:
        reason = (
            f"ValidatingAdmissionPolicy '{self.policy}' with binding '{self.binding}' "
            f"denied request: {self.message}"
        )
        details: Obj = {"name": name}
        if resource.group:
            details["group"] = resource.group
        details["kind"] = resource.plural
        details["causes"] = [{"message": reason}]
        # The policy's validation sets no reason: the default, Invalid, gives 422 not 403.
        return status_body(
            422, "Invalid", f'{resource.group_resource} "{name}" is forbidden: {reason}', details
        )


@dataclass
class Route:
    resource: Resource | None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    discovery: Obj | None = None


@dataclass
class KubeStandIn:
    """The stand-in: HTTP server, object store, controller simulation, faults and records."""

    step: float = 0.01
    token: str = "standin-token"
    seed: int = 0
    url: str = ""
    kubeconfig: Path = field(default_factory=Path)
    requests: list[RecordedRequest] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    required_token: str | None = None
    user: str = DEFAULT_USER
    denials: list[Denial] = field(default_factory=list)
    admission: list[AdmissionPolicy] = field(default_factory=list)
    bookmark_interval: float = BOOKMARK_INTERVAL

    def __post_init__(self) -> None:
        self.store = Store()
        self.controller = Controller(self.store, step=self.step, seed=self.seed)
        self._runner: web.AppRunner | None = None
        self._controller_task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()

    # ================================================================ lifecycle

    async def start(self, kubeconfig_dir: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on a free loopback port, write the kubeconfig, start the controller."""
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        bound_port = server.sockets[0].getsockname()[1]
        self.url = f"http://{host}:{bound_port}"
        self.kubeconfig = kubeconfig_dir / "kubeconfig"
        self.kubeconfig.write_text(json.dumps(self.kubeconfig_dict(), indent=2))
        self._controller_task = asyncio.create_task(self.controller.run(), name="kube-controller")
        await self.create_namespace("default")

    async def stop(self) -> None:
        """End watches, stop the controller and the server."""
        self._closing.set()
        self.controller.stopping = True
        self.store.notify()
        if self._controller_task is not None:
            await self._controller_task
        if self._runner is not None:
            await self._runner.cleanup()

    def kubeconfig_dict(self) -> Obj:
        """A kubeconfig for `self.url`: cluster, token user and a current context."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "standin", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "standin",
                    "context": {"cluster": "standin", "user": "standin", "namespace": "default"},
                }
            ],
            "current-context": "standin",
            "preferences": {},
        }

    # ================================================================ HTTP

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {
            "Audit-Id": str(uuid.uuid4()),
            "Cache-Control": "no-cache, private",
            "X-Kubernetes-Pf-Flowschema-Uid": FLOWSCHEMA_UID,
            "X-Kubernetes-Pf-Prioritylevel-Uid": PRIORITYLEVEL_UID,
        }
        headers.update(extra or {})
        return headers

    async def _respond(
        self, request: web.Request, status: int, body: Obj, extra: dict[str, str] | None = None
    ) -> web.StreamResponse:
        data = json.dumps(body, separators=(",", ":")).encode()
        headers = self._headers(extra)
        if status == 403:
            headers["X-Content-Type-Options"] = "nosniff"
        # A reply held back by an `after` fault is built whole, not streamed yet.
        if len(data) <= CHUNKED_ABOVE or request.get(_HELD):
            return web.Response(
                status=status, body=data, headers=headers, content_type="application/json"
            )
        response = web.StreamResponse(status=status, headers=headers)
        response.content_type = "application/json"
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(data)
        await response.write_eof()
        return response

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        content_type = request.headers.get("Content-Type")
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=CIMultiDict(request.headers),
            content_type=content_type,
            body=_parse_for_record(raw, content_type),
            raw=raw,
        )
        self.requests.append(record)
        try:
            route = self._route(request)
            fault = next((f for f in self.faults if f.matches(request.method, request.path)), None)
            if fault is not None and not fault.take():
                fault = None
            applied: web.StreamResponse | None = None
            if fault is not None and fault.after:
                self._authenticate(request)
                request[_HELD] = True
                applied = await self._dispatch(request, route, raw, content_type)
            if fault is not None:
                await fault.hold()
                if fault.drop:
                    record.fault = True
                    assert request.transport is not None
                    request.transport.abort()
                    return web.Response(status=500)
                if fault.status is not None:
                    record.fault = True
                    raise self._fault_error(fault, request, route)
            self._authenticate(request)
            if applied is None:
                self._authorize(request, route)
            response = applied or await self._dispatch(request, route, raw, content_type)
        except ApiError as error:
            record.status = int(error.body.get("code", 500))
            return await self._respond(request, record.status, error.body, error.headers)
        record.status = response.status
        return response

    def _authenticate(self, request: web.Request) -> None:
        if self.required_token is None:
            return
        if request.headers.get("Authorization") != f"Bearer {self.required_token}":
            raise ApiError(generic_error(401))

    def _authorize(self, request: web.Request, route: Route) -> None:
        """RBAC as `deny()` left it: a denied verb is the API server's 403 (fixtures 055, 103)."""
        resource = route.resource
        if resource is None or resource is ACCESS_REVIEWS:
            return  # discovery and self-reviews are open to every authenticated user
        verb = _verb(request, route)
        target = f"{resource.plural}/{route.subresource}" if route.subresource else resource.plural
        for denial in self.denials:
            if denial.matches(verb, resource.group, target, route.namespace, route.name):
                denial.hits += 1
                raise ApiError(
                    forbidden(
                        resource, verb, route.name, route.namespace, self.user, route.subresource
                    )
                )

    def _fault_error(self, fault: Fault, request: web.Request, route: Route) -> ApiError:
        code = fault.status or 500
        resource, name = route.resource, route.name
        headers: dict[str, str] = {}
        if code == 409 and resource is not None and name:
            body = conflict(resource, name)
        elif code == 404 and resource is not None and name:
            body = not_found(resource, name)
        elif code == 403:
            body = forbidden(
                resource,
                _verb(request, route),
                name,
                route.namespace,
                fault.user,
                route.subresource,
            )
        elif code == 422:
            body = patch_rejected()
        else:
            retry = fault.retry_after
            if code == 429 and retry is None:
                retry = 1
            body = generic_error(code, fault.message, retry_after=retry)
            if retry is not None:
                headers["Retry-After"] = str(retry)
        if fault.message and code in (403, 404, 409, 422):
            body["message"] = fault.message
        return ApiError(body, headers)

    # ------------------------------------------------------------ routing

    def _route(self, request: web.Request) -> Route:
        parts = [p for p in request.path.split("/") if p]
        if parts == ["version"]:
            return Route(None, discovery=dict(VERSION_INFO))
        if parts == ["api"]:
            return Route(
                None,
                discovery={
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": request.host}
                    ],
                },
            )
        if parts == ["apis"]:
            return Route(None, discovery=_group_list())
        if parts == ["api", "v1"]:
            return Route(None, discovery=_resource_list("v1", with_api_version=False))
        if len(parts) == 3 and parts[0] == "apis":
            group_version = f"{parts[1]}/{parts[2]}"
            if group_version in GROUP_VERSIONS:
                return Route(None, discovery=_resource_list(group_version))
        if len(parts) >= 3 and parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 4 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(generic_error(404))
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces" and (group, version, rest[2]) in BY_PATH:
            namespace, rest = rest[1], rest[2:]
        resource = BY_PATH.get((group, version, rest[0]))
        if resource is None or len(rest) > 3:
            raise ApiError(generic_error(404))
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in resource.subresources:
            raise ApiError(generic_error(404))
        return Route(resource, namespace, name, sub)

    async def _dispatch(
        self, request: web.Request, route: Route, raw: bytes, content_type: str | None
    ) -> web.StreamResponse:
        method = request.method
        if route.discovery is not None:
            if method != "GET":
                raise ApiError(generic_error(405))
            return await self._respond(request, 200, route.discovery)
        resource = route.resource
        assert resource is not None
        if route.subresource is None and _verb(request, route) not in resource.verbs:
            raise ApiError(generic_error(405))
        query = request.query
        dry_run = "dryRun" in query
        manager = query.get("fieldManager") or manager_from_user_agent(
            request.headers.get("User-Agent")
        )
        if route.name is None:
            if method == "GET":
                if query.get("watch", "false").lower() in ("true", "1"):
                    return await self._watch(request, resource, route.namespace)
                return await self._respond(
                    request, 200, self._list(resource, route.namespace, query)
                )
            if method == "POST":
                body = _parse_body(raw, content_type, patch=False)
                created = self._create(resource, route.namespace, body, manager, dry_run)
                return await self._respond(request, 201, created)
            if method == "DELETE":
                return await self._respond(
                    request, 200, self._delete_collection(resource, route.namespace, query)
                )
            raise ApiError(generic_error(405))
        if method == "GET":
            current = self._current(resource, route.namespace, route.name)
            if route.subresource == "scale":
                return await self._respond(request, 200, _scale_view(current))
            return await self._respond(request, 200, render(resource, current))
        if method == "PUT":
            body = _parse_body(raw, content_type, patch=False)
            result = self._replace(resource, route, body, manager, dry_run)
            return await self._respond(request, 200, result)
        if method == "PATCH":
            if content_type is None or content_type.split(";")[0].strip() not in (
                JSON_PATCH,
                MERGE_PATCH,
                STRATEGIC_MERGE_PATCH,
            ):
                raise ApiError(unsupported_media_type(patch=True))
            body = _parse_body(raw, "application/json", patch=True)
            result = self._patch(
                resource, route, content_type.split(";")[0].strip(), body, manager, dry_run
            )
            return await self._respond(request, 200, result)
        if method == "DELETE":
            options = _parse_body(raw, "application/json", patch=False) if raw else {}
            return await self._respond(
                request, 200, self._delete(resource, route.namespace, route.name, options, dry_run)
            )
        raise ApiError(generic_error(405))

    # ------------------------------------------------------------ verbs

    def _current(self, resource: Resource, namespace: str | None, name: str) -> Obj:
        obj = self.store.get(resource.key, namespace or "", name)
        if obj is None:
            raise ApiError(not_found(resource, name))
        return obj

    def _list(self, resource: Resource, namespace: str | None, query: Any) -> Obj:
        try:
            label_requirements = parse_label_selector(query.get("labelSelector"))
            field_requirements = parse_field_selector(query.get("fieldSelector"))
        except ValueError as error:
            raise ApiError(bad_request(str(error))) from error
        items = [
            render(resource, obj, typed=False)
            for obj in self.store.items(resource.key, namespace)
            if labels_match(obj["metadata"].get("labels") or {}, label_requirements)
            and fields_match(render(resource, obj), field_requirements)
        ]
        metadata: Obj = {"resourceVersion": str(self.store.rv)}
        start = int(query.get("continue") or 0)
        limit = int(query.get("limit") or 0)
        if start or limit:
            end = start + limit if limit else len(items)
            if end < len(items):
                metadata["continue"] = str(end)
                metadata["remainingItemCount"] = len(items) - end
            items = items[start:end]
        return {
            "kind": f"{resource.kind}List",
            "apiVersion": resource.api_version,
            "metadata": metadata,
            "items": items,
        }

    def _create(
        self,
        resource: Resource,
        namespace: str | None,
        body: Any,
        manager: str,
        dry_run: bool = False,
    ) -> Obj:
        if not isinstance(body, dict):
            raise ApiError(bad_request("the body of the request must be a JSON object"))
        if resource is ACCESS_REVIEWS:
            return self._review_access(body, manager)
        body = copy.deepcopy(body)
        metadata = body.setdefault("metadata", {})
        if not isinstance(metadata, dict):
            raise ApiError(bad_request("the body of the request must carry an object metadata"))
        if resource.namespaced:
            if metadata.get("namespace") and metadata["namespace"] != namespace:
                raise ApiError(
                    bad_request(
                        "the namespace of the provided object does not "
                        "match the namespace sent on the request"
                    )
                )
            metadata["namespace"] = namespace
            if self.store.get("namespaces", "", namespace or "") is None:
                raise ApiError(namespace_not_found(namespace or ""))
        if not metadata.get("name") and metadata.get("generateName"):
            # The name is generated before validation, so a refusal names it (fixture 088).
            suffix = "".join(self.controller._rng.choice(SAFE_ALPHABET) for _ in range(5))
            metadata["name"] = generated_name(str(metadata["generateName"]), suffix)
        for key in (
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
            "deletionTimestamp",
            "generation",
        ):
            metadata.pop(key, None)
        if resource.key == "events":
            obj = event_from_request(resource, body)
            fields = {
                f"f:{k}": {}
                for k in sorted(body)
                if k not in ("kind", "apiVersion", "metadata") and body[k] is not None
            }
        else:
            body.pop("kind", None)
            body.pop("apiVersion", None)
            if resource in (DEPLOYMENTS, REPLICASETS, PODS, SERVICES):
                body.pop("status", None)
            obj = apply_defaults(resource, body)
            fields = _fields_of(obj)
        error = validate(resource, obj)
        if error is not None:
            raise ApiError(error)
        if resource in (DEPLOYMENTS, REPLICASETS, PODS):
            obj["metadata"]["generation"] = 1
        self._admit(resource, "CREATE", obj)
        name = obj["metadata"]["name"]
        if self.store.get(resource.key, namespace or "", name) is not None:
            raise ApiError(already_exists(resource, name))
        record_manager(obj, manager, resource.api_version, fields)
        if dry_run:
            obj["metadata"]["uid"] = str(uuid.uuid4())
            obj["metadata"]["creationTimestamp"] = timestamp()
            return render(resource, obj)
        return render(resource, self.store.create(resource.key, obj))

    def _review_access(self, body: Obj, manager: str) -> Obj:
        """SelfSubjectAccessReview: allowed unless `deny()` took the permission (101, 102)."""
        spec = body.get("spec") or {}
        attributes = spec.get("resourceAttributes")
        non_resource = spec.get("nonResourceAttributes")
        if (attributes is None) == (non_resource is None):
            raise ApiError(
                invalid_errors(
                    ACCESS_REVIEWS,
                    "",
                    [
                        invalid_value(
                            "spec.resourceAttributes",
                            "null" if attributes is None else "{...}",
                            "exactly one of nonResourceAttributes or resourceAttributes must be "
                            "specified",
                        )
                    ],
                )
            )
        allowed = True
        namespace = None
        if attributes is not None:
            order = [
                "namespace",
                "verb",
                "group",
                "version",
                "resource",
                "subresource",
                "name",
                "fieldSelector",
                "labelSelector",
            ]
            attributes = {k: attributes[k] for k in order if attributes.get(k)}
            spec = {"resourceAttributes": attributes}
            namespace = attributes.get("namespace")
            target = attributes.get("resource", "")
            if attributes.get("subresource"):
                target += f"/{attributes['subresource']}"
            allowed = not any(
                d.matches(
                    attributes.get("verb", ""),
                    attributes.get("group", ""),
                    target,
                    namespace,
                    attributes.get("name"),
                )
                for d in self.denials
            )
        section = "resourceAttributes" if attributes is not None else "nonResourceAttributes"
        given = spec[section] or {}
        review: Obj = {"metadata": {}}
        record_manager(
            review,
            manager,
            ACCESS_REVIEWS.api_version,
            {"f:spec": {f"f:{section}": {".": {}, **{f"f:{k}": {} for k in sorted(given)}}}},
        )
        review["spec"] = spec
        review["status"] = (
            {"allowed": True, "reason": self._allowed_reason(namespace)}
            if allowed
            else {"allowed": False}
        )
        return render(ACCESS_REVIEWS, review)

    def _allowed_reason(self, namespace: str | None) -> str:
        """RBAC's reason, naming a (Cluster)RoleBinding and Role after the ServiceAccount."""
        account = re.fullmatch(r"system:serviceaccount:([^:]+):([^:]+)", self.user)
        if account:
            subject = f'ServiceAccount "{account.group(2)}/{account.group(1)}"'
            role = account.group(2)
        else:
            subject = f'User "{self.user}"'
            role = self.user.rsplit(":", 1)[-1]
        if namespace:
            return (
                f'RBAC: allowed by RoleBinding "{role}/{namespace}" of Role "{role}" to {subject}'
            )
        return f'RBAC: allowed by ClusterRoleBinding "{role}" of ClusterRole "{role}" to {subject}'

    def _admit(self, resource: Resource, operation: str, obj: Obj) -> None:
        """Validating admission: the first matching policy that denies refuses the write."""
        meta = obj["metadata"]
        for policy in self.admission:
            if (
                policy.resource == resource.plural
                and operation in policy.operations
                and policy.namespace in (None, meta.get("namespace"))
                and policy.denies(render(resource, obj))
            ):
                policy.hits += 1
                raise ApiError(policy.refusal(resource, meta["name"]))

    def _replace(
        self, resource: Resource, route: Route, body: Any, manager: str, dry_run: bool
    ) -> Obj:
        assert route.name is not None
        current = self._current(resource, route.namespace, route.name)
        if not isinstance(body, dict):
            raise ApiError(bad_request("the body of the request must be a JSON object"))
        metadata = body.get("metadata") or {}
        if metadata.get("name") not in (None, route.name):
            raise ApiError(
                bad_request(
                    f"the name of the object ({metadata.get('name')}) does "
                    f"not match the name on the URL ({route.name})"
                )
            )
        expected = metadata.get("resourceVersion")
        if route.subresource == "scale":
            return self._write_scale(resource, current, body, manager, dry_run)
        if not expected and resource is LEASES:
            # Leases refuse unconditional updates (AllowUnconditionalUpdate is false).
            raise ApiError(
                invalid_errors(
                    resource,
                    route.name,
                    [
                        invalid_value(
                            "metadata.resourceVersion",
                            GoLiteral("0x0"),
                            "must be specified for an update",
                        )
                    ],
                )
            )
        return self._write(resource, current, body, manager, route.subresource, expected, dry_run)

    def _patch(
        self,
        resource: Resource,
        route: Route,
        patch_type: str,
        patch: Any,
        manager: str,
        dry_run: bool,
    ) -> Obj:
        assert route.name is not None
        current = self._current(resource, route.namespace, route.name)
        document = (
            _scale_view(current) if route.subresource == "scale" else render(resource, current)
        )
        try:
            if patch_type == JSON_PATCH:
                patched = apply_json_patch(document, patch)
            elif patch_type == MERGE_PATCH:
                patched = apply_merge_patch(document, patch)
            else:
                patched = apply_strategic_merge_patch(document, patch)
        except PatchError as error:
            if patch_type == JSON_PATCH and error.status == 422:
                raise ApiError(patch_rejected()) from error
            if error.status == 422:
                raise ApiError(status_body(422, "Invalid", error.message, {})) from error
            raise ApiError(bad_request(error.message)) from error
        if not isinstance(patched, dict):
            raise ApiError(bad_request("the patch produced something other than an object"))
        expected = (patched.get("metadata") or {}).get("resourceVersion")
        if route.subresource == "scale":
            return self._write_scale(resource, current, patched, manager, dry_run)
        return self._write(
            resource,
            current,
            patched,
            manager,
            route.subresource,
            expected,
            dry_run,
            patch=patch if patch_type != JSON_PATCH else None,
        )

    def _write(
        self,
        resource: Resource,
        current: Obj,
        body: Obj,
        manager: str,
        subresource: str | None,
        expected_rv: str | None,
        dry_run: bool,
        patch: Any = None,
    ) -> Obj:
        """Shared tail of PUT and PATCH: concurrency check, defaults, validation, generation."""
        name = current["metadata"]["name"]
        if expected_rv and expected_rv != current["metadata"]["resourceVersion"]:
            raise ApiError(conflict(resource, name))
        body = copy.deepcopy(body)
        body.pop("kind", None)
        body.pop("apiVersion", None)
        if resource.key == "events":
            keep = body.get("metadata") or {}
            new = event_from_request(resource, body)
            new["metadata"] = keep
        else:
            new = apply_defaults(resource, body)
        metadata = new.setdefault("metadata", {})
        old_meta = current["metadata"]
        # Fields the server owns: whatever the client sent, the stored values stay.
        for key in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "managedFields",
            "deletionTimestamp",
        ):
            if key in old_meta:
                metadata[key] = copy.deepcopy(old_meta[key])
            else:
                metadata.pop(key, None)
        metadata["resourceVersion"] = old_meta["resourceVersion"]
        if subresource == "status":
            new["spec"] = copy.deepcopy(current.get("spec"))
            if "labels" in old_meta:
                metadata["labels"] = copy.deepcopy(old_meta["labels"])
            else:
                metadata.pop("labels", None)
        elif "status" in current:
            new["status"] = copy.deepcopy(current["status"])
        if resource.key != "events":
            error = validate(resource, new)
            if error is not None:
                raise ApiError(error)
        if canonical(_without_rv(new)) == canonical(_without_rv(current)):
            return render(resource, current)
        if "generation" in old_meta and subresource != "status":
            changed = canonical(new.get("spec")) != canonical(current.get("spec"))
            if resource is DEPLOYMENTS:
                # Deployments count annotation changes too: the controller copies them to
                # the ReplicaSets (fixture 118: an annotation-only PATCH, generation 2 -> 3).
                changed = changed or canonical(metadata.get("annotations")) != canonical(
                    old_meta.get("annotations")
                )
            if changed:
                metadata["generation"] = int(old_meta["generation"]) + 1
        self._admit(resource, "UPDATE", new)
        fields = _fields_of(patch if isinstance(patch, dict) else new)
        record_manager(new, manager, resource.api_version, fields, subresource, merge=True)
        if dry_run:
            return render(resource, new)
        return render(resource, self.store.update(resource.key, new))

    def _write_scale(
        self, resource: Resource, current: Obj, scale: Obj, manager: str, dry_run: bool
    ) -> Obj:
        name = current["metadata"]["name"]
        expected = (scale.get("metadata") or {}).get("resourceVersion")
        if expected and expected != current["metadata"]["resourceVersion"]:
            raise ApiError(conflict(resource, name))
        replicas = (scale.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or replicas < 0:
            body = invalid(
                resource, name, [("spec.replicas", replicas, "must be greater than or equal to 0")]
            )
            body["message"] = body["message"].replace(resource.group_kind, "Scale.autoscaling")
            body["details"]["group"], body["details"]["kind"] = "autoscaling", "Scale"
            raise ApiError(body)
        if replicas == current["spec"].get("replicas"):
            return _scale_view(current)
        new = copy.deepcopy(current)
        new["spec"]["replicas"] = replicas
        new["metadata"]["generation"] = int(new["metadata"].get("generation", 1)) + 1
        self._admit(resource, "UPDATE", new)
        if replicas:
            # the scale subresource's entry carries no time (fixture 067)
            fields = {"f:spec": {"f:replicas": {}}}
            record_manager(new, manager, resource.api_version, fields, "scale", timed=False)
        else:
            forget_manager(new, manager, "scale")
        if dry_run:
            return _scale_view(new)
        return _scale_view(self.store.update(resource.key, new))

    def _delete(
        self, resource: Resource, namespace: str | None, name: str, options: Any, dry_run: bool
    ) -> Obj:
        current = self._current(resource, namespace, name)
        preconditions = (options or {}).get("preconditions") or {}
        if preconditions.get("resourceVersion") not in (
            None,
            current["metadata"]["resourceVersion"],
        ) or preconditions.get("uid") not in (None, current["metadata"]["uid"]):
            raise ApiError(conflict(resource, name))
        final = copy.deepcopy(current)
        if resource in (PODS, NAMESPACES):
            final["metadata"]["deletionTimestamp"] = timestamp()
            if resource is PODS:
                final["metadata"]["deletionGracePeriodSeconds"] = 30
            else:
                final["status"] = {"phase": "Terminating"}
        if dry_run:
            return render(resource, final)
        policy = (options or {}).get("propagationPolicy", "Background")
        deleted = self.store.delete(resource.key, namespace or "", name, final)
        if resource is NAMESPACES:
            for kind in ("deployments", "replicasets", "pods", "services", "events"):
                for obj in list(self.store.items(kind, name)):
                    self.store.delete(kind, name, obj["metadata"]["name"])
        elif policy != "Orphan":
            self._collect_garbage(namespace or "", current["metadata"]["uid"])
        if resource in (PODS, SERVICES, NAMESPACES):
            return render(resource, deleted)
        details: Obj = {"name": name}
        if resource.group:
            details["group"] = resource.group
        details["kind"] = resource.plural
        details["uid"] = current["metadata"]["uid"]
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        }

    def _collect_garbage(self, namespace: str, uid: str) -> None:
        """The garbage collector, synchronously: dependents of a deleted owner go too."""
        for kind in ("replicasets", "pods"):
            for obj in self.store.owned_by(kind, namespace, uid):
                meta = obj["metadata"]
                self.store.delete(kind, namespace, meta["name"])
                self._collect_garbage(namespace, meta["uid"])

    def _delete_collection(self, resource: Resource, namespace: str | None, query: Any) -> Obj:
        listed = self._list(resource, namespace, query)
        for item in listed["items"]:
            meta = item["metadata"]
            self._delete(resource, meta.get("namespace"), meta["name"], {}, False)
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"group": resource.group, "kind": resource.plural},
        }

    # ------------------------------------------------------------ watch

    async def _watch(
        self, request: web.Request, resource: Resource, namespace: str | None
    ) -> web.StreamResponse:
        """Chunked newline-delimited events; one chunk per event (fixture 068).

        A client that hangs up ends the watch (kubectl does once its condition is met).
        """
        query = request.query
        try:
            label_requirements = parse_label_selector(query.get("labelSelector"))
            field_requirements = parse_field_selector(query.get("fieldSelector"))
        except ValueError as error:
            raise ApiError(bad_request(str(error))) from error
        timeout = float(query.get("timeoutSeconds") or 1800)
        since = query.get("resourceVersion") or "0"
        bookmarks = query.get("allowWatchBookmarks", "").lower() in ("true", "1")
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + timeout
        # The watch cache's bookmarks: a heartbeat, and twice in the seconds before the
        # timeout (recorded at 2.25 s and 3.26 s into a 5 s watch, fixture 124).
        bookmark_times = sorted(
            {deadline - 3.0, deadline - 2.0}
            | {
                started + n * self.bookmark_interval
                for n in range(1, int(timeout / self.bookmark_interval) + 1)
            }
        )
        bookmark_times = [t for t in bookmark_times if started < t < deadline] if bookmarks else []
        response = web.StreamResponse(status=200, headers=self._headers())
        response.content_type = "application/json"
        response.enable_chunked_encoding()
        await response.prepare(request)

        def visible(obj: Obj | None) -> bool:
            if obj is None:
                return False
            meta = obj["metadata"]
            if namespace is not None and meta.get("namespace") != namespace:
                return False
            return labels_match(meta.get("labels") or {}, label_requirements) and fields_match(
                render(resource, obj), field_requirements
            )

        async def send(kind: str, obj: Obj) -> None:
            line = json.dumps({"type": kind, "object": obj}, separators=(",", ":")) + "\n"
            await response.write(line.encode())

        if since == "0":
            position = self.store.rv
            for obj in self.store.items(resource.key, namespace):
                if visible(obj):
                    await send("ADDED", render(resource, obj))
        else:
            try:
                position = int(since)
            except ValueError as error:
                raise ApiError(
                    bad_request(f'Invalid value: "{since}": strconv.ParseUint: invalid syntax')
                ) from error
            if position < self.store.floor:
                await send(
                    "ERROR",
                    status_body(
                        410, "Expired", f"too old resource version: {position} ({self.store.floor})"
                    ),
                )
                await response.write_eof()
                return response
        try:
            await self._follow(
                response, resource, position, deadline, bookmark_times, visible, send
            )
        except ConnectionResetError:
            return response
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    async def _follow(
        self,
        response: web.StreamResponse,
        resource: Resource,
        position: int,
        deadline: float,
        bookmark_times: list[float],
        visible: Callable[[Obj | None], bool],
        send: Callable[[str, Obj], Awaitable[None]],
    ) -> None:
        """Send the changes since `position` as they come, and the bookmarks, until the deadline."""
        loop = asyncio.get_running_loop()
        bookmark_rv = position
        while not self._closing.is_set():
            for change in list(self.store.changes_since(position)):
                position = change.rv
                if change.kind != resource.key:
                    continue
                bookmark_rv = change.rv
                now_visible = change.type != "DELETED" and visible(change.obj)
                was_visible = visible(change.old)
                if change.type == "ADDED" and now_visible:
                    await send("ADDED", render(resource, change.obj))
                elif change.type == "MODIFIED" and now_visible:
                    await send("MODIFIED" if was_visible else "ADDED", render(resource, change.obj))
                elif (change.type == "MODIFIED" and was_visible) or (
                    change.type == "DELETED" and visible(change.obj)
                ):
                    # leaving the selector reads as a deletion, as from the watch cache
                    await send("DELETED", render(resource, change.obj))
            now = loop.time()
            while bookmark_times and bookmark_times[0] <= now:
                bookmark_times.pop(0)
                await send("BOOKMARK", _bookmark(resource, bookmark_rv))
            remaining = deadline - now
            if remaining <= 0:
                break
            wake = min([deadline, *bookmark_times[:1]]) - now
            await self.store.changed(min(wake, 0.5))

    # ================================================================ seeding and inspection

    async def create(
        self, plural: str, namespace: str | None, body: Obj, group_version: str | None = None
    ) -> Obj:
        """Create any served object as a client would (defaults, validation, 201 shape)."""
        resource = _resource(plural, group_version)
        try:
            return self._create(resource, namespace, body, SEED_MANAGER)
        except ApiError as error:
            raise ValueError(error.body["message"]) from error

    async def create_namespace(self, name: str) -> Obj:
        existing = self.store.get("namespaces", "", name)
        if existing is not None:
            return render(NAMESPACES, existing)
        return await self.create("namespaces", None, {"metadata": {"name": name}})

    async def create_deployment(
        self,
        namespace: str,
        name: str,
        version: str,
        *,
        replicas: int = 2,
        labels: dict[str, str] | None = None,
        app: str | None = None,
        image: str | None = None,
        container: str = "model",
        annotations: dict[str, str] | None = None,
        paused: bool = False,
        strategy: Obj | None = None,
        progress_deadline_seconds: int | None = None,
        readiness_path: str = "/v2/health/ready",
        port: int = 8080,
        wait: bool = True,
        timeout: float = 5.0,
    ) -> Obj:
        """A Deployment of one model version, the way the recorded one was built (fixture 008).

        Template labels: `app`, `app.kubernetes.io/name`, `app.kubernetes.io/version` plus
        `labels` (which also join the selector, e.g. `{"slot": "blue"}` for blue-green).
        With `wait` the call returns once the rollout is complete and the controller has
        settled (the returned resourceVersion is current).
        """
        await self.create_namespace(namespace)
        app = app or name
        extra = dict(labels or {})
        template_labels = {
            "app": app,
            "app.kubernetes.io/name": app,
            VERSION_LABEL: version,
            **extra,
        }
        body: Obj = {
            "metadata": {"name": name, "labels": {"app": app, **extra}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": app, **extra}},
                "template": {
                    "metadata": {"labels": template_labels},
                    "spec": {
                        "containers": [
                            {
                                "name": container,
                                "image": image or f"registry.example/{app}:{version}",
                                "ports": [{"containerPort": port, "name": "http"}],
                                "readinessProbe": {
                                    "httpGet": {"path": readiness_path, "port": port}
                                },
                            }
                        ]
                    },
                },
            },
        }
        if annotations:
            body["metadata"]["annotations"] = dict(annotations)
        if paused:
            body["spec"]["paused"] = True
        if strategy is not None:
            body["spec"]["strategy"] = strategy
        if progress_deadline_seconds is not None:
            body["spec"]["progressDeadlineSeconds"] = progress_deadline_seconds
        created = await self.create("deployments", namespace, body)
        if wait and not paused:
            return await self._rolled_out(namespace, name, timeout)
        return created

    async def patch(
        self,
        plural: str,
        namespace: str | None,
        name: str,
        patch: Any,
        patch_type: str = STRATEGIC_MERGE_PATCH,
        group_version: str | None = None,
    ) -> Obj:
        """PATCH as a client would (same code path as HTTP, no request recorded)."""
        resource = _resource(plural, group_version)
        route = Route(resource, namespace, name)
        try:
            return self._patch(resource, route, patch_type, patch, SEED_MANAGER, False)
        except ApiError as error:
            raise ValueError(error.body["message"]) from error

    async def set_version(
        self,
        namespace: str,
        name: str,
        version: str,
        *,
        image: str | None = None,
        wait: bool = False,
        timeout: float = 5.0,
    ) -> Obj:
        """Change the template to another model version (a new revision), like a deploy."""
        current = self.deployment(namespace, name)
        first = current["spec"]["template"]["spec"]["containers"][0]
        if image is None:
            repository = first["image"].rsplit(":", 1)[0]
            image = f"{repository}:{version}"
        patched = await self.patch(
            "deployments",
            namespace,
            name,
            {
                "spec": {
                    "template": {
                        "metadata": {"labels": {VERSION_LABEL: version}},
                        "spec": {"containers": [{"name": first["name"], "image": image}]},
                    }
                }
            },
        )
        if wait:
            return await self._rolled_out(namespace, name, timeout)
        return patched

    async def scale(self, namespace: str, name: str, replicas: int) -> Obj:
        return await self.patch("deployments", namespace, name, {"spec": {"replicas": replicas}})

    async def pause(self, namespace: str, name: str, paused: bool = True) -> Obj:
        return await self.patch("deployments", namespace, name, {"spec": {"paused": paused}})

    async def create_service(
        self,
        namespace: str,
        name: str,
        selector: dict[str, str],
        *,
        port: int = 80,
        target_port: int = 8080,
        labels: dict[str, str] | None = None,
    ) -> Obj:
        """A ClusterIP Service (fixture 057 shape), e.g. the blue-green switch."""
        await self.create_namespace(namespace)
        return await self.create(
            "services",
            namespace,
            {
                "metadata": {"name": name, "labels": dict(labels or {"app": name})},
                "spec": {
                    "ports": [{"name": "http", "port": port, "targetPort": target_port}],
                    "selector": dict(selector),
                },
            },
        )

    async def create_configmap(
        self,
        namespace: str,
        name: str,
        data: dict[str, str] | None = None,
        *,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
    ) -> Obj:
        """A ConfigMap (fixture 093 shape: no `data` key when created without data)."""
        await self.create_namespace(namespace)
        metadata: Obj = {"name": name}
        if labels:
            metadata["labels"] = dict(labels)
        if annotations:
            metadata["annotations"] = dict(annotations)
        body: Obj = {"metadata": metadata}
        if data is not None:
            body["data"] = dict(data)
        return await self.create("configmaps", namespace, body)

    async def create_lease(
        self,
        namespace: str,
        name: str,
        holder: str,
        *,
        duration_seconds: int = 30,
        transitions: int = 0,
        acquired: str | None = None,
        renewed: str | None = None,
    ) -> Obj:
        """A coordination.k8s.io/v1 Lease held by `holder` (fixture 127 shape)."""
        await self.create_namespace(namespace)
        moment = acquired or now().isoformat()
        return await self.create(
            "leases",
            namespace,
            {
                "metadata": {"name": name},
                "spec": {
                    "holderIdentity": holder,
                    "leaseDurationSeconds": duration_seconds,
                    "acquireTime": moment,
                    "renewTime": renewed or moment,
                    "leaseTransitions": transitions,
                },
            },
        )

    async def create_pod(
        self,
        namespace: str,
        name: str,
        labels: dict[str, str],
        *,
        ready: bool = True,
        image: str = "registry.example/model:v1",
    ) -> Obj:
        """A bare Pod already Running (Ready or not), for selectors and health lookups."""
        await self.create_namespace(namespace)
        await self.create(
            "pods",
            namespace,
            {
                "metadata": {"name": name, "labels": dict(labels)},
                "spec": {
                    "containers": [{"name": "model", "image": image}],
                    "nodeName": "fake-node-0",
                },
            },
        )
        if not ready:
            self.controller.unready_pods.add((namespace, name))
        current = copy.deepcopy(self.store.get("pods", namespace, name))
        assert current is not None
        current["status"] = running_status(current, ready)
        self.controller.adopt_pod(current["metadata"]["uid"])
        return render(PODS, self.store.update("pods", current))

    async def delete(
        self, plural: str, namespace: str | None, name: str, group_version: str | None = None
    ) -> None:
        resource = _resource(plural, group_version)
        self._delete(resource, namespace, name, {}, False)

    async def wait_for(
        self, predicate: Any, timeout: float = 5.0, what: str = "a condition"
    ) -> Any:
        """Wait until predicate() is truthy, re-checked on each write; no fixed sleeps."""
        return await self.store.wait_for(predicate, timeout, what)

    async def wait_settled(self, timeout: float = 5.0) -> None:
        """Wait until the controller has made a pass that wrote nothing.

        After it, objects change only through requests (or time-based conditions such as a
        progress deadline): a resourceVersion read now stays current for a precondition.
        """
        try:
            await asyncio.wait_for(self.controller.settled(), timeout)
        except TimeoutError as error:
            raise TimeoutError(
                f"timed out after {timeout}s waiting for the controller to settle"
            ) from error

    async def wait_rollout_complete(self, namespace: str, name: str, timeout: float = 5.0) -> Obj:
        """Return the Deployment once kubectl would call the rollout complete."""

        def complete() -> Obj | None:
            d = self.store.get("deployments", namespace, name)
            if d is None:
                return None
            return render(DEPLOYMENTS, d) if rollout_complete(d) else None

        return await self.wait_for(complete, timeout, f"rollout of {namespace}/{name}")

    async def _rolled_out(self, namespace: str, name: str, timeout: float) -> Obj:
        """The rollout complete and the controller settled: the returned object stays current."""
        await self.wait_rollout_complete(namespace, name, timeout)
        await self.wait_settled(timeout)
        return self.deployment(namespace, name)

    async def wait_revision(
        self, namespace: str, name: str, revision: int, timeout: float = 5.0
    ) -> Obj:
        """Return the Deployment once its revision annotation reads `revision`."""

        def reached() -> Obj | None:
            d = self.store.get("deployments", namespace, name)
            if d and (d["metadata"].get("annotations") or {}).get(REVISION) == str(revision):
                return render(DEPLOYMENTS, d)
            return None

        return await self.wait_for(reached, timeout, f"{namespace}/{name} revision {revision}")

    def get(
        self, plural: str, namespace: str | None, name: str, group_version: str | None = None
    ) -> Obj | None:
        """A stored object as the API would return it (a copy), or None."""
        resource = _resource(plural, group_version)
        obj = self.store.get(resource.key, namespace or "", name)
        return render(resource, obj) if obj is not None else None

    def list(
        self,
        plural: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        group_version: str | None = None,
    ) -> list[Obj]:
        resource = _resource(plural, group_version)
        requirements = parse_label_selector(label_selector)
        return [
            render(resource, obj)
            for obj in self.store.items(resource.key, namespace)
            if labels_match(obj["metadata"].get("labels") or {}, requirements)
        ]

    def deployment(self, namespace: str, name: str) -> Obj:
        obj = self.get("deployments", namespace, name)
        if obj is None:
            raise KeyError(f"no deployment {namespace}/{name}")
        return obj

    def replicasets(self, namespace: str, deployment: str) -> list[Obj]:
        """ReplicaSets owned by a Deployment, oldest revision first."""
        d = self.deployment(namespace, deployment)
        owned = self.store.owned_by("replicasets", namespace, d["metadata"]["uid"])
        return sorted(
            (render(REPLICASETS, rs) for rs in owned),
            key=lambda rs: int(rs["metadata"]["annotations"].get(REVISION, "0")),
        )

    def pods(
        self, namespace: str, deployment: str | None = None, label_selector: str | None = None
    ) -> list[Obj]:
        """Pods by owning Deployment (through its ReplicaSets) or by label selector."""
        pods = self.list("pods", namespace, label_selector)
        if deployment is None:
            return pods
        owners = {rs["metadata"]["uid"] for rs in self.replicasets(namespace, deployment)}
        return [
            p
            for p in pods
            if any(ref["uid"] in owners for ref in p["metadata"].get("ownerReferences") or [])
        ]

    def service(self, namespace: str, name: str) -> Obj:
        obj = self.get("services", namespace, name)
        if obj is None:
            raise KeyError(f"no service {namespace}/{name}")
        return obj

    def events(
        self,
        namespace: str | None = None,
        *,
        reason: str | None = None,
        regarding: str | None = None,
        api: str = "events.k8s.io/v1",
    ) -> list[Obj]:
        """Events in the events.k8s.io/v1 view (or `api="v1"` for the core view)."""
        plural_view = "events"
        resource = _resource(plural_view, api)
        result = []
        for obj in self.store.items("events", namespace):
            if reason is not None and obj.get("reason") != reason:
                continue
            if regarding is not None and (obj.get("involvedObject") or {}).get("name") != regarding:
                continue
            result.append(render(resource, obj))
        return result

    def rollout_history(self, namespace: str, name: str) -> list[int]:
        """Revision numbers as `kubectl rollout history` lists them."""
        return sorted(
            int(rs["metadata"]["annotations"][REVISION])
            for rs in self.replicasets(namespace, name)
            if REVISION in rs["metadata"].get("annotations", {})
        )

    def revision_template(self, namespace: str, name: str, revision: int) -> Obj:
        """The pod template of a revision, as `kubectl rollout history --revision=N` shows it."""
        for rs in self.replicasets(namespace, name):
            if rs["metadata"]["annotations"].get(REVISION) == str(revision):
                return rs["spec"]["template"]
        raise KeyError(f"no revision {revision} of {namespace}/{name}")

    # ================================================================ knobs

    def hold_unready(self, namespace: str, name: str) -> None:
        """Pods the Deployment creates from now on stay unready (the rollout cannot finish)."""
        self.controller.unready_deployments[(namespace, name)] = self.controller.tick
        self.store.notify()

    def release_unready(self, namespace: str, name: str) -> None:
        self.controller.unready_deployments.pop((namespace, name), None)
        self.store.notify()

    def hold_version_unready(self, version: str) -> None:
        """Every pod labelled `app.kubernetes.io/version: <version>` is (or turns) unready."""
        self.controller.unready_versions.add(version)
        self.store.notify()

    def release_version(self, version: str) -> None:
        self.controller.unready_versions.discard(version)
        self.store.notify()

    def set_pod_ready(self, namespace: str, name: str, ready: bool) -> None:
        """Flip one pod's readiness (the kubelet applies it on the next tick)."""
        if ready:
            self.controller.unready_pods.discard((namespace, name))
        else:
            self.controller.unready_pods.add((namespace, name))
        self.store.notify()

    def freeze(self, namespace: str, name: str) -> None:
        """The controller ignores this Deployment: observedGeneration stops following."""
        self.controller.frozen.add((namespace, name))

    def unfreeze(self, namespace: str, name: str) -> None:
        self.controller.frozen.discard((namespace, name))
        self.store.notify()

    def require_token(self, token: str | None) -> None:
        """Only `Authorization: Bearer <token>` is accepted from now on (401 otherwise)."""
        self.required_token = token

    def deny(
        self,
        verb: str,
        resource: str,
        namespace: str | None = None,
        *,
        name: str | None = None,
        group: str | None = None,
    ) -> Denial:
        """Take a permission away from `self.user`, as a narrower Role would.

        Matching requests get RBAC's 403 (`... cannot patch resource "deployments" in API
        group "apps" in the namespace "ml-prod"`) and SelfSubjectAccessReviews answer
        `allowed: false`. `resource` is the plural, `deployments/scale` for a subresource;
        `"*"` matches any verb or resource. Seeding methods are not affected.
        """
        denial = Denial(verb, resource, namespace, name, group)
        self.denials.append(denial)
        return denial

    def allow(self, denial: Denial | None = None) -> None:
        """Give back one denied permission (or all of them)."""
        if denial is None:
            self.denials.clear()
        elif denial in self.denials:
            self.denials.remove(denial)

    def admission_policy(
        self,
        policy: str,
        message: str,
        denies: Callable[[Obj], bool],
        *,
        binding: str | None = None,
        resource: str = "deployments",
        operations: tuple[str, ...] = ("UPDATE",),
        namespace: str | None = None,
    ) -> AdmissionPolicy:
        """A ValidatingAdmissionPolicy bound with `validationActions: [Deny]`.

        `denies(obj)` gets the object the write would store (kind and apiVersion included);
        True refuses the write with 422 `... is forbidden: ValidatingAdmissionPolicy
        '<policy>' with binding '<binding>' denied request: <message>`. Operations are
        CREATE and/or UPDATE (a PATCH is an UPDATE); dry runs are refused the same way.
        """
        admission = AdmissionPolicy(
            policy, binding or policy, message, denies, resource, operations, namespace
        )
        self.admission.append(admission)
        return admission

    def remove_admission_policy(self, admission: AdmissionPolicy | None = None) -> None:
        """Unbind one policy (or all of them): enforcement stops at once."""
        if admission is None:
            self.admission.clear()
        elif admission in self.admission:
            self.admission.remove(admission)

    def compact(self) -> None:
        """Forget the change history: a watch from an older resourceVersion gets 410 Expired."""
        self.store.compact()

    def fail(
        self,
        method: str,
        path: str | re.Pattern[str],
        status: int | None = 500,
        *,
        nth: int = 1,
        times: int | None = 1,
        retry_after: int | None = None,
        delay: float = 0.0,
        message: str | None = None,
        user: str = "system:serviceaccount:ml-prod:rollback-receiver",
        after: bool = False,
        drop: bool = False,
    ) -> Fault:
        """Answer matching requests with `status` (or just delay them when status is None).

        `path` is a glob on the request path (`/apis/apps/v1/namespaces/*/deployments/x`) or a
        compiled regex. The fault applies from the `nth` matching request on, `times` times
        (None: for ever). 409/404/403/422 bodies are the API server's own wording.
        `after=True` carries the request out first, then answers with the fault (the change
        lands, its reply is lost or late); `drop=True` closes the connection unanswered.
        """
        fault = Fault(
            method.upper(),
            path,
            status,
            nth,
            times,
            retry_after,
            delay,
            message,
            user,
            after,
            drop,
        )
        self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self.faults.clear()

    def requests_to(
        self, method: str | None = None, path: str | None = None
    ) -> list[RecordedRequest]:
        """Recorded requests filtered by method and path glob."""
        return [
            r
            for r in self.requests
            if (method is None or r.method == method.upper())
            and (path is None or fnmatch.fnmatchcase(r.path, path))
        ]


# ==================================================================== rendering and parsing


def rollout_complete(d: Obj) -> bool:
    """kubectl's rollout-status verdict: observed, updated, no old replicas, all available."""
    status = d.get("status") or {}
    replicas = int(d["spec"].get("replicas", 1))
    return (
        int(status.get("observedGeneration", 0)) >= int(d["metadata"].get("generation", 1))
        and int(status.get("updatedReplicas", 0)) >= replicas
        and int(status.get("replicas", 0)) <= int(status.get("updatedReplicas", 0))
        and int(status.get("availableReplicas", 0)) >= int(status.get("updatedReplicas", 0))
    )


def render(resource: Resource, stored: Obj, *, typed: bool = True) -> Obj:
    """The object as the API answers it: kind/apiVersion first (not in list items)."""
    view = event_view(resource, stored) if resource.key == "events" else stored
    view = copy.deepcopy(view)
    if not typed:
        return view
    return {"kind": resource.kind, "apiVersion": resource.api_version, **view}


def _resource(plural: str, group_version: str | None) -> Resource:
    for resource in RESOURCES:
        if resource.plural == plural and (
            group_version is None or resource.api_version == group_version
        ):
            return resource
    raise KeyError(f"the stand-in does not serve {plural!r} in {group_version!r}")


def _verb(request: web.Request, route: Route) -> str:
    method = request.method
    if method == "GET":
        if route.name:
            return "get"
        return "watch" if request.query.get("watch") in ("true", "1") else "list"
    return {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if route.name else "deletecollection",
    }.get(method, method.lower())


def _bookmark(resource: Resource, rv: int) -> Obj:
    """A BOOKMARK's object: the kind's zero value carrying the resourceVersion (fixture 124)."""
    body: Obj = {
        "kind": resource.kind,
        "apiVersion": resource.api_version,
        "metadata": {"resourceVersion": str(rv)},
    }
    if resource is DEPLOYMENTS:
        body["spec"] = {
            "replicas": 0,
            "selector": None,
            "template": {"metadata": {}, "spec": {"containers": None}},
            "strategy": {},
        }
        body["status"] = {}
    return body


def _scale_view(obj: Obj) -> Obj:
    """autoscaling/v1 Scale of a Deployment or ReplicaSet (fixture 064)."""
    meta = obj["metadata"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        # `spec.replicas` is omitempty in autoscaling/v1, `status.replicas` is not (fixture 116)
        "spec": {"replicas": obj["spec"]["replicas"]} if obj["spec"].get("replicas") else {},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": selector_string(obj["spec"].get("selector")),
        },
    }


def _without_rv(obj: Obj) -> Obj:
    clone = copy.deepcopy(obj)
    clone.get("metadata", {}).pop("resourceVersion", None)
    clone.get("metadata", {}).pop("managedFields", None)
    return clone


def _fields_of(obj: Any) -> Obj:
    if not isinstance(obj, dict):
        return {}
    fields: Obj = {}
    metadata = obj.get("metadata") or {}
    meta_fields = fields_v1({k: v for k, v in metadata.items() if k in ("labels", "annotations")})
    for key in list(meta_fields):
        if meta_fields[key]:
            meta_fields[key] = {".": {}, **meta_fields[key]}
    if meta_fields:
        fields["f:metadata"] = meta_fields
    for key in ("spec", "data"):
        if isinstance(obj.get(key), dict):
            fields[f"f:{key}"] = fields_v1(obj[key])
    return fields


def _parse_body(raw: bytes, content_type: str | None, *, patch: bool) -> Any:
    """JSON (or YAML) as the API server decodes it; anything else is 415."""
    media = (content_type or "application/json").split(";")[0].strip().lower()
    try:
        if media == "application/json" or patch:
            return json.loads(raw or b"null")
        if media == "application/yaml":
            return yaml.safe_load(raw)
    except (ValueError, yaml.YAMLError) as error:
        raise ApiError(
            bad_request(f"the body of the request could not be decoded: {error}")
        ) from error
    raise ApiError(unsupported_media_type(patch=False))


def _parse_for_record(raw: bytes, content_type: str | None) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        pass
    if content_type and "yaml" in content_type:
        with contextlib.suppress(yaml.YAMLError):
            return yaml.safe_load(raw)
    return raw.decode("utf-8", "replace")


def _group_list() -> Obj:
    groups = []
    for group_version in GROUP_VERSIONS:
        if "/" not in group_version:
            continue
        group, version = group_version.split("/")
        entry = {"groupVersion": group_version, "version": version}
        groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def _resource_list(group_version: str, with_api_version: bool = True) -> Obj:
    """APIResourceList for the served resources (fixtures 004-006 shape)."""
    resources: list[Obj] = []
    for resource in GROUP_VERSIONS[group_version]:
        entry: Obj = {
            "name": resource.plural,
            "singularName": resource.singular,
            "namespaced": resource.namespaced,
            "kind": resource.kind,
            "verbs": [v for v in resource.verbs if resource.namespaced or v != "deletecollection"],
        }
        if resource.short_names:
            entry["shortNames"] = list(resource.short_names)
        if resource.categories:
            entry["categories"] = list(resource.categories)
        if resource.storage_hash:  # only stored kinds have one (not the access reviews)
            entry["storageVersionHash"] = resource.storage_hash
        resources.append(entry)
        for sub in resource.subresources:
            sub_entry: Obj = {
                "name": f"{resource.plural}/{sub}",
                "singularName": "",
                "namespaced": resource.namespaced,
            }
            if sub == "scale":
                sub_entry.update({"group": "autoscaling", "version": "v1", "kind": "Scale"})
            else:
                sub_entry["kind"] = resource.kind
            sub_entry["verbs"] = SUBRESOURCE_VERBS[sub]
            resources.append(sub_entry)
    body: Obj = {"kind": "APIResourceList"}
    if with_api_version:
        body["apiVersion"] = "v1"
    body["groupVersion"] = group_version
    body["resources"] = sorted(resources, key=lambda r: r["name"])
    return body


__all__ = [
    "APPLY_PATCH",
    "ApiError",
    "Fault",
    "KubeStandIn",
    "RecordedRequest",
    "render",
    "rollout_complete",
]
