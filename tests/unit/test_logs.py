"""Log output: JSON lines with the call, handoff and agent as fields; callers' numbers
masked."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from handoff import logs
from handoff.logs import JsonFormatter, mask_number
from handoff.settings import SettingsError, load


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("handoff.live.offer", logging.WARNING, __file__, 1, message,
                             args, None)
    made.__dict__.update(extra)
    return made


def test_json_lines_lift_the_call_handoff_and_agent_out_of_the_message() -> None:
    line = json.loads(JsonFormatter().format(record(
        "call=%s: handoff=%d offered to agent=%s", "7f1c-22ab", 42, "ada")))
    assert line["call_id"] == "7f1c-22ab"
    assert line["handoff_id"] == 42
    assert line["agent"] == "ada"
    assert line["level"] == "warning" and line["logger"] == "handoff.live.offer"
    assert line["message"] == "call=7f1c-22ab: handoff=42 offered to agent=ada"


def test_fields_given_with_extra_win_and_a_line_about_nothing_has_none() -> None:
    line = json.loads(JsonFormatter().format(record("call=a agent=b", call_id="c")))
    assert (line["call_id"], line["agent"]) == ("c", "b")
    plain = json.loads(JsonFormatter().format(record("the PBX reloaded")))
    assert not {"call_id", "handoff_id", "agent"} & set(plain)


def test_an_exception_travels_inside_its_json_line() -> None:
    try:
        raise RuntimeError("ARI said 500")
    except RuntimeError:
        failed = record("call=x: could not answer")
        failed.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter().format(failed))
    assert "RuntimeError: ARI said 500" in line["exception"]


@pytest.mark.parametrize(("number", "shown"), [
    ("+33123456789", "+33*******89"), ("0612345678", "06******78"), ("5001", "****"),
    ("", ""), (None, ""),
])
def test_numbers_are_masked_to_tell_calls_apart_not_to_call_back(
    number: str | None, shown: str,
) -> None:
    assert mask_number(number) == shown


def test_configure_json_writes_one_object_per_line(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    monkeypatch.setattr(root, "handlers", [handler])
    monkeypatch.setattr(root, "level", root.level)
    logs.configure("debug", "json")
    logging.getLogger("handoff.test").debug("call=%s ended", "abc")
    assert json.loads(stream.getvalue().splitlines()[-1])["call_id"] == "abc"
    assert root.level == logging.DEBUG


def test_log_format_is_text_or_json() -> None:
    assert load(environ={"SWITCHBOARD_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(SettingsError, match=r"log_format: 'xml': text or json"):
        load(environ={}, overrides={"log_format": "xml"})
