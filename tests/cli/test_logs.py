"""Log lines are one JSON object each, with the context passed in ``extra``."""

from __future__ import annotations

import json
import logging

from receiver.logs import JsonFormatter


def test_json_lines_carry_extras_and_exceptions():
    record = logging.LogRecord(
        "receiver.audit", logging.INFO, __file__, 1, "hello %s", ("x",), None
    )
    record.incident = "inc-0123456789ab"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "hello x"
    assert line["level"] == "info" and line["logger"] == "receiver.audit"
    assert line["incident"] == "inc-0123456789ab"
    assert line["time"].endswith("Z")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("r", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = json.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in line["exception"]
