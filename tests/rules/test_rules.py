"""CI for the alert rules and the Alertmanager config: the real promtool and amtool.

Runs ``promtool check rules`` and ``promtool test rules`` on alert_rules/, ``amtool
check-config`` on deploy/alertmanager.yml, and checks what neither tool knows about:
the alert label contract of design.md, runbooks for every runbook_url, a promtool test
for every alert in every tier, and deploy/prometheusrule.yaml in sync with the rule
files. A missing binary fails (never skips): CI must install Debian's ``prometheus``
and ``prometheus-alertmanager`` packages.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from alert_rules import build_prometheusrule

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = REPO_ROOT / "alert_rules"
RULE_FILES = sorted(RULES_DIR.glob("*.rules.yaml"))
TEST_FILES = sorted((RULES_DIR / "tests").glob("*_test.yaml"))
RUNBOOKS_DIR = RULES_DIR / "runbooks"
ALERTMANAGER_CONFIG = REPO_ROOT / "deploy" / "alertmanager.yml"
PROMETHEUSRULE = REPO_ROOT / "deploy" / "prometheusrule.yaml"

RUNBOOK_BASE_URL = "https://runbooks.example.internal/rollback-receiver/"
RUNBOOK_SECTIONS = ("Meaning", "Impact", "Diagnosis", "Mitigation", "Automated remediation")

TRIGGER_CATEGORY = {
    "accuracy_slo": "accuracy",
    "error_rate": "operational",
    "latency_p99": "operational",
    "oom": "operational",
    "feature_drift": "data_quality",
    "missing_features": "data_quality",
}
TIERS = {"critical", "experimental"}
SEVERITIES = {"critical", "warning", "info"}
ROLLBACK_LABELS = {"remediation", "category", "trigger", "tier", "severity"}
# The series labels of the contract: they must come from the series, never the rule.
SERIES_LABELS = {"namespace", "model", "model_version"}

RECORD_NAME = re.compile(r"^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*:[a-z0-9_]+$")
ALERT_NAME = re.compile(r"^(?:[A-Z][a-z0-9]*|SLO|OOM)+$")
TIMEOUT_SECONDS = 120

MISSING_BINARY = (
    "{name} not found on PATH: install Debian's prometheus and prometheus-alertmanager "
    "packages (apt-get install prometheus prometheus-alertmanager)"
)


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(MISSING_BINARY.format(name=name), pytrace=False)
    return path


def _run(args: list[str], cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False
    )


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _rules() -> list[tuple[str, dict[str, Any]]]:
    """(group name, rule) for every rule of every rule file."""
    return [
        (group["name"], rule)
        for path in RULE_FILES
        for group in _load(path)["groups"]
        for rule in group["rules"]
    ]


def _alerts() -> list[tuple[str, dict[str, Any]]]:
    return [(group, rule) for group, rule in _rules() if "alert" in rule]


def _rollback_alerts() -> list[dict[str, Any]]:
    return [
        rule for _, rule in _alerts() if rule.get("labels", {}).get("remediation") == "rollback"
    ]


def _alert_id(rule: dict[str, Any]) -> str:
    tier = rule.get("labels", {}).get("tier")
    return f"{rule['alert']}[{tier}]" if tier else rule["alert"]


# ------------------------------------------------------------------------ the tools


def test_promtool_check_rules_passes_with_lint_fatal() -> None:
    promtool = _binary("promtool")
    result = _run([promtool, "check", "rules", "--lint=all", "--lint-fatal", *map(str, RULE_FILES)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda path: path.name)
def test_promtool_unit_tests_pass(test_file: Path) -> None:
    promtool = _binary("promtool")
    result = _run([promtool, "test", "rules", test_file.name], cwd=test_file.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_amtool_check_config_passes() -> None:
    amtool = _binary("amtool")
    result = _run([amtool, "check-config", str(ALERTMANAGER_CONFIG)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (
            [
                "alertname=ModelServingHighErrorRate",
                "remediation=rollback",
                "namespace=ml-prod",
                "model=fraud-scorer",
            ],
            "rollback-receiver,oncall",
        ),
        (["alertname=RollbackReceiverDown", "severity=critical"], "oncall"),
        (["alertname=RollbackReceiverWatchdog", "severity=info"], "watchdog"),
    ],
    ids=["rollback-alert-reaches-webhook-and-people", "meta-alert-reaches-people", "watchdog"],
)
def test_alertmanager_routes_alerts_to_the_expected_receivers(
    labels: list[str], receivers: str
) -> None:
    amtool = _binary("amtool")
    result = _run(
        [amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", *labels]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receivers


def test_alertmanager_rollback_route_matches_the_design() -> None:
    config = _load(ALERTMANAGER_CONFIG)
    routes = [
        r for r in config["route"]["routes"] if 'remediation="rollback"' in r.get("matchers", [])
    ]
    assert len(routes) == 1
    route = routes[0]
    assert route["group_by"] == ["namespace", "model"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == (
        "10s",
        "1m",
        "15m",
    )
    assert route["continue"] is True
    (receiver,) = [r for r in config["receivers"] if r["name"] == route["receiver"]]
    (webhook,) = receiver["webhook_configs"]
    assert (
        webhook["url"] == "http://rollback-receiver.rollback-receiver.svc:8080/webhook/alertmanager"
    )
    assert webhook["send_resolved"] is True
    assert webhook["http_config"]["authorization"]["credentials_file"]
    # People are still paged: a later sibling route catches what the rollback route sends on.
    later = config["route"]["routes"][config["route"]["routes"].index(route) + 1 :]
    assert any(not r.get("matchers") for r in later)


# ------------------------------------------------------------------- the contract


def test_recording_rules_are_named_level_metric_operations() -> None:
    records = [rule["record"] for _, rule in _rules() if "record" in rule]
    assert records
    assert [name for name in records if not RECORD_NAME.match(name)] == []


def test_alert_names_are_camel_case() -> None:
    assert [rule["alert"] for _, rule in _alerts() if not ALERT_NAME.match(rule["alert"])] == []


@pytest.mark.parametrize("rule", _rollback_alerts(), ids=_alert_id)
def test_rollback_alerts_carry_the_label_contract(rule: dict[str, Any]) -> None:
    labels = rule["labels"]
    assert labels.keys() >= ROLLBACK_LABELS
    assert labels["trigger"] in TRIGGER_CATEGORY
    assert labels["category"] == TRIGGER_CATEGORY[labels["trigger"]]
    assert labels["tier"] in TIERS
    assert labels["severity"] in SEVERITIES
    # namespace, model and model_version come from the series, through the aggregation.
    assert not SERIES_LABELS & labels.keys()
    assert "by (namespace, model, model_version" in rule["expr"] or (
        "namespace_model_version:" in rule["expr"]
    )
    assert "{{" in rule["annotations"]["description"]
    assert "$labels.model_version" in rule["annotations"]["description"]


@pytest.mark.parametrize("rule", [rule for _, rule in _alerts()], ids=_alert_id)
def test_every_alert_has_static_labels_and_summary_and_a_runbook(rule: dict[str, Any]) -> None:
    labels = rule.get("labels", {})
    annotations = rule.get("annotations", {})
    assert labels.get("severity") in SEVERITIES
    # Labels are the alert's identity: never templated, never $value.
    assert [
        key for key, value in labels.items() if "{{" in str(value) or "$value" in str(value)
    ] == []
    assert annotations.get("summary")
    assert "{{" not in annotations["summary"]
    assert annotations.get("description")
    assert annotations.get("runbook_url") == RUNBOOK_BASE_URL + rule["alert"].lower()


def test_both_tiers_exist_for_every_trigger() -> None:
    pairs = {(rule["labels"]["trigger"], rule["labels"]["tier"]) for rule in _rollback_alerts()}
    assert pairs == {(trigger, tier) for trigger in TRIGGER_CATEGORY for tier in TIERS}


def test_meta_alerts_never_opt_into_rollback() -> None:
    meta = [rule for group, rule in _alerts() if group.startswith("rollback-receiver.")]
    assert {rule["alert"] for rule in meta} >= {
        "RollbackReceiverDown",
        "RollbackReceiverNotReady",
        "RollbackReceiverRollbacksFailing",
        "RollbackReceiverQueueLagHigh",
        "RollbackReceiverNotificationsLost",
        "RollbackReceiverConfirmationsFailing",
        "RollbackReceiverWatchdog",
        "ModelRollbackNotReady",
        "ModelRollbackDrillOverdue",
    }
    assert [rule["alert"] for rule in meta if "remediation" in rule.get("labels", {})] == []


def test_per_model_meta_alerts_take_namespace_and_model_from_the_series() -> None:
    per_model = [rule for _, rule in _alerts() if rule["alert"].startswith("ModelRollback")]
    assert {rule["alert"] for rule in per_model} == {
        "ModelRollbackNotReady",
        "ModelRollbackDrillOverdue",
    }
    for rule in per_model:
        # One alert per model whatever the number of replicas exporting the series.
        assert "by (namespace, model)" in rule["expr"], rule["alert"]
        assert not {"namespace", "model"} & rule["labels"].keys(), rule["alert"]
        assert "$labels.model" in rule["annotations"]["description"], rule["alert"]


def test_every_alert_and_tier_is_seen_firing_in_a_promtool_test() -> None:
    fired: set[str] = set()
    for path in TEST_FILES:
        for case in _load(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                for alert in check.get("exp_alerts", []):
                    tier = alert["exp_labels"].get("tier")
                    fired.add(f"{check['alertname']}[{tier}]" if tier else check["alertname"])
                    assert {"summary", "description", "runbook_url"} <= alert.get(
                        "exp_annotations", {}
                    ).keys(), f"{path.name}: {case['name']}: incomplete exp_annotations"
    expected = {_alert_id(rule) for _, rule in _alerts()}
    assert expected - fired == set()


def test_every_rule_file_holds_one_group() -> None:
    # One group per file: the README's table and the end-to-end stack count groups by file.
    assert [path.name for path in RULE_FILES if len(_load(path)["groups"]) != 1] == []


def test_every_rule_file_has_a_test_file() -> None:
    tested = {
        (path.parent / rule_file).resolve()
        for path in TEST_FILES
        for rule_file in _load(path)["rule_files"]
    }
    assert [path.name for path in RULE_FILES if path.resolve() not in tested] == []


# ---------------------------------------------------------------------- runbooks


def test_every_runbook_url_has_a_runbook_with_all_sections() -> None:
    for _, rule in _alerts():
        slug = rule["annotations"]["runbook_url"].removeprefix(RUNBOOK_BASE_URL)
        runbook = RUNBOOKS_DIR / f"{slug}.md"
        assert runbook.is_file(), f"{rule['alert']}: missing {runbook.relative_to(REPO_ROOT)}"
        headings = re.findall(r"^## (.+)$", runbook.read_text(encoding="utf-8"), re.MULTILINE)
        assert [s for s in RUNBOOK_SECTIONS if s not in headings] == [], runbook.name


def test_every_runbook_belongs_to_an_alert() -> None:
    slugs = {rule["alert"].lower() for _, rule in _alerts()}
    assert [p.name for p in RUNBOOKS_DIR.glob("*.md") if p.stem not in slugs] == []


# ------------------------------------------------------------- PrometheusRule sync


def test_prometheusrule_is_up_to_date_with_the_rule_files() -> None:
    assert PROMETHEUSRULE.read_text(encoding="utf-8") == build_prometheusrule.render(), (
        "deploy/prometheusrule.yaml is out of date: run python alert_rules/build_prometheusrule.py"
    )


def test_prometheusrule_wraps_exactly_the_rule_groups() -> None:
    manifest = _load(PROMETHEUSRULE)
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
    assert manifest["kind"] == "PrometheusRule"
    assert manifest["metadata"]["namespace"] == "rollback-receiver"
    assert {"app.kubernetes.io/name", "app.kubernetes.io/part-of", "prometheus", "role"} <= (
        manifest["metadata"]["labels"].keys()
    )
    groups = [group for path in RULE_FILES for group in _load(path)["groups"]]
    assert manifest["spec"]["groups"] == groups


def test_prometheusrule_groups_pass_promtool(tmp_path: Path) -> None:
    promtool = _binary("promtool")
    extracted = tmp_path / "prometheusrule.rules.yaml"
    extracted.write_text(yaml.safe_dump({"groups": _load(PROMETHEUSRULE)["spec"]["groups"]}))
    result = _run([promtool, "check", "rules", str(extracted)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_mode_reports_a_stale_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = tmp_path / "prometheusrule.yaml"
    stale.write_text("# stale\n", encoding="utf-8")
    monkeypatch.setattr(build_prometheusrule, "OUTPUT", stale)
    monkeypatch.setattr(build_prometheusrule, "REPO_ROOT", tmp_path)
    assert build_prometheusrule.main(["--check"]) == 1
    assert build_prometheusrule.main([]) == 0
    assert build_prometheusrule.main(["--check"]) == 0
