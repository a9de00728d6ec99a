"""The API server's field validation for the kinds served: names, metadata, Events, and 422 bodies.

Messages are k8s.io/apimachinery's (`validation.IsDNS1123Subdomain`, `IsQualifiedName`, ...)
word for word, so a refusal reads as the real one (fixtures 052, 088, 090, 091). Only the rules
a client of these kinds can trip over are here; each names where it comes from.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

# ---------------------------------------------------------------- apimachinery messages

DNS1123_SUBDOMAIN_MAX = 253
DNS1123_LABEL_MAX = 63
QUALIFIED_NAME_MAX = 63
LABEL_VALUE_MAX = 63
MAX_GENERATED_NAME = 63 - 5  # names.SimpleNameGenerator: prefix cut to 58, then 5 characters

_DNS1123_SUBDOMAIN_FMT = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character"
)
_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character"
)
_DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
_DNS1035_LABEL_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character"
)
_QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QUALIFIED_NAME_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character"
)
_LABEL_VALUE_FMT = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character"
)
_CONFIG_KEY_FMT = "[-._a-zA-Z0-9]+"
_CONFIG_KEY_MSG = "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"


def _regex_error(message: str, fmt: str, *examples: str) -> str:
    """validation.RegexError, including its double spaces between examples."""
    if not examples:
        return f"{message} (regex used for validation is '{fmt}')"
    listed = " or ".join(f"'{e}', " for e in examples)
    return f"{message} (e.g. {listed}regex used for validation is '{fmt}')"


def _max_len(n: int) -> str:
    return f"must be no more than {n} characters"


def _matches(fmt: str, value: str) -> bool:
    return re.fullmatch(fmt, value) is not None


def is_dns1123_subdomain(value: str) -> list[str]:
    errors = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        errors.append(_max_len(DNS1123_SUBDOMAIN_MAX))
    if not _matches(_DNS1123_SUBDOMAIN_FMT, value):
        errors.append(_regex_error(_DNS1123_SUBDOMAIN_MSG, _DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errors


def is_dns1123_label(value: str) -> list[str]:
    errors = []
    if len(value) > DNS1123_LABEL_MAX:
        errors.append(_max_len(DNS1123_LABEL_MAX))
    if not _matches(_DNS1123_LABEL_FMT, value):
        errors.append(_regex_error(_DNS1123_LABEL_MSG, _DNS1123_LABEL_FMT, "my-name", "123-abc"))
    return errors


def is_dns1035_label(value: str) -> list[str]:
    errors = []
    if len(value) > DNS1123_LABEL_MAX:
        errors.append(_max_len(DNS1123_LABEL_MAX))
    if not _matches(_DNS1035_LABEL_FMT, value):
        errors.append(_regex_error(_DNS1035_LABEL_MSG, _DNS1035_LABEL_FMT, "my-name", "abc-123"))
    return errors


def is_qualified_name(value: str) -> list[str]:
    """`prefix/name` as label and annotation keys and `reportingController` are checked."""
    errors: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            errors.extend(f"prefix part {m}" for m in is_dns1123_subdomain(prefix))
    else:
        return [
            "a qualified name "
            + _regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > QUALIFIED_NAME_MAX:
        errors.append(f"name part {_max_len(QUALIFIED_NAME_MAX)}")
    if not _matches(_QUALIFIED_NAME_FMT, name):
        errors.append(
            "name part "
            + _regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
        )
    return errors


def is_label_value(value: str) -> list[str]:
    errors = []
    if len(value) > LABEL_VALUE_MAX:
        errors.append(_max_len(LABEL_VALUE_MAX))
    if not _matches(_LABEL_VALUE_FMT, value):
        errors.append(
            _regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345")
        )
    return errors


def is_config_map_key(value: str) -> list[str]:
    errors = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        errors.append(_max_len(DNS1123_SUBDOMAIN_MAX))
    if not _matches(_CONFIG_KEY_FMT, value):
        errors.append(
            _regex_error(_CONFIG_KEY_MSG, _CONFIG_KEY_FMT, "key.name", "KEY_NAME", "key-name")
        )
    if value == ".":
        errors.append("must not be '.'")
    elif value == "..":
        errors.append("must not be '..'")
    elif value.startswith(".."):
        errors.append("must not start with '..'")
    return errors


def _mask_trailing_dash(name: str) -> str:
    """apimachinery's maskTrailingDash: a generateName may end in '-' (it drops two characters)."""
    if len(name) > 1 and name.endswith("-"):
        return name[:-2] + "a"
    return name


def name_is_dns_subdomain(name: str, prefix: bool) -> list[str]:
    return is_dns1123_subdomain(_mask_trailing_dash(name) if prefix else name)


