"""The policy file: the outline of design.md loads, every key has a default, and every
mistake is reported with its key path and its line:column."""

from __future__ import annotations

import hashlib
from pathlib import Path
from textwrap import dedent

import pytest

from receiver.errors import ConfigError
from receiver.policy import (
    HealthPaths,
    Mode,
    Policy,
    Strategy,
    check_policy,
    load_policy,
    parse_policy,
)

REPO = Path(__file__).resolve().parents[2]

# design.md's outline, with every key spelled out.
FULL = dedent(
    """\
    defaults:
      strategy: rollout-undo
      mode: auto
      data_quality_mode: notify
      cooldown: 30m
      max_rollbacks: 3
      window: 24h
      verify_timeout: 5m
      causality_window: 24h
      confirm_after: {accuracy: 6h, operational: 15m, data_quality: 1h}
    tiers:
      critical: {mode: auto}
      experimental: {mode: notify}
    models:
      - name: fraud-scorer
        namespace: ml-prod
        tier: critical
        deployment: fraud-scorer
        slack_channel: "#fraud-oncall"
        health:
          base_url: "http://fraud-scorer.ml-prod.svc:8080"
          sample_request:
            inputs: [{name: features, shape: [1, 4], datatype: FP32, data: [0.1, 3.5, 0, 1]}]
          paths: {dependencies: /v2/deps}
          request_timeout: 3s
      - name: ranker
        namespace: ml-prod
        strategy: blue-green
        service: ranker
        slots: {blue: ranker-blue, green: ranker-green}
        health:
          base_url: "http://ranker.ml-prod.svc:8080"
          slot_urls:
            blue: "http://ranker-blue.ml-prod.svc:8080"
            green: "http://ranker-green.ml-prod.svc:8080"
      - name: scorer
        namespace: ml-prod
        cluster: eu-1
        strategy: canary
        canary: {deployment: scorer-canary, stable: scorer-stable}
        mode: notify
    """
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_policy(path)
    return str(caught.value).replace(f"{path}:", "policy.yaml:")


# --- a valid file -----------------------------------------------------------------------


def test_the_full_outline_of_the_design_loads(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, FULL))
    assert [m.name for m in policy.models] == ["fraud-scorer", "ranker", "scorer"]
    fraud = policy.lookup("", "ml-prod", "fraud-scorer")
    assert fraud is not None
    assert fraud.slack_channel == "#fraud-oncall"
    assert fraud.health.sample_request == {
        "inputs": [
            {"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [0.1, 3.5, 0, 1]}
        ]
    }
    assert fraud.health.paths == HealthPaths(dependencies="/v2/deps")
    assert fraud.health.request_timeout == 3.0
    ranker = policy.lookup("", "ml-prod", "ranker")
    assert ranker is not None and ranker.slots is not None and ranker.health.slot_urls is not None
    assert (ranker.slots.blue, ranker.slots.green) == ("ranker-blue", "ranker-green")
    assert ranker.health.slot_urls.green == "http://ranker-green.ml-prod.svc:8080"
    scorer = policy.lookup("eu-1", "ml-prod", "scorer")
    assert scorer is not None and scorer.canary is not None
    assert scorer.canary.stable == "scorer-stable"
    assert policy.effective(scorer).mode is Mode.NOTIFY
    assert policy.effective(scorer).strategy is Strategy.CANARY


def test_the_policy_version_is_the_first_12_hex_digits_of_the_files_sha256(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, FULL)
    assert load_policy(path).version == hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert (
        load_policy(write(tmp_path, FULL + "# a comment\n")).version
        != load_policy(write(tmp_path, FULL)).version
    )


@pytest.mark.parametrize(
    "text",
    ["", "# nothing but a comment\n", "defaults:\ntiers:\nmodels:\n", "{}\n"],
    ids=["empty", "comment-only", "empty-sections", "empty-mapping"],
)
def test_an_empty_file_is_a_valid_policy_with_built_in_defaults(tmp_path: Path, text: str) -> None:
    policy = load_policy(write(tmp_path, text))
    assert policy.models == []
    assert policy.defaults.strategy is Strategy.ROLLOUT_UNDO
    assert policy.defaults.mode is Mode.AUTO
    assert policy.defaults.data_quality_mode is Mode.NOTIFY
    assert policy.defaults.cooldown == 1800
    assert policy.defaults.max_rollbacks == 3
    assert policy.defaults.window == 86400
    assert policy.defaults.verify_timeout == 300
    assert policy.defaults.causality_window == 86400
    assert policy.tiers.critical.mode is Mode.AUTO
    assert policy.tiers.experimental.mode is Mode.NOTIFY


def test_no_policy_file_is_the_empty_policy() -> None:
    policy = load_policy(None)
    assert policy.models == []
    assert policy.lookup("", "ml-prod", "fraud-scorer") is None
    assert policy == Policy()


def test_a_missing_policy_file_is_a_config_error_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found: fix RECEIVER_POLICY_FILE"):
        load_policy(tmp_path / "absent.yaml")


def test_a_model_defaults_its_deployment_to_its_name(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, "models:\n  - {name: m, namespace: ns}\n"))
    (model,) = policy.models
    assert model.deployment_name == "m"
    assert model.health.paths == HealthPaths()
    assert model.health.request_timeout == 2.0
    assert model.health.base_url is None


