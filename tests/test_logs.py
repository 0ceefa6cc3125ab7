"""Logging: json lines carry row, template and errcode; secrets never get through."""

from __future__ import annotations

import io
import json
import logging

import pytest

from logs import add_secret, redact, setup_logging


@pytest.fixture
def stream():
    buf = io.StringIO()
    handler = setup_logging("json", "DEBUG", stream=buf)
    yield buf
    logging.getLogger().removeHandler(handler)


def lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_json_lines_have_the_fields_operators_filter_on(stream):
    logging.getLogger("herald.dispatch").warning(
        "row %s failed: %s", 42, "43101 user refused",
        extra={"row_id": 42, "template": "order_status", "errcode": 43101})
    [rec] = lines(stream)
    assert rec["level"] == "WARNING" and rec["message"] == "row 42 failed: 43101 user refused"
    assert (rec["row_id"], rec["template"], rec["errcode"]) == (42, "order_status", 43101)
    assert rec["time"].endswith("+00:00") and rec["logger"] == "herald.dispatch"


def test_tokens_in_urls_and_registered_secrets_are_masked(stream):
    add_secret("s3cr3t-app-secret-value")
    log = logging.getLogger("urllib3.connectionpool")
    log.warning('"POST /cgi-bin/message/subscribe/send?access_token=ABC123xyz HTTP/1.1" 200')
    logging.getLogger("herald").error("secret was %s", "s3cr3t-app-secret-value")
    try:
        raise ValueError("bad token access_token=QQQ999&x=1")
    except ValueError:
        logging.getLogger("herald").exception("send failed")
    text = stream.getvalue()
    for leaked in ("ABC123xyz", "s3cr3t-app-secret-value", "QQQ999"):
        assert leaked not in text
    assert text.count("<redacted>") >= 3
    recs = lines(stream)
    assert "access_token=<redacted>" in recs[0]["message"]
    assert "x=1" in recs[2]["exception"]  # the rest of the text survives


def test_redact_handles_json_and_form_shapes():
    assert redact('{"access_token": "tok123", "expires_in": 7200}') == (
        '{"access_token": "<redacted>", "expires_in": 7200}')
    assert redact("secret=abc&appid=wx1") == "secret=<redacted>&appid=wx1"
    assert redact("nothing to hide") == "nothing to hide"


def test_text_format_for_people():
    buf = io.StringIO()
    handler = setup_logging("text", "INFO", stream=buf)
    try:
        logging.getLogger("herald").info("hello %s", "world")
        logging.getLogger("herald").debug("hidden")
    finally:
        logging.getLogger().removeHandler(handler)
    out = buf.getvalue()
    assert "INFO herald: hello world" in out and "hidden" not in out
