"""The policy file: which workload serves each model, how to roll it back, and when not to.

Loads and validates the YAML file of design.md ("Policy file") into frozen pydantic
models and resolves the settings of one model (model > its tier > defaults). Every key has
a built-in default, so an absent or empty file is a valid policy that knows no model
(every alert is then notified only). Unknown keys are errors, reported with the key path
and the file position (``policy.yaml:12:5: models[1].strategy: ...``) so a typo cannot
silently turn automation off or on.

This module reads the file and nothing else: it never talks to the cluster, Redis or
Slack, and it does not decide anything (``decide`` does).
"""

from __future__ import annotations

import hashlib
import types
import typing
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from receiver.durations import Duration, format_duration
from receiver.errors import ConfigError
from receiver.models import HealthPaths

__all__ = [
    "CATEGORY_DATA_QUALITY",
    "CanarySpec",
    "ConfirmAfter",
    "ConfirmAfterOverride",
    "Defaults",
    "EffectiveSettings",
    "HealthSpec",
    "Mode",
    "ModelPolicy",
    "Overrides",
    "Policy",
    "SlotUrls",
    "Slots",
    "Strategy",
    "TierName",
    "Tiers",
    "check_policy",
    "load_policy",
    "parse_policy",
    "summarize",
]

TierName = Literal["critical", "experimental"]
CATEGORY_DATA_QUALITY = "data_quality"


class Strategy(StrEnum):
    """How a model is rolled back (design.md, Strategies)."""

    ROLLOUT_UNDO = "rollout-undo"
    BLUE_GREEN = "blue-green"
    CANARY = "canary"


class Mode(StrEnum):
    """What the receiver may do for a model: act, recommend with a button, or record only."""

    AUTO = "auto"
    NOTIFY = "notify"
    OFF = "off"


def _yaml_off(value: Any) -> Any:
    # YAML 1.1 (PyYAML) reads an unquoted `off` (and `no`) as false: `mode: off` must work.
    return "off" if value is False else value


ModeValue = Annotated[Mode, BeforeValidator(_yaml_off)]
"""A mode as written in the file: ``auto``, ``notify`` or ``off`` (quoted or not)."""


