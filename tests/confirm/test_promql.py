"""promql: an alert's expression restricted to one version, on its syntax tree.

Every expression written here is also read back by the real Prometheus
(``/api/v1/format_query``): what we write must mean to Prometheus what the input meant.
"""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import promql_parser as pp
import pytest

from receiver.errors import PermanentError
from receiver.verify.promql import (
    MAX_RECORDING_DEPTH,
    MODEL_VERSION_LABEL,
    ConfirmationError,
    extract_expr,
    parse,
    presence_query,
    range_window_seconds,
    render,
    restrict,
    restrict_to_version,
)
from tests.confirm.prometheus import PrometheusServer, shipped_rules
from tests.conftest import AM_FIXTURES

MODEL = {"namespace": "ml-prod", "model": "fraud-scorer"}
SHORT = {"namespace": "ns", "model": "m"}
V = "v2"


RULES = shipped_rules()
ALERTS = [r for r in RULES if "alert" in r]
MODEL_ALERTS = [r for r in ALERTS if r.get("labels", {}).get("remediation") == "rollback"]
META_ALERTS = [r for r in ALERTS if r.get("labels", {}).get("remediation") != "rollback"]


def rule_id(rule: dict[str, Any]) -> str:
    name = rule.get("alert") or rule.get("record")
    return f"{name}[{rule.get('labels', {}).get('tier', '-')}]"


def prometheus_format(server: PrometheusServer, expr: str) -> str:
    """Prometheus's own reading of ``expr``, written back by it; the test fails if it rejects."""
    url = f"{server.url}/api/v1/format_query?{urllib.parse.urlencode({'query': expr})}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())["data"]
    except urllib.error.HTTPError as e:
        pytest.fail(f"Prometheus rejects {expr!r}: {e.read().decode()}")


def selectors(expr: str) -> list[tuple[str | None, list[tuple[str, str, str]]]]:
    """(name, [(label, op, value)]) of every selector, as the parser reads ``expr``."""
    found: list[tuple[str | None, list[tuple[str, str, str]]]] = []
    ops = {"=": pp.MatchOp.Equal, "!=": pp.MatchOp.NotEqual, "=~": pp.MatchOp.Re}

    def visit(node: Any) -> None:
        if isinstance(node, pp.VectorSelector):
            matchers = []
            for m in node.matchers.matchers:
                op = next((k for k, v in ops.items() if m.op == v), "!~")
                matchers.append((m.name, op, m.value))
            found.append((node.name, matchers))

    pp.walk(pp.parse(expr), pre_visit=visit)
    return found