def name_is_dns_label(name: str, prefix: bool) -> list[str]:
    return is_dns1123_label(_mask_trailing_dash(name) if prefix else name)


def name_is_dns1035_label(name: str, prefix: bool) -> list[str]:
    return is_dns1035_label(_mask_trailing_dash(name) if prefix else name)


# Which name rule each kind's ObjectMeta validation uses (pkg/apis/*/validation).
NAME_RULES = {
    "Namespace": name_is_dns_label,
    "Service": name_is_dns1035_label,
}


def generated_name(prefix: str, suffix: str) -> str:
    """names.SimpleNameGenerator: the prefix cut to 58 characters, plus 5 random ones."""
    return prefix[:MAX_GENERATED_NAME] + suffix


# ---------------------------------------------------------------- field errors and Status


class GoLiteral(str):
    """A value field.Error prints as it is (e.g. `0x0`, Go's %#v of a uint64 zero)."""

    __slots__ = ()


@dataclass(frozen=True)
class FieldError:
    """One `field.Error`: its type decides the cause reason and how the message reads."""

    type: str  # "Invalid", "Required", "Forbidden", "NotSupported"
    field: str
    value: Any = None
    detail: str = ""

    REASONS = {
        "Invalid": ("FieldValueInvalid", "Invalid value"),
        "Required": ("FieldValueRequired", "Required value"),
        "Forbidden": ("FieldValueForbidden", "Forbidden"),
        "NotSupported": ("FieldValueNotSupported", "Unsupported value"),
    }

    @property
    def reason(self) -> str:
        return self.REASONS[self.type][0]

    def body(self) -> str:
        """field.Error.ErrorBody: `Invalid value: "x": detail`, `Required value`, ..."""
        text = self.REASONS[self.type][1]
        if self.type in ("Invalid", "NotSupported"):
            text += f": {go_value(self.value)}"
        if self.detail:
            text += f": {self.detail}"
        return text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"


def invalid_value(field: str, value: Any, detail: str) -> FieldError:
    return FieldError("Invalid", field, value, detail)


def required(field: str, detail: str = "") -> FieldError:
    return FieldError("Required", field, None, detail)


def go_value(value: Any) -> str:
    """How field.Error prints a value: %q for strings, %v for numbers, %#v for the rest."""
    if isinstance(value, GoLiteral):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        inner = ", ".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in sorted(value.items()))
        return f"map[string]string{{{inner}}}"
    return json.dumps(value)


def invalid_status(
    qualified_kind: str,
    name: str,
    errors: list[FieldError],
    *,
    group: str = "",
    kind: str = "",
) -> dict[str, Any]:
    """errors.NewInvalid: 422, one cause per error, the aggregate in the message (fixture 090)."""
    rendered: list[str] = []
    for error in errors:
        text = str(error)
        if text not in rendered:
            rendered.append(text)
    summary = rendered[0] if len(rendered) == 1 else "[" + ", ".join(rendered) + "]"
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    details["kind"] = kind
    details["causes"] = [
        {"reason": e.reason, "message": e.body(), "field": e.field} for e in errors
    ]
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'{qualified_kind} "{name}" is invalid: {summary}',
        "reason": "Invalid",
        "details": details,
        "code": 422,
    }


# ---------------------------------------------------------------- ObjectMeta


def validate_object_meta(
    kind: str, metadata: dict[str, Any], *, namespaced: bool
) -> list[FieldError]:
    """ValidateObjectMeta: name, generateName (the kind's rule), namespace, labels, annotations."""
    errors: list[FieldError] = []
    name_rule = NAME_RULES.get(kind, name_is_dns_subdomain)
    generate_name = metadata.get("generateName") or ""
    if generate_name:
        errors.extend(
            invalid_value("metadata.generateName", generate_name, message)
            for message in name_rule(generate_name, True)
        )
    name = metadata.get("name") or ""
    if not name:
        errors.append(required("metadata.name", "name or generateName is required"))
    else:
        errors.extend(
            invalid_value("metadata.name", name, message) for message in name_rule(name, False)
        )
    namespace = metadata.get("namespace") or ""
    if namespaced:
        if not namespace:
            errors.append(required("metadata.namespace"))
        else:
            errors.extend(
                invalid_value("metadata.namespace", namespace, message)
                for message in name_is_dns_label(namespace, False)
            )
    elif namespace:
        errors.append(
            FieldError("Forbidden", "metadata.namespace", None, "not allowed on this type")
        )
    errors.extend(validate_labels(metadata.get("labels") or {}, "metadata.labels"))
    errors.extend(validate_annotations(metadata.get("annotations") or {}, "metadata.annotations"))
    return errors


