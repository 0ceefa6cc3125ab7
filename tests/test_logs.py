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


# ----------------------------------------------------------------- redaction both ways


@pytest.mark.parametrize("text", [
    "apps.default.secret: environment variable NOPE is not set",
    "write ${WECHAT_SECRET:-default} in config.yaml",
    "40125 invalid app secret: invalid appsecret rid: 6565d8a1",
    "invalid app secret: check appsecret and appid",
    "the secret = value words, access_token is invalid or not latest",
    "apps.shop.secret_file: 'wechat_secret' not found",
])
def test_ordinary_words_are_never_masked(text):
    assert redact(text) == text


@pytest.mark.parametrize(("text", "masked"), [
    ("GET /cgi-bin/token?grant_type=client_credential&appid=wx1&secret=S3CR3T&x=1",
     "GET /cgi-bin/token?grant_type=client_credential&appid=wx1&secret=<redacted>&x=1"),
    ("POST /send?access_token=82_AbC-xyz HTTP/1.1", "POST /send?access_token=<redacted> HTTP/1.1"),
    ("client_secret=xyz&a=1", "client_secret=<redacted>&a=1"),
    ('{"appid": "wx1", "secret": "S3CR3T", "force_refresh": false}',
     '{"appid": "wx1", "secret": "<redacted>", "force_refresh": false}'),
    ("{'access_token': 'tok', 'expires_in': 7200}",
     "{'access_token': '<redacted>', 'expires_in': 7200}"),
    ('"secret":"a\\"b"', '"secret":"<redacted>"'),
    ("export WECHAT_SECRET=hunter22", "export WECHAT_SECRET=<redacted>"),
])
def test_credential_shapes_are_masked(text, masked):
    assert redact(text) == masked


def test_known_secret_values_are_masked_anywhere():
    add_secret("value-nobody-would-type-9z")
    assert redact("it was value-nobody-would-type-9z.") == "it was <redacted>."


def test_placeholders_are_left_alone():
    text = "POST https://x/cgi-bin/message/subscribe/send?access_token=<token of app default>"
    assert redact(text) == text


def test_peewee_sql_only_with_log_sql():
    buf = io.StringIO()
    handler = setup_logging("text", "DEBUG", stream=buf)
    try:
        logging.getLogger("peewee").debug(("SELECT 1", []))
        assert "SELECT 1" not in buf.getvalue()
        assert logging.getLogger("peewee").getEffectiveLevel() == logging.WARNING
        logging.getLogger().removeHandler(handler)
        handler = setup_logging("text", "INFO", stream=buf, sql=True)
        logging.getLogger("peewee").debug(("SELECT 2", []))
        assert "SELECT 2" in buf.getvalue()  # asked for: shown even at INFO
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger("peewee").setLevel(logging.NOTSET)