class _Strict(BaseModel):
    """Base of every policy model: unknown keys are errors, values never change after load."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        # `defaults:` with every line commented out reads as null: treat an empty key as
        # absent so it takes its built-in default (required keys still report "missing").
        if not isinstance(data, dict):
            return data
        return {
            k: v
            for k, v in data.items()
            if v is not None or k not in cls.model_fields or cls.model_fields[k].is_required()
        }


class ConfirmAfter(_Strict):
    """How long after a rollback the alert's expression is re-evaluated, per alert category.

    Accuracy labels (ground truth) arrive late, so an accuracy SLO can only be judged hours
    later; operational symptoms (errors, latency, OOM) show within a few evaluation windows;
    data-quality ratios need about an hour of traffic to be meaningful.
    """

    accuracy: Duration = Field(6 * 3600.0, gt=0)
    operational: Duration = Field(15 * 60.0, gt=0)
    data_quality: Duration = Field(3600.0, gt=0)

    def for_category(self, category: str) -> float:
        """Seconds for ``category``; an unknown or missing category is judged as operational."""
        if category == "accuracy":
            return self.accuracy
        if category == CATEGORY_DATA_QUALITY:
            return self.data_quality
        return self.operational


class ConfirmAfterOverride(_Strict):
    """``confirm_after`` in a tier or a model: each category may be overridden on its own."""

    accuracy: Duration | None = Field(None, gt=0)
    operational: Duration | None = Field(None, gt=0)
    data_quality: Duration | None = Field(None, gt=0)


class Defaults(_Strict):
    """Settings of every model unless its tier or its own entry says otherwise."""

    strategy: Strategy = Strategy.ROLLOUT_UNDO
    mode: ModeValue = Mode.AUTO
    # Drift usually comes from upstream data, which a rollback does not fix.
    data_quality_mode: ModeValue = Mode.NOTIFY
    cooldown: Duration = Field(30 * 60.0, ge=0)
    max_rollbacks: int = Field(3, ge=0)
    window: Duration = Field(24 * 3600.0, gt=0)
    verify_timeout: Duration = Field(5 * 60.0, gt=0)
    causality_window: Duration = Field(24 * 3600.0, gt=0)
    confirm_after: ConfirmAfter = Field(default_factory=ConfirmAfter)


class Overrides(_Strict):
    """Any key of ``defaults``, unset (``None``) meaning "inherit"."""

    strategy: Strategy | None = None
    mode: ModeValue | None = None
    data_quality_mode: ModeValue | None = None
    cooldown: Duration | None = Field(None, ge=0)
    max_rollbacks: int | None = Field(None, ge=0)
    window: Duration | None = Field(None, gt=0)
    verify_timeout: Duration | None = Field(None, gt=0)
    causality_window: Duration | None = Field(None, gt=0)
    confirm_after: ConfirmAfterOverride | None = None


_BUILTIN_TIERS: dict[str, dict[str, Any]] = {
    "critical": {"mode": "auto"},
    "experimental": {"mode": "notify"},
}


class Tiers(_Strict):
    """Per-tier overrides. The built-in modes (critical: auto, experimental: notify) stay in
    force for every key a tier written in the file leaves out."""

    critical: Overrides = Field(default_factory=lambda: Overrides(mode=Mode.AUTO))
    experimental: Overrides = Field(default_factory=lambda: Overrides(mode=Mode.NOTIFY))

    @model_validator(mode="before")
    @classmethod
    def _keep_builtin_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for tier, builtin in _BUILTIN_TIERS.items():
            given = merged.get(tier)
            if isinstance(given, dict):
                merged[tier] = {**builtin, **given}
            elif given is None and tier in merged:
                merged[tier] = dict(builtin)
        return merged

    def get(self, tier: str | None) -> Overrides | None:
        """The overrides of ``tier``, or ``None`` for no tier or an unknown one."""
        if tier == "critical":
            return self.critical
        if tier == "experimental":
            return self.experimental
        return None


class Slots(_Strict):
    """Blue-green: the Deployment behind each value of the Service's ``slot`` selector."""

    blue: str = Field(min_length=1)
    green: str = Field(min_length=1)


class SlotUrls(_Strict):
    """Blue-green: the base URL reaching each slot directly, to check the standby first."""

    blue: str = Field(min_length=1)
    green: str = Field(min_length=1)


class CanarySpec(_Strict):
    """Canary: the canary Deployment (scaled to zero on rollback) and the stable one."""

    deployment: str = Field(min_length=1)
    stable: str = Field(min_length=1)


class HealthSpec(_Strict):
    """Where and how the model is probed after a change (design.md, Verification)."""

    base_url: str | None = None
    slot_urls: SlotUrls | None = None
    sample_request: dict[str, Any] | None = None
    """The Open Inference Protocol infer body; no infer call without it."""
    paths: HealthPaths = Field(default_factory=HealthPaths)
    request_timeout: Duration = Field(2.0, gt=0)


class ModelPolicy(Overrides):
    """One model: the alert's ``model`` label in ``namespace`` (and ``cluster``), mapped to
    its workload, with any ``defaults`` key overridden for it alone."""

    name: str = Field(min_length=1)
    namespace: str = Field(min_length=1)
    cluster: str = ""
    tier: TierName | None = None
    deployment: str | None = None
    service: str | None = None
    slots: Slots | None = None
    canary: CanarySpec | None = None
    slack_channel: str | None = None
    health: HealthSpec = Field(default_factory=HealthSpec)

    @property
    def key(self) -> tuple[str, str, str]:
        """(cluster, namespace, name): the identity used by lookups and duplicate checks."""
        return (self.cluster, self.namespace, self.name)

    @property
    def deployment_name(self) -> str:
        """The rollout-undo Deployment: ``deployment``, else the model's name."""
        return self.deployment or self.name