def version_matchers(matchers: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    return [m for m in matchers if m[0] == MODEL_VERSION_LABEL]


# --- every shipped alert -----------------------------------------------------------------


@pytest.mark.parametrize("rule", MODEL_ALERTS, ids=rule_id)
def test_every_model_alert_is_restricted_on_each_per_version_selector(
    rule: dict[str, Any], prometheus: PrometheusServer
) -> None:
    restricted = restrict(rule["expr"], V, MODEL)

    original = selectors(rule["expr"])
    result = selectors(restricted.query)
    assert [name for name, _ in result] == [name for name, _ in original]
    per_version = 0
    for (name, before), (_, after) in zip(original, result, strict=True):
        assert name is not None
        if "model_version" in name.split(":", 1)[0]:
            per_version += 1
            assert version_matchers(after) == [(MODEL_VERSION_LABEL, "=", V)], name
            assert ("namespace", "=", "ml-prod") in after and (
                "model",
                "=",
                "fraud-scorer",
            ) in after
            assert [m for m in after if m[0] not in (*MODEL, MODEL_VERSION_LABEL)] == before
        else:
            # namespace_model:..., tier:...: no model_version label, left as written.
            assert after == before, name
    assert per_version >= 1
    assert len(restricted.selectors) >= 1

    formatted = prometheus_format(prometheus, restricted.query)
    assert 'model_version="v2"' in formatted
    for check in restricted.data_checks:
        prometheus_format(prometheus, check)
    prometheus_format(prometheus, presence_query(restricted.data_checks))


@pytest.mark.parametrize("rule", MODEL_ALERTS, ids=rule_id)
def test_every_model_alert_checks_its_traffic_guard_for_data(rule: dict[str, Any]) -> None:
    restricted = restrict(rule["expr"], V, MODEL)

    guards = [c for c in restricted.data_checks if " >= " in c]
    # Every rate-based alert is joined with its guard (alert_rules/README.md); the OOM
    # alerts count events, with no guard.
    if rule["labels"]["trigger"] == "oom":
        assert guards == []
    else:
        assert len(guards) == 1
        assert (
            guards[0].startswith("(namespace_model_version") and 'model_version="v2"' in guards[0]
        )


@pytest.mark.parametrize("rule", META_ALERTS, ids=rule_id)
def test_meta_alerts_read_no_model_series_so_cannot_be_restricted(rule: dict[str, Any]) -> None:
    with pytest.raises(ConfirmationError, match="reads per-version series of the model"):
        restrict(rule["expr"], V, MODEL)


@pytest.mark.parametrize("rule", RULES, ids=rule_id)
def test_every_shipped_expression_is_written_back_as_prometheus_reads_it(
    rule: dict[str, Any], prometheus: PrometheusServer
) -> None:
    ours = render(parse(rule["expr"]))

    assert prometheus_format(prometheus, ours) == prometheus_format(prometheus, rule["expr"])


# --- hand-made cases ---------------------------------------------------------------------

CASES = [
    pytest.param(
        'rate(errors_total{model="m"}[5m] offset 1h)',
        'rate(errors_total{model="m", namespace="ns", model_version="v2"}[5m] offset 1h)',
        id="offset",
    ),
    pytest.param(
        'errors_total{model="m"} offset -5m',
        'errors_total{model="m", namespace="ns", model_version="v2"} offset -5m',
        id="negative offset",
    ),
    pytest.param(
        'errors_total{model="m"} @ 1700000000',
        'errors_total{model="m", namespace="ns", model_version="v2"} @ 1700000000.000',
        id="at timestamp",
    ),
    pytest.param(
        'rate(errors_total{model="m"}[5m] @ end() offset 10m)',
        'rate(errors_total{model="m", namespace="ns", model_version="v2"}[5m] @ end() offset 10m)',
        id="at end and offset",
    ),
    pytest.param(
        'max_over_time(rate(errors_total{model="m"}[5m])[30m:1m] offset 5m)',
        'max_over_time(rate(errors_total{model="m", namespace="ns", model_version="v2"}[5m])'
        "[30m:1m] offset 5m)",
        id="subquery",
    ),
    pytest.param(
        'min_over_time(errors_total{model="m"}[10m:] @ start())',
        'min_over_time(errors_total{model="m", namespace="ns", model_version="v2"}[10m:]'
        " @ start())",
        id="subquery without step",
    ),
    pytest.param(
        'errors_total{model="m"} / on (namespace, model) group_left (tier) slo_ratio',
        'errors_total{model="m", namespace="ns", model_version="v2"} / on (namespace, model) '
        "group_left (tier) slo_ratio",
        id="on and group_left; a series without model labels is left alone",
    ),
    pytest.param(
        'errors_total{model="m"} / ignoring (outcome) group_right () requests_total{model="m"}',
        'errors_total{model="m", namespace="ns", model_version="v2"} / ignoring (outcome) '
        'group_right () requests_total{model="m", namespace="ns", model_version="v2"}',
        id="ignoring and group_right",
    ),
    pytest.param(
        'errors_total{model="m"} > bool on () vector(0)',
        'errors_total{model="m", namespace="ns", model_version="v2"} > bool on () vector(0)',
        id="bool and empty on",
    ),
    pytest.param(
        "sum by (namespace, model, model_version) (rate(model_predictions_total"
        '{outcome="error"}[5m])) / sum without (pod, instance) (rate(model_predictions_total[5m]))'
        " > 0.05",
        "sum by (namespace, model, model_version) (rate(model_predictions_total"
        '{outcome="error", namespace="ns", model="m", model_version="v2"}[5m])) / '
        "sum without (pod, instance) (rate(model_predictions_total"
        '{namespace="ns", model="m", model_version="v2"}[5m])) > 0.05',
        id="aggregations over contract series without any matcher",
    ),
    pytest.param(
        'topk(3, errors_total{model="m"}) and count_values("v", build_info{model="m"})'
        ' and quantile(0.9, latency_seconds{namespace="ns"})',
        'topk(3, errors_total{model="m", namespace="ns", model_version="v2"}) and '
        'count_values("v", build_info{model="m", namespace="ns", model_version="v2"}) and '
        'quantile(0.9, latency_seconds{namespace="ns", model="m", model_version="v2"})',
        id="aggregations with a parameter",
    ),
    pytest.param(
        'absent(up{model="m"} == 1)',
        'absent(up{model="m", namespace="ns", model_version="v2"} == 1)',
        id="absent",
    ),
    pytest.param(
        'errors_total{model="m", path="a\\"b\\\\c\\nd"}',
        'errors_total{model="m", path="a\\"b\\\\c\\nd", namespace="ns", model_version="v2"}',
        id="label values with quotes, backslashes and newlines stay escaped",
    ),
    pytest.param(
        'errors_total{model="m", route=~"/api/v\\\\d+", code!~"2.."}',
        'errors_total{model="m", route=~"/api/v\\\\d+", code!~"2..", namespace="ns", '
        'model_version="v2"}',
        id="regex with a backslash",
    ),
    pytest.param(
        'errors_total{model_version="v3", model="m"} - errors_total{model_version=~"v.*",'
        ' namespace="ns", model_version!="v1"}',
        'errors_total{model="m", namespace="ns", model_version="v2"} - '
        'errors_total{namespace="ns", model="m", model_version="v2"}',
        id="existing model_version matchers are replaced by one",
    ),
    pytest.param(
        "namespace_model_version:errors:ratio_rate5m > 0.05 and on (namespace, model) "
        'namespace_model:model_tier:info{tier="critical"} and on (namespace, model) tier:slo:ratio',
        'namespace_model_version:errors:ratio_rate5m{namespace="ns", model="m", model_version="v2"}'
        ' > 0.05 and on (namespace, model) namespace_model:model_tier:info{tier="critical"} '
        "and on (namespace, model) tier:slo:ratio",
        id="recording rules: only a level naming model_version is restricted",
    ),
    pytest.param(
        'errors_total{model="m"} and on (namespace, model) model_info{model="m", tier="critical"}',
        'errors_total{model="m", namespace="ns", model_version="v2"} and on (namespace, model) '
        'model_info{model="m", tier="critical"}',
        id="per-model contract series are left alone",
    ),
    pytest.param(
        '{__name__=~"errors_.*", model=~"m|n"}',
        '{__name__=~"errors_.*", model=~"m|n", namespace="ns", model="m", model_version="v2"}',
        id="selector without a metric name",
    ),
    pytest.param(
        'label_replace(-errors_total{model="m"} * 1e-3, "dst", "$1", "src", "(.+)") + Inf - NaN',
        'label_replace(-errors_total{model="m", namespace="ns", model_version="v2"} * 0.001, '
        '"dst", "$1", "src", "(.+)") + Inf - NaN',
        id="unary minus, numbers, string arguments",
    ),
    pytest.param(
        'errors_total{model="other"}',
        'errors_total{model="other", namespace="ns", model="m", model_version="v2"}',
        id="another model's selector is pinned too, and selects nothing",
    ),
]


@pytest.mark.parametrize(("expr", "expected"), CASES)
def test_hand_made_expressions_are_restricted_exactly(
    expr: str, expected: str, prometheus: PrometheusServer
) -> None:
    restricted = restrict_to_version(expr, V, SHORT)

    assert restricted == expected
    for _, matchers in selectors(restricted):
        assert len(version_matchers(matchers)) <= 1
    # Prometheus reads our text as it reads the expected one, and our unrestricted
    # rendering as it reads the input: escapes, subqueries, modifiers survive.
    assert prometheus_format(prometheus, restricted) == prometheus_format(prometheus, expected)
    assert prometheus_format(prometheus, render(parse(expr))) == prometheus_format(prometheus, expr)


def test_a_version_with_quotes_and_backslashes_is_escaped(prometheus: PrometheusServer) -> None:
    version = 'v2"} or vector(1) or x{a="\\'

    restricted = restrict_to_version('errors_total{model="m"}', version, SHORT)

    assert selectors(restricted) == [
        (
            "errors_total",
            [("model", "=", "m"), ("namespace", "=", "ns"), ("model_version", "=", version)],
        )
    ]
    prometheus_format(prometheus, restricted)


def test_data_checks_name_each_restricted_selector_and_and_guard() -> None:
    expr = (
        'sum by (namespace, model, model_version) (rate(errors_total{model="m"}[5m])) > 0.05 '
        'and on (namespace, model, model_version) (rate(requests_total{model="m"}[5m]) >= 0.5) '
        'and on (namespace, model) model_info{tier="critical"}'
    )

    restricted = restrict(expr, V, SHORT)

    pin = 'model="m", namespace="ns", model_version="v2"'
    assert restricted.selectors == (
        f"errors_total{{{pin}}}[5m]",
        f"requests_total{{{pin}}}[5m]",
    )
    assert restricted.data_checks == (
        f"count_over_time(errors_total{{{pin}}}[5m])",
        f"count_over_time(requests_total{{{pin}}}[5m])",
        f"(rate(requests_total{{{pin}}}[5m]) >= 0.5)",
    )


def test_presence_query_labels_each_check_by_its_index() -> None:
    assert presence_query(("a", "b")) == (
        'label_replace(count(a), "check", "0", "", "") or '
        'label_replace(count(b), "check", "1", "", "")'
    )


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ('errors_total{model="m"', "does not parse as PromQL"),
        ("", "does not parse as PromQL"),
        ('up{job="x"} == 0', "no selector of 'up{job=\"x\"} == 0' reads per-version series"),
        ('namespace_model:model_tier:info{model="m"}', "reads per-version series"),
    ],
)
def test_unusable_expressions_raise_a_permanent_error_naming_the_problem(
    expr: str, message: str
) -> None:
    with pytest.raises(ConfirmationError, match=message.replace("(", r"\(")) as caught:
        restrict_to_version(expr, V, SHORT)
    assert isinstance(caught.value, PermanentError)


