"""API failures map to our errors: permanent ones are not retried, temporary ones are."""

from __future__ import annotations

import json

import aiohttp
import pytest

from receiver.clients.k8s import error_from_status
from receiver.errors import (
    TEXT_ERROR_MAX_SIZE,
    KubeConflict,
    KubeForbidden,
    KubeInvalid,
    KubeNotFound,
    KubeUnavailable,
    PermanentError,
    ReceiverError,
    TemporaryError,
)


def status_body(code: int, reason: str, message: str, **details: object) -> str:
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": details,
            "code": code,
        }
    )


@pytest.mark.parametrize(
    ("status", "reason", "cls", "temporary"),
    [
        (404, "NotFound", KubeNotFound, False),
        (403, "Forbidden", KubeForbidden, False),
        (401, "Unauthorized", KubeForbidden, False),
        (409, "Conflict", KubeConflict, True),
        (422, "Invalid", KubeInvalid, False),
        (415, "UnsupportedMediaType", KubeInvalid, False),
        (400, "BadRequest", KubeInvalid, False),
        (429, "TooManyRequests", KubeUnavailable, True),
        (500, "InternalError", KubeUnavailable, True),
        (503, "ServiceUnavailable", KubeUnavailable, True),
    ],
)
def test_status_codes_map_to_permanent_or_temporary_errors(status, reason, cls, temporary):
    error = error_from_status(
        status, status_body(status, reason, "it failed"), "get deployment x/y"
    )
    assert type(error) is cls
    assert isinstance(error, TemporaryError) is temporary
    assert isinstance(error, PermanentError) is not temporary
    assert error.status == status and error.reason == reason
    assert str(error).startswith("get deployment x/y: ")
    assert "it failed" in str(error)


def test_retry_after_from_the_status_details_sets_the_delay():
    error = error_from_status(
        429, status_body(429, "TooManyRequests", "slow down", retryAfterSeconds=7), "list pods"
    )
    assert isinstance(error, KubeUnavailable) and error.delay == 7.0


def test_a_forbidden_error_says_where_to_grant_the_verb():
    error = error_from_status(403, status_body(403, "Forbidden", "no"), "patch deployment a/b")
    assert "rbac" in str(error)


def test_non_json_error_text_is_cut_so_it_cannot_flood_logs():
    error = error_from_status(502, "x" * 10_000, "get deployment a/b")
    assert isinstance(error, KubeUnavailable)
    assert len(str(error)) < TEXT_ERROR_MAX_SIZE + 100


def test_our_errors_are_not_aiohttp_errors():
    for cls in (KubeNotFound, KubeConflict, KubeUnavailable, ReceiverError):
        assert not issubclass(cls, aiohttp.ClientError)