@dataclass(frozen=True)
class EffectiveSettings:
    """A model's settings after precedence (model > tier > defaults), durations in seconds."""

    strategy: Strategy
    mode: Mode
    data_quality_mode: Mode
    cooldown_seconds: float
    max_rollbacks: int
    window_seconds: float
    verify_timeout_seconds: float
    causality_window_seconds: float
    confirm_after: ConfirmAfter
    tier: str | None

    def mode_for(self, category: str) -> Mode:
        """``data_quality_mode`` for data-quality alerts, ``mode`` for every other category."""
        return self.data_quality_mode if category == CATEGORY_DATA_QUALITY else self.mode


class _Located(ValueError):
    """A cross-field problem that knows the key path it belongs to."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


class Policy(_Strict):
    """The whole policy file. Build with ``load_policy``; ``Policy()`` is the empty policy."""

    defaults: Defaults = Field(default_factory=Defaults)
    tiers: Tiers = Field(default_factory=Tiers)
    models: list[ModelPolicy] = Field(default_factory=list)

    _index: dict[tuple[str, str, str], ModelPolicy] = PrivateAttr(default_factory=dict)
    _version: str = PrivateAttr(default_factory=lambda: hashlib.sha256(b"").hexdigest()[:12])

    @model_validator(mode="after")
    def _check_models(self) -> Policy:
        seen: dict[tuple[str, str, str], int] = {}
        for i, model in enumerate(self.models):
            if model.key in seen:
                cluster = f" in cluster {model.cluster!r}" if model.cluster else ""
                raise _Located(
                    ("models", i, "name"),
                    f"duplicate model {model.name!r} in namespace {model.namespace!r}{cluster}:"
                    f" already defined at models[{seen[model.key]}]; merge the two entries",
                )
            seen[model.key] = i
            strategy = self.effective(model).strategy
            if strategy is Strategy.BLUE_GREEN:
                _check_blue_green(i, model)
            elif strategy is Strategy.CANARY and model.canary is None:
                raise _Located(
                    ("models", i, "canary"),
                    "strategy canary needs canary: {deployment: <canary Deployment>,"
                    " stable: <stable Deployment>}",
                )
        return self

    def model_post_init(self, context: Any, /) -> None:
        # Built once so a lookup per alert costs O(1) whatever the number of models.
        self._index = {model.key: model for model in self.models}

    @property
    def version(self) -> str:
        """First 12 hex digits of sha256 over the file's bytes; audit records name it."""
        return self._version

    def lookup(self, cluster: str, namespace: str, model: str) -> ModelPolicy | None:
        """The entry for the alert's (cluster, namespace, model), or ``None`` if unknown.

        Exact match: an entry without ``cluster`` matches only alerts without one (``""``),
        so one receiver serving several clusters never acts on the wrong one.
        """
        return self._index.get((cluster, namespace, model))

    def effective(
        self, model_policy: ModelPolicy, *, alert_tier: str | None = None
    ) -> EffectiveSettings:
        """Resolve every setting: the model's own value, else its tier's, else the defaults.

        The tier is the policy's; the alert's ``tier`` label is used only when the model
        entry names none (the label selects rule thresholds, the policy decides the mode).
        """
        tier = model_policy.tier or alert_tier
        layers = [model_policy]
        tier_overrides = self.tiers.get(tier)
        if tier_overrides is not None:
            layers.append(tier_overrides)
        d = self.defaults

        def pick(key: str) -> Any:
            for layer in layers:
                value = getattr(layer, key)
                if value is not None:
                    return value
            return getattr(d, key)

        confirm = {}
        for category in ConfirmAfter.model_fields:
            value = None
            for layer in layers:
                if layer.confirm_after is not None:
                    value = getattr(layer.confirm_after, category)
                    if value is not None:
                        break
            confirm[category] = value if value is not None else getattr(d.confirm_after, category)
        return EffectiveSettings(
            strategy=pick("strategy"),
            mode=pick("mode"),
            data_quality_mode=pick("data_quality_mode"),
            cooldown_seconds=pick("cooldown"),
            max_rollbacks=pick("max_rollbacks"),
            window_seconds=pick("window"),
            verify_timeout_seconds=pick("verify_timeout"),
            causality_window_seconds=pick("causality_window"),
            confirm_after=ConfirmAfter.model_construct(**confirm),
            tier=tier if tier_overrides is not None else None,
        )

    def mode_for(
        self, model_policy: ModelPolicy, category: str, *, alert_tier: str | None = None
    ) -> Mode:
        """The mode for an alert of ``category``: ``data_quality_mode`` for data-quality
        alerts, ``mode`` otherwise, each resolved model > tier > defaults."""
        return self.effective(model_policy, alert_tier=alert_tier).mode_for(category)