def test_a_tier_written_in_the_file_keeps_its_built_in_mode(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, "tiers:\n  experimental: {cooldown: 2h}\n"))
    assert policy.tiers.experimental.mode is Mode.NOTIFY
    assert policy.tiers.experimental.cooldown == 7200
    assert policy.tiers.critical.mode is Mode.AUTO


# --- lookup -------------------------------------------------------------------------------


def test_lookup_matches_cluster_namespace_and_name_exactly(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, FULL))
    assert policy.lookup("", "ml-prod", "fraud-scorer") is policy.models[0]
    # An entry without a cluster matches only alerts without one.
    assert policy.lookup("eu-1", "ml-prod", "fraud-scorer") is None
    assert policy.lookup("", "ml-prod", "scorer") is None
    assert policy.lookup("eu-1", "ml-prod", "scorer") is policy.models[2]
    assert policy.lookup("", "ml-staging", "fraud-scorer") is None


def test_the_same_model_in_two_clusters_is_two_entries(tmp_path: Path) -> None:
    text = """\
models:
  - {name: m, namespace: ns, cluster: a}
  - {name: m, namespace: ns, cluster: b, mode: off}
"""
    policy = load_policy(write(tmp_path, text))
    a, b = policy.lookup("a", "ns", "m"), policy.lookup("b", "ns", "m")
    assert a is not None and b is not None
    assert policy.effective(a).mode is Mode.AUTO
    assert policy.effective(b).mode is Mode.OFF


