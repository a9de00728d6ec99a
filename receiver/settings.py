"""Settings from the environment (names as users type them), each also a ``serve`` option
except secrets.

Secrets (tokens) come from the environment or from a file named by ``<VARIABLE>_FILE``
(a mounted Kubernetes Secret), never from argv; they are trimmed at load, since a Secret
made with ``echo`` ends in a newline. Built once by ``cli`` and passed down; nothing reads
the environment at import time.
"""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, get_args

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from receiver.durations import Duration
from receiver.errors import ConfigError

ENV_PREFIX = "RECEIVER_"

# A Slack user id (U…, or W… on Enterprise Grid) or user group id (S…).
_SLACK_ALLOWED_RE = re.compile(r"^[UWS][A-Z0-9]{1,30}$")


class LogFormat(StrEnum):
    """How log lines are written: one JSON object per line for collectors, or text for people."""

    JSON = "json"
    TEXT = "text"


class Settings(BaseSettings):
    """Every knob of the receiver. Durations accept Prometheus syntax (``30s``, ``10m``)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        use_attribute_docstrings=True,
        populate_by_name=True,
        frozen=True,
    )

    host: str = "0.0.0.0"  # noqa: S104 - a server in a pod listens on every interface
    """Address to listen on."""

    port: int = Field(8080, ge=0, le=65535)
    """TCP port for the webhook, API, probes and /metrics."""

    namespace: str | None = None
    """The receiver's own namespace, where its state ConfigMap lives. Unset: the service
    account's namespace in a pod, else the kubeconfig context's, else ``default``."""

    state_configmap: str = Field("rollback-receiver-state", min_length=1, max_length=253)
    """ConfigMap in the receiver's namespace holding the global pause, so a pause survives a
    Redis flush and a restart. Created by the receiver when missing."""

    webhook_token: SecretStr
    """Bearer token Alertmanager must send (``http_config.authorization``). Required: an
    unauthenticated webhook would let anyone roll production back."""

    admin_token: SecretStr | None = None
    """Bearer token for the API and the status page. Unset disables those routes (403)."""

    redis_url: str | None = None
    """Redis for dedup, the work queue, leases and history. Unset: an embedded in-process
    store, for a single replica only."""

    policy_file: Path | None = None
    """YAML policy mapping models to workloads and strategies. Unset: no model is known,
    every alert is notified only."""

    prometheus_url: str | None = None
    """Prometheus base URL used to confirm a rollback by re-evaluating the alert."""

    dedup_ttl_seconds: Duration = Field(600.0, alias="RECEIVER_DEDUP_TTL", gt=0)
    """How long a delivered (fingerprint, startsAt, status) is remembered. 10m: shorter than
    the route's 15m repeat_interval, so a resend after a lost job drives it again."""

    job_lease_seconds: Duration = Field(30.0, alias="RECEIVER_JOB_LEASE", gt=0)
    """A job or workload lease not renewed within this is taken over by another worker."""

    readiness_interval_seconds: Duration = Field(60.0, alias="RECEIVER_READINESS_INTERVAL", ge=1)
    """How often each model of the policy is asked "could you be rolled back now?" (by one
    replica at a time, under a lease). 1m: a broken rollback path is found long before the
    15m of the ``ModelRollbackNotReady`` alert, at a few API requests per model and minute."""

    max_body_bytes: int = Field(1024 * 1024, gt=0)
    """Largest request body accepted (413 above). 1 MiB holds thousands of alerts."""

    key_prefix: str = "rollback-receiver:"
    """Prefix of every Redis key, so several receivers can share one Redis."""

    audit_retention_seconds: Duration = Field(30 * 86400.0, alias="RECEIVER_AUDIT_RETENTION", gt=0)
    """How long incidents stay queryable in Redis (30d). The durable record is the log and
    the Kubernetes Events."""

    dry_run: bool = False
    """Decide and record what would be done, change nothing in the cluster."""

    log_format: LogFormat = LogFormat.JSON
    """``json`` (one object per line) or ``text``."""

    log_level: str = "INFO"
    """Python logging level name."""

    slack_channel: str | None = None
    """Default channel for incident messages when the model's policy names none."""

    slack_api_url: str = "https://slack.com/api/"
    """Slack Web API base URL (tests point it at a local stand-in)."""

    slack_allowed_users: Annotated[frozenset[str], NoDecode] = frozenset()
    """Who may press the buttons (comma-separated): Slack user ids (``U…``, ``W…``) and user
    group ids (``S…``, whose members may). Unset: nobody (the buttons answer a refusal)."""

    slack_bot_token: SecretStr | None = Field(None, alias="SLACK_BOT_TOKEN")
    """Bot token for chat.postMessage/chat.update. Unset: notifications go to the log."""

    slack_signing_secret: SecretStr | None = Field(None, alias="SLACK_SIGNING_SECRET")
    """Verifies interactive requests from Slack (``POST /slack/actions``). Unset: the route
    answers 403 and acts on nothing; Socket Mode needs none (the app token authenticates)."""

    slack_app_token: SecretStr | None = Field(None, alias="SLACK_APP_TOKEN")
    """App-level token for Socket Mode, for teams without public ingress."""

    kubeconfig: Path | None = Field(None, alias="KUBECONFIG")
    """Kubeconfig file; unset: in-cluster service account, else ~/.kube/config."""

    single_replica: bool = False
    """Accept the embedded store inside a cluster (``--single-replica``)."""

    worker_count: int = Field(16, ge=1, le=256)
    """Models acted on at once per replica; the jobs of one model run one after another
    under its lease. 16: verification holds a model for its rollout and probes (seconds),
    so a storm over many models needs several in flight; each costs a coroutine, not a
    thread."""

    @field_validator("slack_allowed_users", mode="before")
    @classmethod
    def _split_users(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(u.strip() for u in value.split(",") if u.strip())
        return value

    @field_validator("slack_allowed_users")
    @classmethod
    def _check_users(cls, value: frozenset[str]) -> frozenset[str]:
        wrong = sorted(u for u in value if not _SLACK_ALLOWED_RE.fullmatch(u))
        if wrong:
            raise ValueError(
                f"RECEIVER_SLACK_ALLOWED_USERS has {', '.join(repr(u[:40]) for u in wrong)}:"
                " give Slack user ids (U…, W…) or user group ids (S…), not names"
            )
        return value

    @field_validator(
        "webhook_token",
        "admin_token",
        "slack_bot_token",
        "slack_signing_secret",
        "slack_app_token",
    )
    @classmethod
    def _trim_secret(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        """Trimmed; an empty optional secret is unset, an empty webhook token an error."""
        if value is None:
            return None
        trimmed = value.get_secret_value().strip()
        if trimmed:
            return SecretStr(trimmed)
        if info.field_name == "webhook_token":
            raise ValueError(
                "RECEIVER_WEBHOOK_TOKEN is empty: set it to the token Alertmanager sends"
            )
        return None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _SecretFiles(settings_cls))

    @property
    def embedded(self) -> bool:
        """True when no Redis URL is set and the in-process store is used."""
        return not self.redis_url


def is_secret(field: FieldInfo) -> bool:
    """True for tokens: never a command-line option, never logged."""
    return field.annotation is SecretStr or SecretStr in get_args(field.annotation)


def env_name(name: str) -> str:
    """The environment variable of the setting ``name`` (a field name or its alias)."""
    field = Settings.model_fields.get(name)
    if field is None:
        return name  # already an alias, which is the variable's name
    return field.alias or ENV_PREFIX + name.upper()


def field_name(loc: str) -> str:
    """The field behind a validation error's location (a field name or an alias)."""
    for name, field in Settings.model_fields.items():
        if loc in (name, field.alias):
            return name
    return loc


def describe_errors(error: ValidationError) -> list[str]:
    """One line per invalid setting, naming its variable (and ``_FILE`` for secrets)."""
    lines = []
    for err in error.errors():
        name = field_name(str(err["loc"][0])) if err["loc"] else ""
        env = env_name(name)
        field = Settings.model_fields.get(name)
        where = f"{env} or {env}_FILE" if field is not None and is_secret(field) else env
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"setting {name} ({where}): {message}")
    return lines


class _SecretFiles(PydanticBaseSettingsSource):
    """``RECEIVER_WEBHOOK_TOKEN_FILE=/path``: a secret read from a file (a mounted Secret)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            if not is_secret(field):
                continue
            env = env_name(name)
            path = os.environ.get(f"{env}_FILE")
            if not path:
                continue
            if os.environ.get(env):
                raise ConfigError(f"both {env} and {env}_FILE are set: keep one")
            try:
                out[field.alias or name] = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError(
                    f"{env}_FILE={path}: cannot read the secret ({e}); mount the Secret there"
                    f" or set {env}"
                ) from e
        return out