@pytest.mark.parametrize(
    ("version", "labels", "message"),
    [
        ("", SHORT, "no target version"),
        (V, {"model_version": "x"}, "cannot identify the model"),
        (V, {"bad-label": "x"}, "cannot identify the model"),
        (V, {"model": ""}, "label 'model' is empty"),
    ],
)
def test_a_missing_version_or_unusable_model_labels_are_refused(
    version: str, labels: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfirmationError, match=message):
        restrict('errors_total{model="m"}', version, labels)


# --- range windows -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "seconds"),
    [
        ("x", 0),
        ("rate(x[5m])", 300),
        ("rate(x[5m]) / rate(y[1h30m])", 5400),
        ("rate(x[5m] offset 15m)", 1200),
        ("x unless x offset 15m", 900),
        ("max_over_time(rate(x[5m])[30m:1m])", 2100),
        ("namespace_model_version:errors:ratio_rate5m > 0.05", 300),
        ("a:b:increase1h30m", 5400),
        ("namespace_model:model_tier:info", 0),
        ("rate(namespace_model_version:x:increase30m[10m])", 2400),
    ],
)
def test_range_window_is_the_furthest_the_expression_reads_back(expr: str, seconds: float) -> None:
    assert range_window_seconds(expr) == seconds


@pytest.mark.parametrize(
    ("alert", "seconds"),
    [
        ("ModelServingHighErrorRate", 300),
        ("ModelServingLatencyHigh", 300),
        ("ModelServingMissingFeatures", 300),
        ("ModelServingOOMKilled", 900),
        ("ModelServingFeatureDrift", 1800),
        ("ModelServingAccuracyBelowSLO", 1800),
    ],
)
def test_shipped_alerts_read_the_windows_of_their_recording_rules(
    alert: str, seconds: float
) -> None:
    windows = {range_window_seconds(r["expr"]) for r in MODEL_ALERTS if r["alert"] == alert}
    assert windows == {seconds}


