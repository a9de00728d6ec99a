"""The policy file's schema: which workload serves each model, how to roll it back, and when not to.

Frozen pydantic models of design.md ("Policy file"). Every key has a built-in default, so an
absent or empty file is a valid policy that knows no model (every alert is then notified
only). Unknown keys are errors. Loading with file positions is ``load``; resolving one
model's settings once per job is ``resolve``. No I/O here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    model_validator,
)

from receiver.durations import Duration

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


class HealthPaths(BaseModel):
    """HTTP routes probed to call a model healthy; Open Inference Protocol (KServe v2) by
    default, as spoken by KServe, Triton and MLServer. ``{model}`` is replaced by the
    model's name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    live: str = "/v2/health/live"
    ready: str = "/v2/health/ready"
    model_ready: str = "/v2/models/{model}/ready"
    model_metadata: str = "/v2/models/{model}"
    infer: str = "/v2/models/{model}/infer"
    dependencies: str | None = None
    """Optional route that checks the model's dependencies (a feature store); 2xx = healthy."""


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
    drills: bool = False
    """Monthly rollback drills allowed for this model (design.md, Drills)."""

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