def validate_labels(labels: dict[str, Any], path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    for key, value in labels.items():
        errors.extend(invalid_value(path, key, m) for m in is_qualified_name(key))
        text = value if isinstance(value, str) else str(value)
        errors.extend(invalid_value(path, text, m) for m in is_label_value(text))
    return errors


def validate_annotations(annotations: dict[str, Any], path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    for key in annotations:
        errors.extend(invalid_value(path, key, m) for m in is_qualified_name(key.lower()))
    return errors


# ---------------------------------------------------------------- kinds


def validate_config_map(obj: dict[str, Any]) -> list[FieldError]:
    """ValidateConfigMap: keys of `data` and `binaryData` are config keys, not in both."""
    errors: list[FieldError] = []
    data = obj.get("data") or {}
    binary = obj.get("binaryData") or {}
    for key in data:
        errors.extend(invalid_value(f"data[{key}]", key, m) for m in is_config_map_key(key))
    for key in binary:
        errors.extend(invalid_value(f"binaryData[{key}]", key, m) for m in is_config_map_key(key))
        if key in data:
            errors.append(
                invalid_value(f"binaryData[{key}]", key, "duplicate of key present in data")
            )
    return errors


def validate_lease(obj: dict[str, Any]) -> list[FieldError]:
    """ValidateLeaseSpec: a positive duration, non-negative transitions."""
    spec = obj.get("spec") or {}
    errors: list[FieldError] = []
    duration = spec.get("leaseDurationSeconds")
    if isinstance(duration, int) and duration <= 0:
        errors.append(
            invalid_value("spec.leaseDurationSeconds", duration, "must be greater than 0")
        )
    transitions = spec.get("leaseTransitions")
    if isinstance(transitions, int) and transitions < 0:
        errors.append(
            invalid_value(
                "spec.leaseTransitions", transitions, "must be greater than or equal to 0"
            )
        )
    return errors


def validate_event_create(event: dict[str, Any], events_v1: bool) -> list[FieldError]:
    """ValidateEventCreate on the stored (core) form; `events_v1` for the events.k8s.io/v1 API.

    The legacy rules run for both APIs (a "new" Event, with `eventTime`, must name its
    reporting controller, instance, action and reason); events.k8s.io/v1 adds ObjectMeta,
    a required `eventTime` and the deprecated fields left unset (fixtures 088, 090, 091).
    """
    errors: list[FieldError] = []
    metadata = event.get("metadata") or {}
    namespace = metadata.get("namespace") or ""
    involved = event.get("involvedObject") or {}
    controller_field = "reportingController" if events_v1 else "reportingComponent"
    if not event.get("eventTime"):
        involved_ns = involved.get("namespace") or ""
        if (not involved_ns and namespace not in ("", "default")) or (
            involved_ns and involved_ns != namespace
        ):
            errors.append(
                invalid_value(
                    "involvedObject.namespace", involved_ns, "does not match event.namespace"
                )
            )
    else:
        if not involved.get("namespace") and namespace not in ("default", "kube-system"):
            errors.append(
                invalid_value(
                    "involvedObject.namespace",
                    involved.get("namespace") or "",
                    "does not match event.namespace",
                )
            )
        controller = event.get("reportingComponent") or ""
        if not controller:
            errors.append(required(controller_field))
        errors.extend(
            invalid_value(controller_field, controller, m) for m in is_qualified_name(controller)
        )
        for key, path in (
            ("reportingInstance", "reportingInstance"),
            ("action", "action"),
            ("reason", "reason"),
        ):
            value = event.get(key) or ""
            if not value:
                errors.append(required(path))
            if len(value) > 128:
                errors.append(invalid_value(path, "", "can have at most 128 characters"))
        if len(event.get("message") or "") > 1024:
            errors.append(invalid_value("message", "", "can have at most 1024 characters"))
    errors.extend(invalid_value("namespace", namespace, m) for m in is_dns1123_subdomain(namespace))
    if not events_v1:
        return errors
    errors.extend(validate_object_meta("Event", metadata, namespaced=True))
    if not event.get("eventTime"):
        errors.append(required("eventTime"))
    if event.get("type") not in ("Normal", "Warning"):
        errors.append(invalid_value("type", "", f"has invalid value: {event.get('type') or ''}"))
    for key in ("firstTimestamp", "lastTimestamp", "count"):
        if event.get(key):
            errors.append(invalid_value(key, "", "needs to be unset"))
    source = event.get("source") or {}
    if source.get("component") or source.get("host"):
        errors.append(invalid_value("source", "", "needs to be unset"))
    return errors