# A recording rule whose name hides its window, as users name theirs: read from the
# expression Prometheus runs, never from the name.
HIDDEN = "namespace_model_version:checkout_errors:ratio"
HIDDEN_EXPR = (
    "sum by (namespace, model, model_version) (rate(checkout_errors_total[10m]))"
    " / sum by (namespace, model, model_version) (rate(checkout_requests_total[10m]))"
)
# The shipped model-wide join, recorded over an hour: the same whichever version serves.
TIER_INFO = "namespace_model:model_tier:info"
TIER_INFO_EXPR = next(r["expr"] for r in RULES if r.get("record") == TIER_INFO)


def test_a_recording_rule_that_hides_its_window_counts_its_expressions_window() -> None:
    rules = {HIDDEN: [HIDDEN_EXPR]}

    assert range_window_seconds(f"{HIDDEN} > 0.05", rules) == 600
    assert range_window_seconds(f"{HIDDEN} > 0.05") == 0, "by its name alone: none stated"
    # Its own range and offset come on top, as for any selector.
    assert range_window_seconds(f"max_over_time({HIDDEN}[5m] offset 1m) > 0.05", rules) == 960


def test_a_known_recording_rule_counts_its_expression_not_its_name() -> None:
    named = "namespace_model_version:checkout_errors:ratio_rate5m"

    assert range_window_seconds(f"{named} > 0.05", {named: [HIDDEN_EXPR]}) == 600
    assert range_window_seconds(f"{named} > 0.05", {named: ["sum(rate(e_total[1m]))"]}) == 60


