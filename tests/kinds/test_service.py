"""A v1 Service read for blue-green (its ``slot``, since when) and the switch patch, on
recorded API objects (../shared/fixtures/kubernetes: 059 GET, 121 merge-patched)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from receiver.annotations import INCIDENT, PREVIOUS_SLOT
from receiver.kinds.service import (
    selected_slot,
    selector_changed_at,
    service_annotations,
    switch_patch,
)
from tests.kinds.helpers import recorded
from tests.standins.kube.patch import apply_merge_patch


def with_selector(selector: dict[str, str] | None) -> dict[str, Any]:
    service = copy.deepcopy(recorded("059"))
    service["spec"]["selector"] = selector
    return service


@pytest.mark.parametrize(
    ("selector", "slot"),
    [
        ({"app": "fraud-scorer", "slot": "green"}, "green"),
        ({"app": "fraud-scorer", "slot": "blue"}, "blue"),
        ({"app": "fraud-scorer"}, None),
        ({"app": "fraud-scorer", "slot": ""}, None),
        (None, None),
    ],
)
def test_the_selected_slot_is_the_selector_value(selector, slot) -> None:
    assert selected_slot(with_selector(selector)) == slot


def test_the_selector_change_is_dated_by_its_field_manager() -> None:
    assert selector_changed_at(recorded("121")) == datetime(2026, 12, 1, 0, 11, 32, tzinfo=UTC)


def test_the_latest_manager_owning_the_selector_dates_it_and_others_do_not() -> None:
    service = copy.deepcopy(recorded("059"))
    entries = service["metadata"]["managedFields"]
    entries.append(
        {
            "manager": "rollback-receiver",
            "operation": "Update",
            "apiVersion": "v1",
            "time": "2026-11-25T09:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:selector": {}}},
        }
    )
    entries.append(
        {
            "manager": "kubectl-annotate",
            "operation": "Update",
            "apiVersion": "v1",
            "time": "2026-11-25T10:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:annotations": {"f:note": {}}}},
        }
    )
    assert selector_changed_at(service) == datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def test_a_service_without_managed_fields_has_no_known_selector_change() -> None:
    service = copy.deepcopy(recorded("059"))
    del service["metadata"]["managedFields"]
    assert selector_changed_at(service) is None


def test_the_switch_patch_changes_only_the_slot_and_carries_the_read_version() -> None:
    service = recorded("059")
    patch = switch_patch(service, "blue", {INCIDENT: "inc-1", PREVIOUS_SLOT: "green"})
    assert patch == {
        "metadata": {
            "resourceVersion": "397",
            "annotations": {INCIDENT: "inc-1", PREVIOUS_SLOT: "green"},
        },
        "spec": {"selector": {"slot": "blue"}},
    }
    applied = apply_merge_patch(service, patch)
    assert applied["spec"]["selector"] == {"app": "fraud-scorer", "slot": "blue"}
    assert applied["spec"]["ports"] == service["spec"]["ports"]
    assert service_annotations(applied) == {INCIDENT: "inc-1", PREVIOUS_SLOT: "green"}


def test_the_switch_patch_removes_an_annotation_given_as_none() -> None:
    service = copy.deepcopy(recorded("059"))
    service["metadata"]["annotations"] = {"rollback-receiver.io/paused": "x", "keep": "me"}
    patch = switch_patch(service, "blue", {"rollback-receiver.io/paused": None})
    assert service_annotations(apply_merge_patch(service, patch)) == {"keep": "me"}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s["metadata"].pop("resourceVersion"), "resourceVersion"),
        (lambda s: None, "no slot"),
    ],
)
def test_a_switch_patch_needs_a_fresh_read_and_a_slot(edit, message) -> None:
    service = copy.deepcopy(recorded("059"))
    edit(service)
    slot = "blue" if message != "no slot" else ""
    with pytest.raises(ValueError, match=message):
        switch_patch(service, slot, {})
