"""deploy/grafana-dashboard.json: queries Prometheus can run, over metrics the receiver exports,
in a dashboard Grafana can load.

- PromQL: every target's expression (Grafana's ``$__*`` and template variables replaced by
  sample values) is handed to the real Prometheus parser, ``promtool check rules``, as a
  recording rule of a generated rule file. A missing promtool fails (Debian's
  ``prometheus`` package), never skips.
- Metrics: every metric an expression selects, found by walking the parsed expression
  (promql-parser, not a regex), is a series the receiver exports: a family registered in
  ``receiver/metrics.py``, or one of ``FEATURE_METRICS`` below (design.md's readiness,
  manual control and confirmation), with the suffix its type gives it.
- Grafana: Grafana's own dashboard JSON schema is not published on PyPI or npm (it lives
  as CUE in grafana/grafana, and as generated JSON Schema only in the repository of the
  Grafana Foundation SDK, not in its packages). The SDK's Python package is published,
  with typed models generated from that schema (pinned to Grafana 11.6 in pyproject.toml),
  and decoding ignores what the schema does not know. So the dashboard is decoded with the
  SDK and encoded again: every key we wrote must survive (a misspelt or unknown key, at
  any depth the schema types, disappears; a wrong container type fails). What the round
  trip cannot see is checked explicitly, because Grafana needs it to lay out and query the
  dashboard: panel types are plugins the schema knows, panel ids are unique, the grid
  positions are whole numbers inside the 24-column grid and never overlap, rows span the
  width, every target has a unique refId and uses the Prometheus data source variable,
  and every variable an expression uses is defined.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from grafana_foundation_sdk.cog import runtime as grafana_runtime
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard
from prometheus_client import CollectorRegistry

from receiver.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana-dashboard.json"

GRID_COLUMNS = 24
DATASOURCE_VARIABLE = "datasource"

# Metric families of design.md's readiness, manual control, drills and confirmation: name
# -> type. Each must match receiver/metrics.py's registration once it is there.
FEATURE_METRICS = {
    "receiver_rollback_ready": "gauge",
    "receiver_model_paused": "gauge",
    "receiver_global_paused": "gauge",
    "receiver_drill_enabled": "gauge",
    "receiver_drill_last_success_timestamp_seconds": "gauge",
    "receiver_drills": "counter",
    "receiver_confirmations": "counter",
    "receiver_received_to_confirmed_seconds": "histogram",
    "receiver_readiness_checks": "counter",
}
# The series a family of each type exposes (prometheus_client; _created is not scraped by
# Prometheus as a sample of its own unless asked for, and dashboards never use it).
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
}

# Grafana's built-in interval variables, replaced by a sample duration before parsing.
GRAFANA_INTERVALS = {"__rate_interval": "4m", "__interval": "1m", "__range": "24h"}
VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _targets() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [
        (panel, target) for panel in _panels(_dashboard()) for target in panel.get("targets", [])
    ]


def _variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def _substitute(expr: str) -> str:
    """The expression as Grafana sends it: interval variables as durations, others as values."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return GRAFANA_INTERVALS.get(name, "ml-prod")

    return VARIABLE.sub(value, expr)


def _exported_series() -> dict[str, str]:
    """Series name -> family type, for every family the receiver registers or announces."""
    families = {
        family.name: family.type for family in Metrics(CollectorRegistry()).registry.collect()
    }
    for name, kind in FEATURE_METRICS.items():
        families.setdefault(name, kind)
    return {name + suffix: kind for name, kind in families.items() for suffix in SUFFIXES[kind]}


def _selected_metrics(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"select metrics by name, not by matchers only: {expr}"
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(_substitute(expr)), pre_visit=visit)
    return names


def _label_values_selector(query: str) -> str:
    """The series selector inside a `label_values(selector, label)` variable query."""
    match = re.fullmatch(r"label_values\((.+),\s*\w+\)", query.strip())
    assert match, f"variable query is not label_values(selector, label): {query}"
    return match.group(1)


def _target_id(item: tuple[dict[str, Any], dict[str, Any]]) -> str:
    panel, target = item
    return f"{panel['title']}/{target['refId']}"


# --------------------------------------------------------------------------- PromQL


def test_every_expression_parses_with_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool not found on PATH: install Debian's prometheus package", pytrace=False
        )
    rules = []
    names = {}
    for panel, target in _targets():
        record = f"dashboard:panel_{panel['id']}_{target['refId']}:expr"
        names[record] = f"{panel['title']} ({target['refId']})"
        rules.append({"record": record, "expr": _substitute(target["expr"])})
    for name, variable in _variables(_dashboard()).items():
        if variable["type"] == "query":
            record = f"dashboard:variable_{name}:selector"
            names[record] = f"variable {name}"
            rules.append(
                {"record": record, "expr": _label_values_selector(variable["query"]["query"])}
            )
    assert len(rules) > 20
    rule_file = tmp_path / "dashboard.rules.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(rule_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\nrecords: {names}"


@pytest.mark.parametrize("item", _targets(), ids=_target_id)
def test_every_metric_queried_is_one_the_receiver_exports(item) -> None:
    _, target = item
    exported = _exported_series()
    selected = _selected_metrics(target["expr"])
    assert selected, f"selects no metric: {target['expr']}"
    assert selected <= exported.keys(), (
        f"not exported by the receiver: {selected - exported.keys()}"
    )


def test_the_variable_query_selects_an_exported_metric() -> None:
    exported = _exported_series()
    for variable in _variables(_dashboard()).values():
        if variable["type"] == "query":
            selector = _label_values_selector(variable["query"]["query"])
            assert _selected_metrics(selector) <= exported.keys(), variable["name"]


