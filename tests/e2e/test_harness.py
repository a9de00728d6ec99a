"""The rule rewrite of the end-to-end harness: what it shortens, and that it refuses more.

No process runs here: these check the files the scenarios load into Prometheus.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from receiver.verify.promql import range_window_seconds
from tests.e2e import harness
from tests.e2e.harness import RULES_DIR, rewrite_rules

ERRORS = "namespace_model_version:model_prediction_errors_per_predictions:ratio_rate5m"
TRAFFIC = "namespace_model_version:model_predictions:rate5m"


def _for(seconds: float) -> float:
    return seconds / 60


def _ranges(seconds: float) -> float:
    return seconds / 30


def _rules(path: Path) -> dict[str, list[dict[str, object]]]:
    out: dict[str, list[dict[str, object]]] = {}
    for group in yaml.safe_load(path.read_text())["groups"]:
        for rule in group["rules"]:
            out.setdefault(str(rule.get("alert") or rule.get("record")), []).append(rule)
    return out


def test_ranges_and_the_windows_recording_rules_name_are_scaled(tmp_path: Path) -> None:
    loaded = rewrite_rules(tmp_path, _for, ranges=_ranges)

    assert loaded.ranges == {300.0: 10.0, 900.0: 30.0, 1800.0: 60.0, 3600.0: 120.0}
    assert loaded.record(ERRORS) == ERRORS.removesuffix("5m") + "10s"
    assert loaded.record("namespace_model:model_tier:info") == "namespace_model:model_tier:info"
    rules = _rules(tmp_path / "operational.rules.yaml")
    assert "[5m]" not in (tmp_path / "operational.rules.yaml").read_text()
    assert "rate(model_predictions_total[10s])" in str(rules[loaded.record(ERRORS)][0]["expr"])
    alert = rules["ModelServingHighErrorRate"][0]
    assert alert["for"] == "5s"
    # What makes the confirmation delay short: the alert's window, 10s now (5m shipped),
    # read from the recording rules loaded and, failing those, from their names alike.
    shipped = _rules(RULES_DIR / "operational.rules.yaml")["ModelServingHighErrorRate"][0]
    recorded = {
        str(r["record"]): [str(r["expr"])]
        for path in sorted(tmp_path.glob("*.rules.yaml"))
        for rs in _rules(path).values()
        for r in rs
        if "record" in r
    }
    assert range_window_seconds(str(shipped["expr"])) == 300
    assert range_window_seconds(str(alert["expr"])) == 10
    assert range_window_seconds(str(alert["expr"]), recorded) == 10
    assert f"{loaded.record(TRAFFIC)} >= 0.5" in str(alert["expr"])


def test_without_ranges_only_for_changes(tmp_path: Path) -> None:
    loaded = rewrite_rules(tmp_path, _for)

    assert loaded.records == {} and loaded.ranges == {}
    for src in sorted(RULES_DIR.glob("*.rules.yaml")):
        shipped, written = _rules(src), _rules(tmp_path / src.name)
        assert shipped.keys() == written.keys()
        for name, rules in shipped.items():
            assert [r["expr"] for r in rules] == [r["expr"] for r in written[name]]


@pytest.mark.parametrize(
    ("what", "spoil"),
    [
        ("a threshold", lambda text: text.replace("> 0.05", "> 0.06")),
        ("a matcher", lambda text: text.replace('outcome="error"', 'outcome="errors"')),
        ("an offset", lambda text: text.replace("[10s])", "[10s] offset 1s)", 1)),
        ("a name left unrenamed", lambda text: text.replace("ratio_rate10s", "ratio_rate5m")),
        ("a range left unscaled", lambda text: text.replace("[1m]", "[30m]")),
    ],
)
def test_any_other_change_of_an_expression_is_refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    what: str,
    spoil: Callable[[str], str],
) -> None:
    rewrite = harness._rewrite_expr
    monkeypatch.setattr(
        harness, "_rewrite_expr", lambda expr, ranges, names: spoil(rewrite(expr, ranges, names))
    )
    with pytest.raises(AssertionError):
        rewrite_rules(tmp_path, _for, ranges=_ranges)
