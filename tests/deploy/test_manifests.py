"""The shipped deploy/ manifests and Dockerfile, checked statically.

The kustomize base is rendered with the real ``kubectl kustomize``; every rendered object is
validated against the Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown
fields fail) and then held to design.md: least-privilege RBAC, non-root and read-only
containers, the probes, the settings names, Redis with AOF, the policy ConfigMap.
No cluster and no Docker engine are needed.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
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

# Kubernetes version whose OpenAPI schemas the objects must satisfy: the oldest we support,
# the same minor as the kubectl used to render them.
K8S_SCHEMA_VERSION = "1.32"

NAMESPACE = "rollback-receiver"
APP = "rollback-receiver"
REDIS = "rollback-receiver-redis"
SECRET = "rollback-receiver"
POLICY_PATH = "/etc/rollback-receiver/policy.yaml"

# design.md, "Public surface": the settings read from the environment.
DESIGN_SETTINGS = frozenset(
    {
        "RECEIVER_HOST",
        "RECEIVER_PORT",
        "RECEIVER_WEBHOOK_TOKEN",
        "RECEIVER_ADMIN_TOKEN",
        "RECEIVER_REDIS_URL",
        "RECEIVER_POLICY_FILE",
        "RECEIVER_PROMETHEUS_URL",
        "RECEIVER_DEDUP_TTL",
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

# design.md, "Security": (API group, resource) -> verbs. Nothing else, nowhere else.
EXPECTED_RBAC: dict[tuple[str, str], frozenset[str]] = {
    ("apps", "deployments"): frozenset({"get", "list", "watch", "patch"}),
    ("apps", "replicasets"): frozenset({"get", "list", "patch"}),
    ("", "services"): frozenset({"get", "patch"}),
    ("apps", "deployments/scale"): frozenset({"patch"}),
    ("", "pods"): frozenset({"list"}),
    ("events.k8s.io", "events"): frozenset({"create"}),
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


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail(
            "kubectl is not on PATH: these tests render deploy/ with `kubectl kustomize`. "
            "Install kubectl (tested with v1.32, which embeds kustomize v5.5), e.g. from "
            "https://dl.k8s.io/release/v1.32.4/bin/linux/amd64/kubectl, and run again.",
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
        pytest.fail(f"kubectl kustomize deploy/ failed:\n{proc.stderr}", pytrace=False)
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


def _containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
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
    cluster_scoped = {"Namespace"}
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


def _grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in role.get("rules", []):
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


@pytest.fixture(scope="module")
def roles(rendered) -> list[dict[str, Any]]:
    found = _all(rendered, "Role")
    assert found, "no Role rendered"
    return found


@pytest.mark.parametrize(
    ("group", "resource", "verbs"),
    [(g, r, v) for (g, r), v in EXPECTED_RBAC.items()],
    ids=[f"{g or 'core'}/{r}" for g, r in EXPECTED_RBAC],
)
def test_role_grants_exactly_the_designed_verbs(roles, group, resource, verbs):
    for role in roles:
        granted = _grants(role).get((group, resource), set())
        assert granted == set(verbs), (
            f"Role {role['metadata']['namespace']}/{role['metadata']['name']}: "
            f"{group or 'core'}/{resource} grants {sorted(granted)}, design says {sorted(verbs)}"
        )


def test_role_grants_nothing_else(roles):
    for role in roles:
        extra = set(_grants(role)) - set(EXPECTED_RBAC)
        assert not extra, f"Role {role['metadata']['namespace']}: unexpected grants {extra}"
        for verbs in _grants(role).values():
            assert "*" not in verbs


def test_no_cluster_wide_permissions(rendered):
    assert not _all(rendered, "ClusterRole")
    assert not _all(rendered, "ClusterRoleBinding")
    assert all(r["metadata"]["namespace"] != NAMESPACE for r in _all(rendered, "Role")), (
        "the receiver needs no permissions in its own namespace"
    )


def test_each_role_is_bound_to_the_receiver_service_account(rendered, roles, receiver):
    sa = receiver["spec"]["template"]["spec"]["serviceAccountName"]
    assert _one(rendered, "ServiceAccount", sa)
    bindings = _all(rendered, "RoleBinding")
    for role in roles:
        ns, name = role["metadata"]["namespace"], role["metadata"]["name"]
        bound = [
            b
            for b in bindings
            if b["metadata"]["namespace"] == ns
            and b["roleRef"]
            == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
        ]
        assert len(bound) == 1, f"Role {ns}/{name} needs exactly one RoleBinding"
        assert bound[0]["subjects"] == [
            {"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}
        ]
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role", "bind Roles only, never a ClusterRole"


def test_roles_cover_exactly_the_namespaces_of_the_policy(roles):
    policy = yaml.safe_load((DEPLOY / "policy.yaml").read_text())
    policy_namespaces = {m["namespace"] for m in policy["models"]}
    role_namespaces = {r["metadata"]["namespace"] for r in roles}
    assert role_namespaces == policy_namespaces


# ------------------------------------------------------------------- workload security

WORKLOADS = [("Deployment", APP), ("StatefulSet", REDIS)]


def _effective(pod: dict[str, Any], container: dict[str, Any], key: str) -> Any:
    """A container securityContext setting, falling back to the pod's."""
    value = container.get("securityContext", {}).get(key)
    return pod.get("securityContext", {}).get(key) if value is None else value


@pytest.mark.parametrize(("kind", "name"), WORKLOADS)
def test_workload_runs_non_root_and_locked_down(rendered, kind, name):
    workload = _one(rendered, kind, name)
    pod = workload["spec"]["template"]["spec"]
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


@pytest.mark.parametrize(("kind", "name"), WORKLOADS)
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