def test_feature_metrics_match_their_registration_in_metrics_py() -> None:
    registered = {
        family.name: family.type for family in Metrics(CollectorRegistry()).registry.collect()
    }
    mismatched = {
        name: (kind, registered[name])
        for name, kind in FEATURE_METRICS.items()
        if name in registered and registered[name] != kind
    }
    assert not mismatched, f"expected type, registered type: {mismatched}"


def test_the_dashboard_covers_what_operators_watch() -> None:
    """Rollbacks, recovery times, alerts, readiness, pauses, drills, queue, notifications."""
    used = set()
    for _, target in _targets():
        used |= _selected_metrics(target["expr"])
    assert {
        "receiver_incident_transitions_total",
        "receiver_rollbacks_total",
        "receiver_received_to_switched_seconds_bucket",
        "receiver_received_to_healthy_seconds_bucket",
        "receiver_received_to_confirmed_seconds_bucket",
        "receiver_alerts_total",
        "receiver_rollback_ready",
        "receiver_model_paused",
        "receiver_global_paused",
        "receiver_drill_enabled",
        "receiver_drill_last_success_timestamp_seconds",
        "receiver_drills_total",
        "receiver_queue_depth",
        "receiver_queue_lag_seconds",
        "receiver_notifications_total",
    } <= used
    quantiles = [t["expr"] for _, t in _targets() if "histogram_quantile" in t["expr"]]
    for phase in ("switched", "healthy", "confirmed"):
        for q in ("0.5", "0.9"):
            assert any(
                f"histogram_quantile({q}," in e and f"received_to_{phase}_seconds" in e
                for e in quantiles
            ), f"p{q} of received to {phase}"


def test_every_expression_reads_the_receivers_job() -> None:
    for panel, target in _targets():
        for node_filter in re.findall(r"receiver_\w+(\{[^}]*\})?", target["expr"]):
            assert 'job="rollback-receiver"' in node_filter, (panel["title"], target["expr"])


# -------------------------------------------------------------------------- Grafana


def _dropped(written: Any, decoded: Any, path: str = "$") -> list[str]:
    """Keys and values written that did not survive the schema round trip."""
    if isinstance(written, dict):
        if not isinstance(decoded, dict):
            return [f"{path}: object decoded as {type(decoded).__name__}"]
        return [
            problem
            for key, value in written.items()
            for problem in (
                _dropped(value, decoded[key], f"{path}.{key}")
                if key in decoded
                else [f"{path}.{key}: not in Grafana's dashboard schema"]
            )
        ]
    if isinstance(written, list):
        if not isinstance(decoded, list) or len(decoded) != len(written):
            return [f"{path}: list decoded differently"]
        return [
            problem
            for index, (a, b) in enumerate(zip(written, decoded, strict=True))
            for problem in _dropped(a, b, f"{path}[{index}]")
        ]
    return [] if written == decoded else [f"{path}: {written!r} decoded as {decoded!r}"]


@pytest.fixture(scope="module")
def grafana_plugins() -> set[str]:
    register_default_plugins()
    return set(grafana_runtime.Runtime().panelcfg_variants) | {"row"}


def test_the_dashboard_survives_grafanas_schema_round_trip(grafana_plugins) -> None:
    written = _dashboard()
    decoded = json.loads(json.dumps(Dashboard.from_json(written), cls=JSONEncoder))
    assert _dropped(written, decoded) == []


def test_dashboard_identity_and_settings() -> None:
    dashboard = _dashboard()
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"])
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    # Incident timelines are read in UTC (design.md, status page).
    assert dashboard["timezone"] == "utc"
    assert "id" not in dashboard or dashboard["id"] is None, "an id belongs to one Grafana"


def test_panels_are_known_plugins_with_unique_ids(grafana_plugins) -> None:
    panels = list(_panels(_dashboard()))
    ids = [p["id"] for p in panels]
    assert all(isinstance(i, int) and i > 0 for i in ids)
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert {p["type"] for p in panels} <= grafana_plugins
    assert all(p.get("title") for p in panels)


def test_panels_fit_the_grid_without_overlapping() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in _dashboard()["panels"]:
        pos = panel["gridPos"]
        assert all(isinstance(pos[k], int) for k in "hwxy"), panel["title"]
        assert pos["h"] > 0 and pos["w"] > 0 and pos["x"] >= 0 and pos["y"] >= 0
        assert pos["x"] + pos["w"] <= GRID_COLUMNS, f"{panel['title']} is wider than the grid"
        if panel["type"] == "row":
            assert (pos["x"], pos["w"], pos["h"]) == (0, GRID_COLUMNS, 1), panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_targets_use_the_prometheus_variable_and_unique_ref_ids() -> None:
    dashboard = _dashboard()
    variables = _variables(dashboard)
    assert variables[DATASOURCE_VARIABLE]["type"] == "datasource"
    assert variables[DATASOURCE_VARIABLE]["query"] == "prometheus"
    source = {"type": "prometheus", "uid": f"${{{DATASOURCE_VARIABLE}}}"}
    for panel in _panels(dashboard):
        targets = panel.get("targets", [])
        if panel["type"] == "row":
            assert not targets
            continue
        assert targets, f"{panel['title']} has no query"
        assert panel["datasource"] == source, panel["title"]
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in targets:
            assert target["datasource"] == source, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_every_variable_used_is_defined() -> None:
    dashboard = _dashboard()
    defined = set(_variables(dashboard)) | set(GRAFANA_INTERVALS)
    for variable in _variables(dashboard).values():
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == f"${{{DATASOURCE_VARIABLE}}}"
    for panel, target in _targets():
        used = {a or b for a, b in VARIABLE.findall(target["expr"])}
        assert used <= defined, f"{panel['title']}: undefined {used - defined}"