# --- errors name the key path and the position ------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "defaults: {}\nmodel:\n  - {name: a}\n",
            "policy.yaml:2:1: model: unknown key 'model'; allowed here: defaults, models, tiers",
            id="unknown-top-level-key",
        ),
        pytest.param(
            "defaults:\n  mode: auto\n  cooldwn: 10m\n",
            "policy.yaml:3:3: defaults.cooldwn: unknown key 'cooldwn'; allowed here:"
            " causality_window, confirm_after, cooldown, data_quality_mode, max_rollbacks,"
            " mode, strategy, verify_timeout, window",
            id="unknown-key-in-defaults",
        ),
        pytest.param(
            "models:\n  - name: a\n    namespace: ns\n  - name: b\n    namespace: ns\n"
            "    replicas: 3\n",
            "policy.yaml:6:5: models[1].replicas: unknown key 'replicas'",
            id="unknown-key-in-a-model",
        ),
        pytest.param(
            "tiers:\n  critcal: {mode: auto}\n",
            "policy.yaml:2:3: tiers.critcal: unknown key 'critcal'; allowed here:"
            " critical, experimental",
            id="unknown-tier",
        ),
        pytest.param(
            "models:\n  - name: a\n    namespace: ns\n    health:\n      paths: {readyz: /r}\n",
            "policy.yaml:5:15: models[0].health.paths.readyz: unknown key 'readyz'",
            id="unknown-health-path",
        ),
        pytest.param(
            "defaults:\n  cooldown: 30 minutes\n",
            "policy.yaml:2:13: defaults.cooldown: invalid duration '30 minutes': use Prometheus"
            " syntax such as 30s, 10m, 1h30m, 7d",
            id="bad-duration",
        ),
        pytest.param(
            "models:\n  - name: a\n    namespace: ns\n    window: 1h30\n",
            "policy.yaml:4:13: models[0].window: invalid duration '1h30'",
            id="bad-duration-in-a-model",
        ),
        pytest.param(
            "models:\n  - name: a\n    namespace: ns\n  - name: b\n    namespace: ns\n"
            "    strategy: bluegreen\n",
            "policy.yaml:6:15: models[1].strategy: Input should be 'rollout-undo', 'blue-green'"
            " or 'canary'",
            id="bad-strategy",
        ),
        pytest.param(
            "tiers:\n  experimental:\n    mode: manual\n",
            "policy.yaml:3:11: tiers.experimental.mode: Input should be 'auto', 'notify' or 'off'",
            id="bad-mode",
        ),
        pytest.param(
            "models:\n  - name: a\n    namespace: ns\n    tier: gold\n",
            "policy.yaml:4:11: models[0].tier: Input should be 'critical' or 'experimental'",
            id="bad-tier",
        ),
        pytest.param(
            "defaults:\n  max_rollbacks: -1\n",
            "policy.yaml:2:18: defaults.max_rollbacks: Input should be greater than or equal to 0",
            id="negative-max-rollbacks",
        ),
        pytest.param(
            "models:\n  - namespace: ns\n",
            "policy.yaml:2:5: models[0].name: required key 'name' is missing",
            id="missing-name",
        ),
        pytest.param(
            "models:\n  - name: ranker\n    namespace: ns\n    strategy: blue-green\n"
            "    service: ranker\n    slots: {blue: ranker-blue, green: ranker-green}\n"
            "    health: {base_url: 'http://ranker'}\n",
            "policy.yaml:7:13: models[0].health.slot_urls: strategy blue-green needs"
            " health.slot_urls: {blue: <url>, green: <url>}",
            id="blue-green-without-slot-urls",
        ),
        pytest.param(
            "models:\n  - name: ranker\n    namespace: ns\n    strategy: blue-green\n"
            "    service: ranker\n    slots: {blue: ranker-blue, green: ranker-green}\n"
            "    health:\n      slot_urls: {blue: 'http://b'}\n",
            "policy.yaml:8:18: models[0].health.slot_urls.green: required key 'green' is missing",
            id="blue-green-with-one-slot-url",
        ),
        pytest.param(
            "models:\n  - name: ranker\n    namespace: ns\n    strategy: blue-green\n"
            "    slots: {blue: ranker-blue, green: ranker-green}\n",
            "policy.yaml:2:5: models[0].service: strategy blue-green needs service",
            id="blue-green-without-service",
        ),
        pytest.param(
            "models:\n  - name: ranker\n    namespace: ns\n    strategy: blue-green\n"
            "    service: ranker\n",
            "policy.yaml:2:5: models[0].slots: strategy blue-green needs slots",
            id="blue-green-without-slots",
        ),
        pytest.param(
            "tiers:\n  critical: {strategy: blue-green}\n"
            "models:\n  - {name: ranker, namespace: ns, tier: critical}\n",
            "policy.yaml:4:5: models[0].service: strategy blue-green needs service",
            id="blue-green-from-the-tier",
        ),
        pytest.param(
            "models:\n  - name: scorer\n    namespace: ns\n    strategy: canary\n",
            "policy.yaml:2:5: models[0].canary: strategy canary needs canary:",
            id="canary-without-canary",
        ),
        pytest.param(
            "models:\n  - name: scorer\n    namespace: ns\n    strategy: canary\n"
            "    canary: {deployment: scorer-canary}\n",
            "policy.yaml:5:13: models[0].canary.stable: required key 'stable' is missing",
            id="canary-without-stable",
        ),
        pytest.param(
            "models:\n  - {name: a, namespace: ns}\n  - {name: b, namespace: ns}\n"
            "  - {name: a, namespace: ns}\n",
            "policy.yaml:4:12: models[2].name: duplicate model 'a' in namespace 'ns': already"
            " defined at models[0]",
            id="duplicate-model",
        ),
        pytest.param(
            "models:\n  - {name: a, namespace: ns, cluster: eu}\n"
            "  - {name: a, namespace: ns, cluster: eu}\n",
            "policy.yaml:3:12: models[1].name: duplicate model 'a' in namespace 'ns' in cluster"
            " 'eu'",
            id="duplicate-model-in-a-cluster",
        ),
        pytest.param(
            "defaults:\n  mode: auto\n  mode: off\n",
            "policy.yaml:3:3: duplicate key 'mode': keep one of them",
            id="duplicate-yaml-key",
        ),
        pytest.param(
            "models:\n  - name: [a\n",
            "policy.yaml:3:1: invalid YAML:",
            id="invalid-yaml",
        ),
        pytest.param(
            "- name: a\n",
            "policy.yaml:1:1: the policy must be a mapping with the keys defaults, tiers and"
            " models",
            id="not-a-mapping",
        ),
        pytest.param(
            "models:\n  name: a\n",
            "policy.yaml:2:3: models: Input should be a valid list",
            id="models-not-a-list",
        ),
    ],
)
def test_each_error_names_the_key_path_and_its_line_and_column(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert error_of(tmp_path, text).startswith(expected)


def test_every_error_of_a_file_is_reported_in_file_order(tmp_path: Path) -> None:
    text = "defaults:\n  window: forever\n  mode: sometimes\nextra: 1\n"
    lines = error_of(tmp_path, text).splitlines()
    assert [line.split(": ")[0:2] for line in lines] == [
        ["policy.yaml:2:11", "defaults.window"],
        ["policy.yaml:3:9", "defaults.mode"],
        ["policy.yaml:4:1", "extra"],
    ]


def test_error_messages_start_with_the_path_of_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "bogus: 1\n")
    with pytest.raises(ConfigError) as caught:
        load_policy(path)
    assert str(caught.value).startswith(f"{path}:1:1: bogus: unknown key")