def _check_blue_green(i: int, model: ModelPolicy) -> None:
    base = ("models", i)
    if not model.service:
        raise _Located(
            (*base, "service"),
            "strategy blue-green needs service: the Service whose `slot` selector switches",
        )
    if model.slots is None:
        raise _Located(
            (*base, "slots"),
            "strategy blue-green needs slots: {blue: <Deployment>, green: <Deployment>}",
        )
    if model.health.slot_urls is None:
        raise _Located(
            (*base, "health", "slot_urls"),
            "strategy blue-green needs health.slot_urls: {blue: <url>, green: <url>} so the"
            " standby is checked before traffic switches to it",
        )


# --- loading ---------------------------------------------------------------------------


def load_policy(path: Path | None) -> Policy:
    """Read and validate the policy file; ``None`` (no file configured) is the empty policy.

    Raises ``ConfigError`` naming the file, line:column, key path and the fix.
    """
    if path is None:
        return Policy()
    try:
        raw = path.read_bytes()
    except FileNotFoundError as e:
        raise ConfigError(
            f"{path}: policy file not found: fix RECEIVER_POLICY_FILE or unset it"
            " (no policy: every alert is notified only)"
        ) from e
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the policy file: {e.strerror or e}") from e
    return parse_policy(raw, source=str(path))


def parse_policy(raw: bytes | str, *, source: str = "policy.yaml") -> Policy:
    """Validate policy text; ``source`` prefixes error positions (the file name)."""
    data = raw.encode() if isinstance(raw, str) else raw
    version = hashlib.sha256(data).hexdigest()[:12]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source}: the policy file is not UTF-8 text ({e.reason})") from e
    node, document = _parse_yaml(text, source)
    if document is None:
        document = {}
    if not isinstance(document, dict):
        line, col = _position(node)
        raise ConfigError(
            f"{source}:{line}:{col}: the policy must be a mapping with the keys defaults,"
            " tiers and models"
        )
    try:
        policy = Policy.model_validate(document)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, node, source)) from None
    policy._version = version
    return policy


