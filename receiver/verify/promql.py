"""PromQL surgery for confirmation: an alert's own expression, restricted to one version.

A rollback is confirmed by evaluating the expression of the alert that caused it, seeing
only the series of the version rolled back to (design.md, "Verification and
confirmation"). The expression is parsed with ``promql_parser`` (the Rust crate of the
same name, which follows Prometheus 2.45's grammar) and written back from its syntax tree
by ``_Renderer``, never edited as text. The crate's own printer is not used: it writes
label values and strings unescaped (``a"b`` comes out as ``"a"b"``, a regex ``\\.`` as
``\\.`` inside the quotes, which Prometheus rejects) and prints ``x[5m:]`` as ``x[5m]``.

**Which selectors are restricted.** A selector is restricted to the target version when
its series carry ``model_version``, which is decided from the selector alone:

1. it already has a ``model_version`` matcher (which is replaced, never doubled);
2. its metric name is a recording rule name (``level:metric:operations``) whose level
   names ``model_version`` (``namespace_model_version:...``,
   ``namespace_model_version_feature:...``); one whose level does not
   (``namespace_model:model_tier:info``, ``tier:...``) has no such label and is left
   alone, since adding the matcher would select nothing;
3. it is not a recording rule and is a per-version series of the metrics contract
   (``PER_VERSION_METRICS``, alert_rules/README.md), e.g. ``model_predictions_total``;
4. it is not a recording rule nor a per-model series of the contract (``model_info``,
   ``model_slo_*``: per model, possibly recorded without a version) and it has a matcher
   on one of the model's labels (``namespace``, ``model``): a hand-written selector of
   the model's own raw series, such as ``rate(errors_total{model="fraud-scorer"}[5m])``.

A restricted selector also gets an equality matcher for each of the model's labels
(``namespace``, ``model``), added beside any matcher it has on them: a version string
such as ``v2`` is not unique across models, and without the pin a breach of another
model's ``v2`` would count. A selector the rules leave alone keeps its text; the joins of
the alert (``and on (namespace, model)``) restrict it as they always did.

**Range window.** ``range_window_seconds`` says how long the target must have served
before the restricted series are its own: the largest range (offsets and subqueries
included) over the selectors the rules above restrict, where a selector of a recording
rule Prometheus runs also reads back the window of that rule's expression (followed
through the recording rules it reads, the same test applied to their selectors). The
recording rules are passed in (``confirmation.Confirmer`` reads them from Prometheus's
``/api/v1/rules``); one not passed counts the window its name states
(``...:ratio_rate5m``: 5m).

**Data checks.** "No series" from the restricted expression only means "no breach" when
the target has data, so ``restrict`` also returns the checks that must each find series
(``Restriction.data_checks``): every restricted selector as written (a range selector
counted with ``count_over_time``), and every right-hand operand of ``and`` that reads a
restricted selector: these are the alerts' minimum-traffic guards (alert_rules/README.md,
"Minimum traffic"), so a target with too little traffic for the alert to judge it has no
data rather than no breach. Selectors inside a subquery are checked at the evaluation
time only.

What this module must not do: I/O. It is pure; ``confirm`` evaluates what it builds.

Long because it writes the syntax tree back itself (the parser's printer loses escapes
and subquery steps); that printer must stay beside the restriction it serves.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import promql_parser as pp

from receiver.durations import format_duration, parse_duration
from receiver.errors import PermanentError, truncate

MODEL_VERSION_LABEL = "model_version"
# The labels that identify a model; confirmation pins each on the restricted selectors.
MODEL_LABELS = ("namespace", "model")
# How many recording rules deep a range window is followed (a rule reading a rule...).
MAX_RECORDING_DEPTH = 16

# The metrics contract (alert_rules/README.md): series a model server exports per version.
PER_VERSION_METRICS = frozenset(
    {
        "model_predictions_total",
        "model_prediction_duration_seconds_bucket",
        "model_prediction_duration_seconds_sum",
        "model_prediction_duration_seconds_count",
        "model_labeled_predictions_total",
        "model_labeled_predictions_correct_total",
        "model_accuracy_ratio",
        "model_accuracy_evaluated_predictions",
        "model_feature_missing_total",
        "model_feature_observations_total",
        "model_feature_reference_ratio",
    }
)
# Per model, not per version: the tier and the SLO overrides, which a rule file may record
# with only namespace and model (README, "Tier and per-model SLOs").
PER_MODEL_METRICS = frozenset(
    {"model_info", "model_slo_accuracy_ratio", "model_slo_latency_p99_seconds"}
)

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_LEVEL_HAS_VERSION = re.compile(r"(?:^|_)model_version(?:_|$)")
# The window at the end of a recording rule's operations: rate5m, ratio_rate5m, increase1h30m.
_RECORDED_WINDOW = re.compile(r"[a-z]((?:\d+(?:ms|[smhdwy]))+)$")
# The binding's enums compare but do not hash: a list of pairs, not a dict.
_MATCH_OPS = (
    (pp.MatchOp.Equal, "="),
    (pp.MatchOp.NotEqual, "!="),
    (pp.MatchOp.Re, "=~"),
    (pp.MatchOp.NotRe, "!~"),
)


class ConfirmationError(PermanentError):
    """Confirmation cannot be attempted: the alert or its expression is unusable."""


@dataclass(frozen=True)
class Restriction:
    """An expression restricted to one version, and what must have data to trust it.

    ``query`` is the restricted expression; ``selectors`` the restricted selectors as
    written in it; ``data_checks`` instant-vector expressions that must each return at
    least one series (see the module docstring).
    """

    query: str
    selectors: tuple[str, ...]
    data_checks: tuple[str, ...]


# --- public API -----------------------------------------------------------------------


def extract_expr(generator_url: str) -> str:
    """The alert's expression from its ``generatorURL`` (``g0.expr``, URL-decoded).

    Prometheus links each alert to its graph page with the expression as ``g0.expr``;
    an alert from another source (or a rule whose link was rewritten) has none, and then
    cannot be confirmed automatically.
    """
    if not generator_url or not generator_url.strip():
        raise ConfirmationError(
            "the alert has no generatorURL: cannot read its expression; confirm by hand"
        )
    try:
        query = urlsplit(generator_url.strip()).query
    except ValueError as e:
        raise ConfirmationError(
            f"the alert's generatorURL is not a URL ({truncate(generator_url, 200)!r}): {e}"
        ) from e
    values = parse_qs(query, keep_blank_values=True).get("g0.expr")
    if not values:
        raise ConfirmationError(
            f"the alert's generatorURL {truncate(generator_url, 200)!r} has no g0.expr "
            "parameter: it does not link to a Prometheus rule expression"
        )
    expr = values[0].strip()
    if not expr:
        raise ConfirmationError(
            f"the alert's generatorURL {truncate(generator_url, 200)!r} has an empty g0.expr"
        )
    return expr


def restrict(expr: str, version: str, model_labels: Mapping[str, str]) -> Restriction:
    """Restrict ``expr`` to ``version`` of the model named by ``model_labels``.

    Raises ``ConfirmationError`` when the expression does not parse, uses syntax
    Prometheus 2 cannot read back, or reads no per-version series of the model (then
    restricting it would prove nothing).
    """
    if not version:
        raise ConfirmationError("no target version to restrict the expression to")
    for name, value in model_labels.items():
        if not _LABEL_NAME.match(name) or name in ("__name__", MODEL_VERSION_LABEL):
            raise ConfirmationError(f"{name!r} cannot identify the model: not a usable label")
        if not value:
            raise ConfirmationError(f"the model's label {name!r} is empty")
    renderer = _Renderer(version, dict(model_labels))
    query = renderer.render(parse(expr))
    if not renderer.selectors:
        raise ConfirmationError(
            f"no selector of {truncate(expr, 200)!r} reads per-version series of the model "
            f"({_labels_text(model_labels)}): nothing to restrict to {version}"
        )
    checks = [*renderer.selector_checks, *renderer.guards]
    return Restriction(
        query=query,
        selectors=tuple(dict.fromkeys(renderer.selectors)),
        data_checks=tuple(dict.fromkeys(checks)),
    )


def restrict_to_version(expr: str, version: str, model_labels: Mapping[str, str]) -> str:
    """``expr`` with ``model_version="<version>"`` on every selector of per-version series."""
    return restrict(expr, version, model_labels).query


def presence_query(checks: tuple[str, ...] | list[str], label: str = "check") -> str:
    """One query answering, for each check, whether it returns series.

    Each check ``i`` becomes ``label_replace(count(<check>), "<label>", "<i>", "", "")``
    and they are joined with ``or``: the result has one series per check that found
    data, labelled with its index, valued with its series count.
    """
    if not checks:
        raise ValueError("no checks to combine")
    parts = [f'label_replace(count({c}), "{label}", "{i}", "", "")' for i, c in enumerate(checks)]
    return " or ".join(parts)


def range_window_seconds(
    expr: str,
    recording_rules: Mapping[str, Sequence[str]] | None = None,
    *,
    model_labels: Collection[str] = MODEL_LABELS,
) -> float:
    """How far back from the evaluation time the series the confirmation restricts are read.

    The confirmation waits this long (plus the rule's ``for:``) after the switch, so that
    everything it restricts to the target was computed from the target alone. Only the
    selectors the restriction restricts count (rules 1-4 of the module docstring, with
    ``model_labels`` the names identifying a model): a model-wide join such as
    ``namespace_model:model_tier:info`` (recorded over ``[1h]``) does not depend on the
    version serving, and does not count.

    A counted selector reads back its range, plus its offset: ``x[5m]`` 5m, ``x[5m] offset
    15m`` 20m; a subquery ``rate(x[5m])[30m:1m]`` reads 30m plus the 5m inside it. A
    selector naming a recording rule of ``recording_rules`` (name -> the expressions it is
    recorded from, one per group defining it) also reads back the window of those
    expressions (the largest), found the same way among their selectors and through the
    recording rules they read, down to ``MAX_RECORDING_DEPTH`` rules; inside a recording
    rule every raw series counts except the per-model ones, since the rule aggregates all
    models. A recording rule that is not in ``recording_rules``, that is reached again
    through itself (a cycle) or deeper than ``MAX_RECORDING_DEPTH``, or whose expression
    does not parse, counts the window its name states (``level:metric:operations``,
    Prometheus's naming practice): ``...:ratio_rate5m`` 5m, ``...:increase30m`` 30m, and
    none (0s) when its name states none. An instant selector of a raw series reads 0s back
    here (its lookback is Prometheus's business).

    An expression with no selector the restriction restricts cannot be confirmed
    (``restrict`` refuses it, and the confirmation says so when due); its window is then
    the largest over every selector. Raises ``ConfirmationError`` when ``expr`` does not
    parse.
    """
    tree = parse(expr)
    rules = recording_rules or {}
    labels = frozenset(model_labels)
    window = _Window(rules, labels, restricted_only=True).of(tree, inside=False, path=frozenset())
    if window is None:
        window = _Window(rules, labels, restricted_only=False).of(
            tree, inside=False, path=frozenset()
        )
    return window or 0.0


def parse(expr: str) -> Any:
    """The syntax tree of ``expr``; ``ConfirmationError`` naming the parser's complaint."""
    try:
        return pp.parse(expr)
    except (ValueError, TypeError) as e:
        raise ConfirmationError(
            f"the expression does not parse as PromQL ({truncate(str(e), 200)}): "
            f"{truncate(expr, 300)!r}"
        ) from e


def render(node: Any) -> str:
    """PromQL text for a syntax tree from ``parse``, nothing restricted (as Prometheus reads it)."""
    return _Renderer(None, {}).render(node)


# --- rendering ------------------------------------------------------------------------


class _Renderer:
    """Writes a ``promql_parser`` tree back to PromQL, restricting selectors on the way.

    With ``version`` None nothing is restricted. ``selectors``, ``selector_checks`` and
    ``guards`` collect what ``Restriction`` reports.
    """

    def __init__(self, version: str | None, model_labels: dict[str, str]) -> None:
        self.version = version
        self.model_labels = model_labels
        self.selectors: list[str] = []
        self.selector_checks: list[str] = []
        self.guards: list[str] = []

    def render(self, node: Any) -> str:
        if isinstance(node, pp.VectorSelector):
            return self._selector(node, None)
        if isinstance(node, pp.MatrixSelector):
            return self._selector(node.vector_selector, node.range)
        if isinstance(node, pp.Call):
            return f"{node.func.name}({', '.join(self.render(a) for a in node.args)})"
        if isinstance(node, pp.AggregateExpr):
            return self._aggregate(node)
        if isinstance(node, pp.BinaryExpr):
            return self._binary(node)
        if isinstance(node, pp.UnaryExpr):
            inner = self.render(node.expr)
            return f"- {inner}" if inner.startswith("-") else f"-{inner}"
        if isinstance(node, pp.ParenExpr):
            return f"({self.render(node.expr)})"
        if isinstance(node, pp.SubqueryExpr):
            step = _duration(node.step) if node.step is not None else ""
            text = f"{self.render(node.expr)}[{_duration(node.range)}:{step}]"
            return text + _modifiers(node.at, node.offset)
        if isinstance(node, pp.NumberLiteral):
            return _number(node.val)
        if isinstance(node, pp.StringLiteral):
            return _quote(node.val)
        raise ConfirmationError(f"unsupported PromQL node {type(node).__name__}")

    def _aggregate(self, node: Any) -> str:
        text = str(node.op)
        if node.modifier is not None:
            keyword = "by" if node.modifier.type == pp.AggModifierType.By else "without"
            text += f" {keyword} ({', '.join(node.modifier.labels)}) "
        args = [self.render(node.expr)]
        if node.param is not None:
            args.insert(0, self.render(node.param))
        return f"{text}({', '.join(args)})"

    def _binary(self, node: Any) -> str:
        op = str(node.op)
        lhs = self.render(node.lhs)
        before = len(self.selectors)
        rhs = self.render(node.rhs)
        if op == "and" and len(self.selectors) > before:
            self.guards.append(rhs)
        parts = [lhs, op]
        modifier = node.modifier
        if modifier is not None:
            fill = modifier.fill_values
            if fill is not None and (fill.lhs is not None or fill.rhs is not None):
                raise ConfirmationError("fill() in vector matching is not PromQL of Prometheus 2")
            if modifier.return_bool:
                parts.append("bool")
            if modifier.matching is not None:
                keyword = (
                    "on" if modifier.matching.type == pp.LabelModifierType.Include else "ignoring"
                )
                parts.append(f"{keyword} ({', '.join(modifier.matching.labels)})")
            if modifier.card == pp.VectorMatchCardinality.ManyToOne:
                parts.append(f"group_left ({', '.join(modifier.group_labels or [])})")
            elif modifier.card == pp.VectorMatchCardinality.OneToMany:
                parts.append(f"group_right ({', '.join(modifier.group_labels or [])})")
        parts.append(rhs)
        return " ".join(parts)

    def _selector(self, node: Any, range_: timedelta | None) -> str:
        if node.matchers.or_matchers:
            raise ConfirmationError("'or' inside a selector's braces is not PromQL of Prometheus 2")
        matchers = [(m.name, _match_op(m.op), m.value) for m in node.matchers.matchers]
        restricted = self.version is not None and self._carries_version(node.name, matchers)
        if restricted:
            assert self.version is not None
            matchers = [m for m in matchers if m[0] != MODEL_VERSION_LABEL]
            for name, value in self.model_labels.items():
                if (name, "=", value) not in matchers:
                    matchers.append((name, "=", value))
            matchers.append((MODEL_VERSION_LABEL, "=", self.version))
        text = node.name or ""
        if matchers or not text:
            text += "{" + ", ".join(f"{n}{op}{_quote(v)}" for n, op, v in matchers) + "}"
        if range_ is not None:
            text += f"[{_duration(range_)}]"
        text += _modifiers(node.at, node.offset)
        if restricted:
            self.selectors.append(text)
            self.selector_checks.append(text if range_ is None else f"count_over_time({text})")
        return text

    def _carries_version(self, name: str | None, matchers: list[tuple[str, str, str]]) -> bool:
        return _carries_version(name, {m[0] for m in matchers}, self.model_labels.keys())


def _carries_version(
    name: str | None, labels: AbstractSet[str], model_labels: AbstractSet[str] | None
) -> bool:
    """Rules 1-4 of the module docstring: are the selector's series per version?

    ``labels`` are the names the selector has matchers on. ``model_labels`` None reads a
    selector inside a recording rule's expression: a recording rule aggregates every
    model, so its raw series carry no matcher on the model's labels, and rule 4 counts
    any raw series that is not per model.
    """
    if MODEL_VERSION_LABEL in labels:
        return True
    if name is not None and ":" in name:
        return bool(_LEVEL_HAS_VERSION.search(name.split(":", 1)[0]))
    if name in PER_VERSION_METRICS:
        return True
    if name in PER_MODEL_METRICS:
        return False
    return model_labels is None or bool(labels & model_labels)


def _match_op(op: Any) -> str:
    for known, text in _MATCH_OPS:
        if op == known:
            return text
    raise ConfirmationError(f"unsupported label matcher {op!r}")


class _Window:
    """How far back the selectors that count read; see ``range_window_seconds``.

    With ``restricted_only`` a selector counts when ``_carries_version`` says the
    restriction would restrict it (inside a recording rule's expression: the same test,
    read as ``_carries_version`` says for recording rules); otherwise every selector counts.
    ``of`` answers None when no selector counts.
    """

    def __init__(
        self,
        recording_rules: Mapping[str, Sequence[str]],
        model_labels: AbstractSet[str],
        *,
        restricted_only: bool,
    ) -> None:
        self.recording_rules = recording_rules
        self.model_labels = model_labels
        self.restricted_only = restricted_only
        self._trees: dict[str, list[Any] | None] = {}
        # Windows of recording rules followed to the end (no cycle or depth cut): they do
        # not depend on the path that reached them, so each is computed once.
        self._done: dict[str, float] = {}
        self._cuts = 0

    def of(self, node: Any, *, inside: bool, path: frozenset[str]) -> float | None:
        if isinstance(node, pp.VectorSelector):
            return self._selector(node, None, inside=inside, path=path)
        if isinstance(node, pp.MatrixSelector):
            return self._selector(node.vector_selector, node.range, inside=inside, path=path)
        if isinstance(node, pp.SubqueryExpr):
            inner = self.of(node.expr, inside=inside, path=path)
            if inner is None:
                return None
            return node.range.total_seconds() + _offset_seconds(node.offset) + inner
        children: list[Any] = []
        if isinstance(node, pp.Call):
            children = list(node.args)
        elif isinstance(node, pp.AggregateExpr):
            children = [node.expr] + ([node.param] if node.param is not None else [])
        elif isinstance(node, pp.BinaryExpr):
            children = [node.lhs, node.rhs]
        elif isinstance(node, pp.UnaryExpr | pp.ParenExpr):
            children = [node.expr]
        windows = [self.of(c, inside=inside, path=path) for c in children]
        return max((w for w in windows if w is not None), default=None)

    def _selector(
        self, node: Any, range_: timedelta | None, *, inside: bool, path: frozenset[str]
    ) -> float | None:
        name = node.name
        if self.restricted_only:
            labels = {m.name for m in node.matchers.matchers}
            if not _carries_version(name, labels, None if inside else self.model_labels):
                return None
        own = range_.total_seconds() if range_ is not None else 0.0
        return own + _offset_seconds(node.offset) + self._recorded(name, path)

    def _recorded(self, name: str | None, path: frozenset[str]) -> float:
        """The window of the recording rule ``name`` reads: its expressions' when known."""
        if name is None:
            return 0.0
        if name in self._done:
            return self._done[name]
        trees = self._parsed(name)
        if trees is None:
            return _named_window(name)
        if name in path or len(path) >= MAX_RECORDING_DEPTH:
            self._cuts += 1
            return _named_window(name)
        cuts = self._cuts
        inner = [self.of(t, inside=True, path=path | {name}) for t in trees]
        window = max((w for w in inner if w is not None), default=0.0)
        if self._cuts == cuts:
            self._done[name] = window
        return window

    def _parsed(self, name: str) -> list[Any] | None:
        """The trees of the recording rule ``name``; None when unknown or not parsable."""
        if name not in self._trees:
            exprs = self.recording_rules.get(name)
            try:
                self._trees[name] = [pp.parse(e) for e in exprs] if exprs else None
            except (ValueError, TypeError):
                self._trees[name] = None
        return self._trees[name]


def _named_window(name: str) -> float:
    """The window a recording rule's name states (``...:ratio_rate5m``: 5m), else 0."""
    if ":" not in name:
        return 0.0
    match = _RECORDED_WINDOW.search(name.rsplit(":", 1)[1])
    return parse_duration(match.group(1)) if match else 0.0


def _offset_seconds(offset: timedelta | None) -> float:
    return max(offset.total_seconds(), 0.0) if offset is not None else 0.0


def _modifiers(at: Any, offset: timedelta | None) -> str:
    text = ""
    if at is not None:
        if at.type == pp.AtModifierType.Start:
            text += " @ start()"
        elif at.type == pp.AtModifierType.End:
            text += " @ end()"
        else:
            text += f" @ {at.at.timestamp():.3f}"
    if offset is not None:
        seconds = offset.total_seconds()
        sign = "-" if seconds < 0 else ""
        text += f" offset {sign}{_duration(timedelta(seconds=abs(seconds)))}"
    return text


def _duration(value: timedelta) -> str:
    return format_duration(value.total_seconds())


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _quote(value: str) -> str:
    # A JSON string is a valid PromQL (Go) string literal: \" \\ \n \t \uXXXX escapes only,
    # and non-ASCII characters stay as they are (PromQL strings are UTF-8).
    return json.dumps(value, ensure_ascii=False)


def _labels_text(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in labels.items()) or "no labels"