# --- precedence: model > its tier > defaults ---------------------------------------------

PRECEDENCE = """\
defaults: {mode: auto, cooldown: 30m, max_rollbacks: 3, data_quality_mode: notify,
           confirm_after: {accuracy: 6h}}
tiers:
  critical: {cooldown: 1h}
  experimental: {mode: notify, max_rollbacks: 1, data_quality_mode: off,
                 confirm_after: {accuracy: 12h, operational: 30m}}
models:
  - {name: plain, namespace: ns}
  - {name: crit, namespace: ns, tier: critical}
  - {name: exp, namespace: ns, tier: experimental}
  - {name: exp-own, namespace: ns, tier: experimental, mode: auto, cooldown: 5m,
     data_quality_mode: auto, confirm_after: {operational: 20m}}
  - {name: crit-off, namespace: ns, tier: critical, mode: off}
"""


@pytest.mark.parametrize(
    ("model", "mode", "dq_mode", "cooldown", "max_rollbacks", "accuracy", "operational"),
    [
        pytest.param("plain", Mode.AUTO, Mode.NOTIFY, 1800, 3, 21600, 900, id="defaults"),
        pytest.param("crit", Mode.AUTO, Mode.NOTIFY, 3600, 3, 21600, 900, id="tier-critical"),
        pytest.param("exp", Mode.NOTIFY, Mode.OFF, 1800, 1, 43200, 1800, id="tier-experimental"),
        pytest.param("exp-own", Mode.AUTO, Mode.AUTO, 300, 1, 43200, 1200, id="model-over-tier"),
        pytest.param("crit-off", Mode.OFF, Mode.NOTIFY, 3600, 3, 21600, 900, id="model-off"),
    ],
)
def test_effective_settings_take_the_model_then_its_tier_then_the_defaults(
    tmp_path: Path,
    model: str,
    mode: Mode,
    dq_mode: Mode,
    cooldown: float,
    max_rollbacks: int,
    accuracy: float,
    operational: float,
) -> None:
    policy = load_policy(write(tmp_path, PRECEDENCE))
    entry = policy.lookup("", "ns", model)
    assert entry is not None
    settings = policy.effective(entry)
    assert settings.mode is mode
    assert settings.data_quality_mode is dq_mode
    assert settings.cooldown_seconds == cooldown
    assert settings.max_rollbacks == max_rollbacks
    assert settings.confirm_after.accuracy == accuracy
    assert settings.confirm_after.operational == operational
    assert settings.confirm_after.data_quality == 3600
    assert settings.window_seconds == 86400
    assert settings.verify_timeout_seconds == 300
    assert settings.causality_window_seconds == 86400