def test_an_unknown_recording_rule_counts_the_window_its_name_states() -> None:
    named = "namespace_model_version:other_errors:ratio_rate15m"
    expr = f"{named} > 0.05 or {HIDDEN} > 0.05"

    assert range_window_seconds(expr, {HIDDEN: [HIDDEN_EXPR]}) == 900
    assert range_window_seconds(expr, {HIDDEN: ["sum(rate(e_total[20m]))"]}) == 1200


def test_a_name_recorded_in_several_groups_counts_the_longest_expression() -> None:
    rules = {HIDDEN: ["sum(rate(e_total[10m]))", "sum(rate(e_total[30m]))", "vector(0)"]}

    assert range_window_seconds(f"{HIDDEN} > 0.05", rules) == 1800


def test_nested_recording_rules_add_up_through_each_level() -> None:
    smoothed = "namespace_model_version:checkout_errors:smoothed"
    rules = {
        smoothed: [f"max_over_time({HIDDEN}[5m] offset 1m)"],
        HIDDEN: [HIDDEN_EXPR],
    }

    # 5m of the smoothed rule + its 1m offset + the 10m its input is recorded over.
    assert range_window_seconds(f"{smoothed} > 0.05", rules) == 960
    assert range_window_seconds(f"rate({smoothed}[2m])", rules) == 1080


def test_a_cycle_of_recording_rules_ends_reading_the_revisited_rule_by_its_name() -> None:
    a = "namespace_model_version:a:ratio_rate1m"
    b = "namespace_model_version:b:ratio"
    rules = {
        a: [f"sum(rate(e_total[5m])) + {b}"],
        b: [f"{a} offset 10m"],
        "namespace_model_version:self:ratio": ["namespace_model_version:self:ratio offset 1m"],
    }

    # a: max(5m, b), b: 10m offset + a again, read by its name (1m).
    assert range_window_seconds(f"{a} > 0", rules) == 660
    # b: 10m offset + a, whose own b is the revisit (no window in its name).
    assert range_window_seconds(f"{b} > 0", rules) == 900
    assert range_window_seconds("namespace_model_version:self:ratio > 0", rules) == 60