def _parse_yaml(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _reject_duplicate_keys(node, source)
        document = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{mark.line + 1}:{mark.column + 1}: " if mark is not None else ""
        problem = " ".join(p for p in (e.context, e.problem) if p)
        raise ConfigError(f"{source}:{where}invalid YAML: {problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML: {e}") from None
    finally:
        loader.dispose()
    return node, document


def _reject_duplicate_keys(node: yaml.Node, source: str) -> None:
    # PyYAML keeps the last of two equal keys silently; in a policy that hides a mistake.
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    line, col = _position(key)
                    raise ConfigError(
                        f"{source}:{line}:{col}: duplicate key {key.value!r}: keep one of them"
                    )
                seen.add(key.value)
            _reject_duplicate_keys(value, source)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _reject_duplicate_keys(item, source)


def _position(node: yaml.Node | None) -> tuple[int, int]:
    if node is None:
        return (1, 1)
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def _node_at(
    root: yaml.Node | None, loc: tuple[str | int, ...], *, want_key: bool
) -> yaml.Node | None:
    """The deepest YAML node on ``loc`` (the key's node when ``want_key``, e.g. for an
    unknown key); a missing key resolves to the mapping that lacks it."""
    node = root
    for depth, part in enumerate(loc):
        last = depth == len(loc) - 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    node = key if (last and want_key) else value
                    break
            else:
                return node
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                return node
            node = node.value[part]
        else:
            return node
    return node


def _format_loc(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _allowed_keys(loc: tuple[str | int, ...]) -> list[str]:
    """Keys accepted by the mapping that holds ``loc``'s last element, for error hints."""
    model: Any = Policy
    for part in loc[:-1]:
        model = _inner_type(model, part)
        if model is None:
            return []
    if isinstance(model, type) and issubclass(model, BaseModel):
        return sorted(model.model_fields)
    return []


def _inner_type(current: Any, part: str | int) -> Any:
    if isinstance(part, int):
        args = typing.get_args(current)
        return _unwrap(args[0]) if args else None
    if isinstance(current, type) and issubclass(current, BaseModel):
        field = current.model_fields.get(part)
        return _unwrap(field.annotation) if field is not None else None
    return None


def _unwrap(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _unwrap(rest[0]) if len(rest) == 1 else annotation
    return annotation


def _format_errors(error: ValidationError, root: yaml.Node | None, source: str) -> str:
    lines: list[tuple[tuple[int, int], str]] = []
    for err in error.errors():
        loc = tuple(err["loc"])
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, _Located):
            loc = loc + cause.loc
            message = str(cause)
        elif err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc)
            hint = f"; allowed here: {', '.join(allowed)}" if allowed else ""
            message = f"unknown key {str(loc[-1])!r}{hint}"
        elif err["type"] == "missing":
            message = f"required key {str(loc[-1])!r} is missing"
        else:
            message = err["msg"].removeprefix("Value error, ")
        node = _node_at(root, loc, want_key=err["type"] == "extra_forbidden")
        position = _position(node)
        path = _format_loc(loc) or "(top level)"
        lines.append((position, f"{source}:{position[0]}:{position[1]}: {path}: {message}"))
    lines.sort(key=lambda item: item[0])
    return "\n".join(text for _, text in lines)


# --- check-policy ----------------------------------------------------------------------


def check_policy(path: Path) -> tuple[bool, str]:
    """``rollback-receiver check-policy FILE``: (True, a one-paragraph summary) or (False,
    the errors, one per line)."""
    try:
        policy = load_policy(path)
    except ConfigError as e:
        return False, str(e)
    return True, summarize(policy, source=str(path))


def summarize(policy: Policy, *, source: str = "policy") -> str:
    """One paragraph: models per strategy and per resolved mode, and the policy version."""
    if not policy.models:
        return (
            f"{source}: valid, policy version {policy.version}: no models, so every alert is"
            " notified only."
        )
    settings = [policy.effective(m) for m in policy.models]
    strategies = Counter(s.strategy.value for s in settings)
    modes = Counter(s.mode.value for s in settings)
    dq_modes = Counter(s.data_quality_mode.value for s in settings)

    def counts(counter: Counter[str], order: list[str]) -> str:
        return ", ".join(f"{counter[k]} {k}" for k in order if counter[k])

    n = len(policy.models)
    d = policy.defaults
    return (
        f"{source}: valid, policy version {policy.version}: {n} model{'s' if n != 1 else ''}"
        f" ({counts(strategies, [s.value for s in Strategy])});"
        f" mode {counts(modes, [m.value for m in Mode])};"
        f" data_quality_mode {counts(dq_modes, [m.value for m in Mode])};"
        f" defaults: cooldown {format_duration(d.cooldown)}, at most {d.max_rollbacks}"
        f" rollbacks per {format_duration(d.window)}, causality window"
        f" {format_duration(d.causality_window)}."
    )