def test_the_policys_tier_wins_over_the_alerts_tier_label(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, PRECEDENCE))
    crit = policy.lookup("", "ns", "crit")
    plain = policy.lookup("", "ns", "plain")
    assert crit is not None and plain is not None
    assert policy.effective(crit, alert_tier="experimental").mode is Mode.AUTO
    assert policy.effective(crit, alert_tier="experimental").tier == "critical"
    # Without a tier in the policy the alert's label selects one.
    assert policy.effective(plain, alert_tier="experimental").mode is Mode.NOTIFY
    assert policy.effective(plain, alert_tier="gold").mode is Mode.AUTO
    assert policy.effective(plain).tier is None


@pytest.mark.parametrize(
    ("model", "category", "expected"),
    [
        ("plain", "operational", Mode.AUTO),
        ("plain", "accuracy", Mode.AUTO),
        ("plain", "data_quality", Mode.NOTIFY),
        ("plain", "", Mode.AUTO),
        ("exp", "data_quality", Mode.OFF),
        ("exp-own", "data_quality", Mode.AUTO),
        ("crit-off", "operational", Mode.OFF),
    ],
)
def test_data_quality_alerts_use_data_quality_mode(
    tmp_path: Path, model: str, category: str, expected: Mode
) -> None:
    policy = load_policy(write(tmp_path, PRECEDENCE))
    entry = policy.lookup("", "ns", model)
    assert entry is not None
    assert policy.mode_for(entry, category) is expected


def test_confirm_after_judges_an_unknown_category_as_operational() -> None:
    confirm = Policy().defaults.confirm_after
    assert confirm.for_category("accuracy") == 6 * 3600
    assert confirm.for_category("data_quality") == 3600
    assert confirm.for_category("operational") == 900
    assert confirm.for_category("latency") == 900


# --- check-policy ---------------------------------------------------------------------------


def test_check_policy_summarises_a_valid_file(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    ok, text = check_policy(path)
    assert ok
    assert "\n" not in text
    assert load_policy(path).version in text
    assert "3 models (1 rollout-undo, 1 blue-green, 1 canary)" in text
    assert "mode 2 auto, 1 notify" in text
    assert text.endswith(
        "Strategy per model: rollout-undo: ml-prod/fraud-scorer; blue-green: ml-prod/ranker;"
        " canary: eu-1/ml-prod/scorer."
    )


def test_check_policy_of_an_empty_file_says_nothing_is_automated(tmp_path: Path) -> None:
    ok, text = check_policy(write(tmp_path, ""))
    assert ok
    assert "no models" in text


def test_check_policy_returns_the_errors_of_an_invalid_file(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  - {name: a, namespace: ns, strategy: rolling}\n")
    ok, text = check_policy(path)
    assert not ok
    assert text.startswith(f"{path}:2:40: models[0].strategy: Input should be")


def test_the_shipped_example_policy_is_valid() -> None:
    shipped = REPO / "deploy" / "policy.yaml"
    ok, text = check_policy(shipped)
    assert ok, text


def test_parse_policy_accepts_text_and_names_the_source() -> None:
    with pytest.raises(ConfigError, match=r"^inline:1:1: bogus"):
        parse_policy("bogus: 1\n", source="inline")


@pytest.mark.parametrize("written", ["off", "'off'", "OFF", "no"])
def test_mode_off_may_be_written_unquoted_although_yaml_reads_it_as_false(
    tmp_path: Path, written: str
) -> None:
    policy = load_policy(write(tmp_path, f"defaults:\n  mode: {written}\n"))
    assert policy.defaults.mode is Mode.OFF
