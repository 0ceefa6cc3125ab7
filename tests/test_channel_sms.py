"""The sms channel against the Tencent Cloud SMS sandbox (which verifies TC3 on its own):
the request as recorded, the phone and parameter checks before any request, SerialNo as
msgid, and every answer class with its Kind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from channels.base import Kind
from channels.sms import NOT_CONFIGURED, Sms
from jobs import dispatch
from sandbox.sms import DEFAULT_SDK_APP_ID, DEFAULT_SIGN_NAME, SmsSandbox
from templates import render_row
from tests.channel_support import PARAMS, SMS_TID, load, overrides, write_templates
from tests.conftest import insert_sql, make_config, row

PHONE = "+8613800138000"


@pytest.fixture
def db(any_db):
    """Rows go through every dialect (servers skip unless configured)."""
    return any_db


@pytest.fixture
def sms_sandbox() -> Iterator[SmsSandbox]:
    with SmsSandbox(templates={SMS_TID: 2}) as sb:
        yield sb


@pytest.fixture
def templates_path(tmp_path: Path) -> Path:
    return write_templates(tmp_path)


def sender(tmp_path: Path, templates_path: Path, sms: SmsSandbox, **more) -> Sms:
    cfg = make_config("sqlite:///x.db", "http://127.0.0.1:9", tmp_path,
                      **overrides(templates_path, sms.url, **more))
    return Sms.create(cfg, None)  # type: ignore[arg-type]


def built(templates_path: Path, phone: str | None = PHONE, params: str = PARAMS,
          row_id: int = 7):
    return render_row(load(templates_path), template="order_sms", openid="oU", phone=phone,
                      params=params, row_id=row_id).built


def test_a_row_is_sent_to_its_phone_with_serial_no_as_msgid(db, sandbox, sms_sandbox,
                                                           runtime_factory, templates_path):
    rt = runtime_factory(db, sandbox, **overrides(templates_path, sms_sandbox.url))
    rid = insert_sql(db, template="order_sms", openid="oU", phone=PHONE, params=PARAMS)
    stats = dispatch.run(rt)
    assert stats.sent == 1
    [sent] = sms_sandbox.accepted
    assert {k: sent[k] for k in ("phone", "template_id", "params", "sign_name",
                                 "session_context", "sdk_app_id", "region")} == {
        "phone": PHONE, "template_id": SMS_TID, "params": ["Flat white", "shipped"],
        "sign_name": DEFAULT_SIGN_NAME,  # the config's: the template names none
        "session_context": str(rid), "sdk_app_id": DEFAULT_SDK_APP_ID,
        "region": "ap-guangzhou",
    }
    r = row(rid)
    assert (r.status, r.msgid, r.errcode) == ("success", sent["serial_no"], None)
    assert sandbox.accepted == []  # nothing went to WeChat


def test_the_template_sign_name_overrides_the_config(tmp_path, sms_sandbox):
    path = write_templates(tmp_path)
    path.write_text(path.read_text().replace(f"  template_id: {SMS_TID}\n",
                                             f"  template_id: {SMS_TID}\n  sign_name: 某某商城\n"))
    s = sender(tmp_path, path, sms_sandbox)
    try:
        assert s.send(built(path), None).kind is Kind.SUCCESS
    finally:
        s.close()
    assert sms_sandbox.accepted[0]["sign_name"] == "某某商城"


BAD_PHONES = [
    (None, "phone is empty"),
    ("", "phone is empty"),
    ("   ", "phone is empty"),
    ("13800138000", "is not E.164: phone number must start with '+'"),
    ("+86138001380001", "is not E.164: a +86 number must be a mobile"),
    ("+0123456789", "is not E.164: country code cannot start with 0"),
    ("+86 138 abc", "is not E.164: phone number may hold only digits"),
    ("+1234", "is not E.164: phone number has 4 digits"),
]


@pytest.mark.parametrize(("phone", "reason"), BAD_PHONES, ids=[repr(p) for p, _ in BAD_PHONES])
def test_a_bad_phone_fails_the_row_before_any_request(db, sandbox, sms_sandbox,
                                                     runtime_factory, templates_path,
                                                     phone, reason):
    rt = runtime_factory(db, sandbox, **overrides(templates_path, sms_sandbox.url))
    cols = {"phone": phone} if phone is not None else {}
    rid = insert_sql(db, template="order_sms", openid="oU", params=PARAMS, **cols)
    dispatch.run(rt)
    r = row(rid)
    assert r.status == "fail" and reason in r.error, r.error
    assert sms_sandbox.attempts == []


def test_separators_are_dropped_from_the_phone(db, sandbox, sms_sandbox, runtime_factory,
                                              templates_path):
    rt = runtime_factory(db, sandbox, **overrides(templates_path, sms_sandbox.url))
    rid = insert_sql(db, template="order_sms", openid="oU", phone="+86 138-0013-8000",
                     params=PARAMS)
    dispatch.run(rt)
    assert row(rid).status == "success" and sms_sandbox.accepted[0]["phone"] == PHONE


def test_an_over_long_parameter_fails_the_row_before_any_request(db, sandbox, sms_sandbox,
                                                                runtime_factory,
                                                                templates_path):
    rt = runtime_factory(db, sandbox, **overrides(templates_path, sms_sandbox.url))
    rid = insert_sql(db, template="order_sms", openid="oU", phone=PHONE,
                     params='["a name much longer than twelve", 1, "x", "y"]')
    dispatch.run(rt)
    r = row(rid)
    assert r.status == "fail" and "template parameter 0 has 30 characters" in r.error
    assert sms_sandbox.attempts == []


# -- every answer class, with the Kind each must give (written here, not read) -----------

INJECTED = [
    ("FailedOperation.PhoneNumberInBlacklist", Kind.PERMANENT),
    ("InvalidParameterValue.IncorrectPhoneNumber", Kind.PERMANENT),
    ("FailedOperation.TemplateIncorrectOrUnapproved", Kind.PERMANENT),
    ("FailedOperation.SignatureIncorrectOrUnapproved", Kind.PERMANENT),
    ("FailedOperation.ContainSensitiveWord", Kind.PERMANENT),
    ("LimitExceeded.PhoneNumberDailyLimit", Kind.QUOTA_MINUTE),
    ("LimitExceeded.PhoneNumberThirtySecondLimit", Kind.QUOTA_MINUTE),
    ("LimitExceeded.AppDailyLimit", Kind.QUOTA_MINUTE),
    ("RequestLimitExceeded", Kind.QUOTA_MINUTE),
    ("InternalError.Timeout", Kind.TRANSIENT),
    ("InternalError.SomethingNew", Kind.TRANSIENT),
    ("AuthFailure.SignatureFailure", Kind.CREDENTIAL),
    ("UnauthorizedOperation.SmsSdkAppIdVerifyFail", Kind.CREDENTIAL),
    ("FailedOperation.InsufficientBalanceInSmsPackage", Kind.CREDENTIAL),
    ("FailedOperation.NeverHeardOfIt", Kind.PERMANENT),
    ("http_502", Kind.TRANSIENT),
    ("non_json", Kind.TRANSIENT),
    ("reset", Kind.TRANSIENT),
]


@pytest.mark.parametrize(("fault", "kind"), INJECTED, ids=[f for f, _ in INJECTED])
def test_every_answer_class_gives_its_kind(tmp_path, templates_path, sms_sandbox, fault, kind):
    s = sender(tmp_path, templates_path, sms_sandbox)
    sms_sandbox.inject(fault)
    try:
        answer = s.send(built(templates_path), None)
    finally:
        s.close()
    assert answer.kind is kind, answer.reason
    assert answer.msgid is None
    if "." in fault or fault == "RequestLimitExceeded":
        assert answer.code == fault and fault in answer.reason


def test_success_and_timeout(tmp_path, templates_path, sms_sandbox):
    s = sender(tmp_path, templates_path, sms_sandbox, http={"timeout": 0.5})
    try:
        ok = s.send(built(templates_path), None)
        sms_sandbox.inject("timeout")
        late = s.send(built(templates_path), None)
    finally:
        s.close()
    assert (ok.kind, ok.code, ok.errcode) == (Kind.SUCCESS, "Ok", None)
    assert ok.msgid == sms_sandbox.accepted[0]["serial_no"]
    assert (late.kind, late.timed_out) == (Kind.TRANSIENT, True)


def test_the_secret_key_never_appears_in_a_reason(tmp_path, templates_path, sms_sandbox):
    from sandbox.sms import DEFAULT_SECRET_KEY

    sms_sandbox.inject("FailedOperation.Odd", message=f"echo {DEFAULT_SECRET_KEY}")
    s = sender(tmp_path, templates_path, sms_sandbox)
    try:
        answer = s.send(built(templates_path), None)
    finally:
        s.close()
    assert DEFAULT_SECRET_KEY not in answer.reason and "echo" in answer.reason


def test_without_an_sms_section_the_sender_says_so(tmp_path, templates_path):
    cfg = make_config("sqlite:///x.db", "http://127.0.0.1:9", tmp_path,
                      **overrides(templates_path, sms=None))
    s = Sms.create(cfg, None)  # type: ignore[arg-type]
    answer = s.send(built(templates_path), None)
    assert (answer.kind, answer.reason) == (Kind.CREDENTIAL, NOT_CONFIGURED)
