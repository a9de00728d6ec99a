"""Loading the policy file: YAML with positions, validation errors that name the line.

Errors are reported with the key path and the file position (``policy.yaml:12:5:
models[1].strategy: ...``) so a typo cannot silently turn automation off or on. This module
reads the file and nothing else: it never talks to the cluster, Redis or Slack.
"""

from __future__ import annotations

import hashlib
import types
import typing
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from receiver.durations import format_duration
from receiver.errors import ConfigError
from receiver.policy.schema import Mode, Policy, Strategy, _Located

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
    """One paragraph: models per strategy and per resolved mode, the policy version, and
    which strategy each model (``namespace/name``) is rolled back with."""
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

    by_strategy: dict[str, list[str]] = {}
    for model, effective in zip(policy.models, settings, strict=True):
        where = f"{model.cluster}/" if model.cluster else ""
        by_strategy.setdefault(effective.strategy.value, []).append(
            f"{where}{model.namespace}/{model.name}"
        )
    per_model = "; ".join(
        f"{s.value}: {', '.join(by_strategy[s.value])}" for s in Strategy if s.value in by_strategy
    )

    n = len(policy.models)
    d = policy.defaults
    return (
        f"{source}: valid, policy version {policy.version}: {n} model{'s' if n != 1 else ''}"
        f" ({counts(strategies, [s.value for s in Strategy])});"
        f" mode {counts(modes, [m.value for m in Mode])};"
        f" data_quality_mode {counts(dq_modes, [m.value for m in Mode])};"
        f" defaults: cooldown {format_duration(d.cooldown)}, at most {d.max_rollbacks}"
        f" rollbacks per {format_duration(d.window)}, causality window"
        f" {format_duration(d.causality_window)}. Strategy per model: {per_model}."
    )