def test_a_chain_deeper_than_the_cap_stops_at_the_cap() -> None:
    names = [f"namespace_model_version:level{i}:ratio" for i in range(3 * MAX_RECORDING_DEPTH)]
    rules = {n: [f"{names[i + 1]} offset 1m"] for i, n in enumerate(names[:-1])}
    rules[names[-1]] = ["sum(rate(e_total[1h]))"]

    # One minute per rule followed; the rule past the cap is read by its name (none).
    assert range_window_seconds(f"{names[0]} > 0", rules) == 60 * MAX_RECORDING_DEPTH


def test_a_recording_rule_that_does_not_parse_counts_its_name() -> None:
    named = "namespace_model_version:checkout_errors:ratio_rate5m"

    assert range_window_seconds(f"{named} > 0", {named: ["rate(x[10m]"]}) == 300


@pytest.mark.parametrize(
    ("expr", "seconds"),
    [
        # The shipped join on the model's tier: recorded over 1h, not restricted.
        (f'{HIDDEN} > 0.05 and on (namespace, model) {TIER_INFO}{{tier="critical"}}', 600),
        # Per-model series of the contract, even with the model's labels.
        ('rate(errors_total{model="m"}[5m]) and on (namespace, model) '
         'max_over_time(model_info{model="m"}[1h])', 300),
        # Series without the model's labels: another model's or the whole fleet's.
        ('rate(errors_total{model="m"}[5m]) > on () group_left () '
         "3 * avg(rate(errors_total[2h]))", 300),
        ('rate(errors_total{model="m"}[5m]) and on () '
         "max_over_time(rate(fleet_errors_total[1h])[2h:1m])", 300),
        # A recording rule whose level has no model_version, whatever it is recorded from.
        (f'{HIDDEN} > 0 and on (namespace, model) tier:errors:ratio_rate1h', 600),
    ],
)  # fmt: skip
def test_selectors_the_restriction_leaves_alone_do_not_count(expr: str, seconds: float) -> None:
    rules = {HIDDEN: [HIDDEN_EXPR], TIER_INFO: [TIER_INFO_EXPR]}

    assert range_window_seconds(expr, rules) == seconds


def test_inside_a_recording_rule_only_its_per_version_inputs_count() -> None:
    rules = {
        HIDDEN: [
            "sum by (namespace, model, model_version) (rate(checkout_errors_total[10m]))"
            f" * on (namespace, model) group_left () {TIER_INFO}"
            " * on (namespace, model) group_left () max_over_time(model_info[2h])"
        ],
        TIER_INFO: [TIER_INFO_EXPR],
    }

    # The raw series carry no model matcher in a rule recorded for every model: they
    # count; the tier join (1h) and the per-model model_info (2h) do not.
    assert range_window_seconds(f"{HIDDEN} > 0.05", rules) == 600


@pytest.mark.parametrize(
    ("expr", "seconds"),
    [
        ('rate(errors_total{model="m"}[5m] offset 15m)', 1200),
        ('errors_total{model="m"} unless errors_total{model="m"} offset 15m', 900),
        ('max_over_time(rate(errors_total{model="m"}[5m])[30m:1m])', 2100),
        ('max_over_time(rate(errors_total{model="m"}[5m])[30m:1m] offset 10m)', 2700),
        (f"max_over_time({HIDDEN}[30m:1m])", 2400),
        (f"max_over_time({HIDDEN}[30m:1m] offset 5m)", 2700),
        (f"{HIDDEN} offset -5m", 600),
    ],
)
def test_offsets_and_subqueries_of_counted_selectors_read_further_back(
    expr: str, seconds: float
) -> None:
    assert range_window_seconds(expr, {HIDDEN: [HIDDEN_EXPR]}) == seconds


def test_the_model_labels_decide_which_hand_written_selectors_count() -> None:
    expr = 'rate(errors_total{team="payments"}[5m]) and on () max_over_time(x[1h])'

    assert range_window_seconds(expr, model_labels=("team",)) == 300
    # Nothing restricted with the default labels: the expression cannot be confirmed, and
    # its window is read over every selector.
    assert range_window_seconds(expr) == 3600


def test_range_window_of_an_unparsable_expression_is_a_confirmation_error() -> None:
    with pytest.raises(ConfirmationError):
        range_window_seconds("rate(x[5m]")


# --- generatorURL ------------------------------------------------------------------------


def fixture_alerts() -> list[dict[str, Any]]:
    alerts = []
    for path in sorted(Path(AM_FIXTURES).glob("*.json")):
        if path.name.endswith(".headers.json"):
            continue
        alerts.extend(json.loads(path.read_text()).get("alerts", []))
    return alerts


def test_the_expression_of_every_recorded_alert_is_read_from_its_generator_url() -> None:
    alerts = fixture_alerts()
    assert alerts

    for alert in alerts:
        expr = extract_expr(alert["generatorURL"])
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(alert["generatorURL"]).query)
        assert expr == query["g0.expr"][0]
        assert "%" not in expr and "+" not in expr.replace(" + ", "")
        restricted = restrict_to_version(expr, "v1", {"model": alert["labels"]["model"]})
        assert 'model_version="v1"' in restricted


def test_a_recorded_generator_url_decodes_to_the_rule_expression() -> None:
    url = next(
        a["generatorURL"]
        for a in fixture_alerts()
        if "model_feature_drift_psi" in a["generatorURL"]
    )

    assert extract_expr(url) == 'model_feature_drift_psi{model=~"ranker"} > 0.2'


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "has no generatorURL"),
        ("   ", "has no generatorURL"),
        ("http://prometheus:9090/graph", "has no g0.expr parameter"),
        ("http://prometheus:9090/graph?g1.expr=up&g0.tab=1", "has no g0.expr parameter"),
        ("http://prometheus:9090/graph?g0.expr=&g0.tab=1", "has an empty g0.expr"),
        ("http://[::1/graph?g0.expr=up", "is not a URL"),
    ],
)
def test_a_generator_url_without_an_expression_is_a_confirmation_error(
    url: str, message: str
) -> None:
    with pytest.raises(ConfirmationError, match=message):
        extract_expr(url)


def test_a_generator_url_with_more_parameters_and_plus_encoded_spaces() -> None:
    url = (
        "http://prometheus.example:9090/prometheus/graph?g0.range_input=1h&"
        "g0.expr=rate%28x%7Bmodel%3D%22a+b%22%7D%5B5m%5D%29+%3E+0&g0.tab=1"
    )

    assert extract_expr(url) == 'rate(x{model="a b"}[5m]) > 0'


TOKENS = [
    "x", 'y{model="m"}', 'x{a="\\\\"}', '"a\\"b"', "`raw`", "[5m]", "[5m:1m]", "[1h:]", "(", ")",
    "-", "*", "/", "^", ">", "and", "unless", "or", "on", "ignoring", "(a)", "()", "group_left",
    "bool", "sum", "by", "without", "topk(", "rate(", "absent(", "count_values(", "offset", "5m",
    "@", "start()", "1e3", "2.5", "Inf", "NaN", "0x1f", ",", "{", "}", "=", "=~", "!~", ":",
    "__name__", "é", " ", "#c\n",
]  # fmt: skip


def test_random_expressions_are_written_back_as_prometheus_reads_them(
    prometheus: PrometheusServer,
) -> None:
    rng = random.Random(20240601)
    checked = 0
    while checked < 150:
        expr = "".join(rng.choice(TOKENS) for _ in range(rng.randint(1, 14)))
        try:
            tree = pp.parse(expr)
        except ValueError:
            continue
        url = f"{prometheus.url}/api/v1/format_query?{urllib.parse.urlencode({'query': expr})}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                expected = json.loads(resp.read())["data"]
        except urllib.error.HTTPError:
            continue  # the Rust parser accepts some syntax of later Prometheus versions
        assert prometheus_format(prometheus, render(tree)) == expected, expr
        checked += 1
