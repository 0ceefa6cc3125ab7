"""Herald's Tencent Cloud SMS client, against the SMS sandbox over real HTTP on 127.0.0.1.

The expected Kind of every code is written out here, not read from the module's table,
so a change to the table has to change a test too.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any
from unittest import mock

import pytest
from tencentcloud.common.sign import Sign

from channels import tencent_sms
from channels.tencent_sms import SmsAnswer, SmsClient, check_params, validate_phone
from channels.wechat_errors import Kind
from sandbox.sms import DEFAULT_SDK_APP_ID, DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY, SmsSandbox
from tests.sms_support import fixed_server, sdk_signed

TEMPLATES = {"1234567": 2, "7654321": 0}
SIGNS = {"Herald"}
PHONE = "+8613800000000"
NOW = 1_800_000_000  # 2027-01-15 08:00:00 UTC
REGION = "ap-guangzhou"


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sandbox() -> Iterator[SmsSandbox]:
    with SmsSandbox(templates=TEMPLATES, sign_names=SIGNS, clock=FakeClock()) as sb:
        yield sb


def make_client(url: str, *, key: str = DEFAULT_SECRET_KEY, secret_id: str = DEFAULT_SECRET_ID,
                now: float = NOW, timeout: float = 5.0) -> SmsClient:
    return SmsClient(url, secret_id, key, REGION, DEFAULT_SDK_APP_ID, timeout=timeout,
                     clock=FakeClock(now))


@pytest.fixture
def client(sandbox: SmsSandbox) -> Iterator[SmsClient]:
    c = make_client(sandbox.url)
    yield c
    c.close()


def send(c: SmsClient, phone: str = PHONE, template: str = "1234567",
         params: list[str] | None = None, sign_name: str | None = "Herald",
         context: str | None = None) -> SmsAnswer:
    return c.send(phone, template, ["Coffee", "shipped"] if params is None else params,
                  sign_name, context)


# --- the signature -------------------------------------------------------------------------

FIXED_KEY = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE"
FIXED_ID = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE"
FIXED_TS = 1551113065  # 2019-02-25 16:44:25 UTC
FIXED_BODY = b'{"PhoneNumberSet":["+8613800000000"],"TemplateId":"1110"}'


def test_the_key_chain_matches_the_sdk_sign_tc3() -> None:
    text = tencent_sms.string_to_sign("sms.tencentcloudapi.com", FIXED_BODY, FIXED_TS)
    assert text.splitlines()[:3] == ["TC3-HMAC-SHA256", str(FIXED_TS),
                                     "2019-02-25/sms/tc3_request"]
    assert tencent_sms.sign(FIXED_KEY, "sms.tencentcloudapi.com", FIXED_BODY, FIXED_TS) == (
        Sign.sign_tc3(FIXED_KEY, "2019-02-25", "sms", text))


@pytest.mark.parametrize("host", ["sms.tencentcloudapi.com", "127.0.0.1:8080"])
def test_the_whole_signature_matches_the_sdk_request_builder(host: str) -> None:
    """The SDK builds and signs a request at a fixed time; signing the same body for the
    same host and time here gives the very same Authorization header."""
    params = {"PhoneNumberSet": [PHONE], "SmsSdkAppId": DEFAULT_SDK_APP_ID,
              "TemplateId": "1234567", "TemplateParamSet": ["咖啡", "shipped"],
              "SignName": "Herald"}
    req = sdk_signed(params, host=host, secret_id=FIXED_ID, secret_key=FIXED_KEY,
                     timestamp=FIXED_TS)
    assert req.header["Content-Type"] == tencent_sms.CONTENT_TYPE
    ours = tencent_sms.sign(FIXED_KEY, host, req.data.encode("utf-8"), FIXED_TS)
    assert req.header["Authorization"] == (
        f"TC3-HMAC-SHA256 Credential={FIXED_ID}/2019-02-25/sms/tc3_request, "
        f"SignedHeaders=content-type;host, Signature={ours}")


def test_the_client_sends_the_headers_it_signed(sandbox: SmsSandbox) -> None:
    seen: dict[str, str] = {}

    def capture(handler: BaseHTTPRequestHandler, body: bytes) -> tuple[int, str, bytes]:
        seen.update(handler.headers.items())
        seen["body"] = body.decode()
        return 200, "application/json", b'{"Response":{"SendStatusSet":[],"RequestId":"r"}}'

    with fixed_server(capture) as url:
        c = make_client(url)
        send(c)
        c.close()
    host = url.removeprefix("http://")
    assert seen["Host"] == host and seen["Content-Type"] == "application/json"
    assert seen["X-TC-Action"] == "SendSms" and seen["X-TC-Version"] == "2021-01-11"
    assert seen["X-TC-Timestamp"] == str(NOW) and seen["X-TC-Region"] == REGION
    signature = tencent_sms.sign(DEFAULT_SECRET_KEY, host, seen["body"].encode(), NOW)
    assert seen["Authorization"] == (
        f"TC3-HMAC-SHA256 Credential={DEFAULT_SECRET_ID}/2027-01-15/sms/tc3_request, "
        f"SignedHeaders=content-type;host, Signature={signature}")


def test_default_ports_are_not_in_the_signed_host() -> None:
    assert tencent_sms._host_of("https://sms.tencentcloudapi.com") == (
        "https://sms.tencentcloudapi.com/", "sms.tencentcloudapi.com")
    assert tencent_sms._host_of("https://SMS.tencentcloudapi.com:443/")[1] == (
        "sms.tencentcloudapi.com")
    assert tencent_sms._host_of("http://127.0.0.1:8080")[1] == "127.0.0.1:8080"
    with pytest.raises(ValueError):
        tencent_sms._host_of("sms.tencentcloudapi.com")


def test_a_send_verifies_in_the_sandbox(client: SmsClient, sandbox: SmsSandbox) -> None:
    answer = send(client)
    assert answer.kind is Kind.SUCCESS and answer.code == "Ok"
    assert sandbox.attempts[-1].code == "Ok"


def test_the_signing_key_follows_the_utc_date(sandbox: SmsSandbox) -> None:
    clock = FakeClock(NOW - 8 * 3600 - 1)  # 2027-01-14 23:59:59 UTC
    sandbox.clock = clock
    c = SmsClient(sandbox.url, DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY, REGION,
                  DEFAULT_SDK_APP_ID, timeout=5, clock=clock)
    assert send(c).code == "Ok"
    clock.now += 2  # past midnight: a new date in the scope, a new signing key
    assert send(c).code == "Ok"
    c.close()


@pytest.mark.parametrize("changes,code,kind", [
    ({"key": DEFAULT_SECRET_KEY + "x"}, "AuthFailure.SignatureFailure", Kind.CREDENTIAL),
    ({"secret_id": "AKIDunknown"}, "AuthFailure.SecretIdNotFound", Kind.CREDENTIAL),
    ({"now": NOW - 301}, "AuthFailure.SignatureExpire", Kind.TRANSIENT),
    ({"now": NOW + 301}, "AuthFailure.SignatureExpire", Kind.TRANSIENT),
])
def test_signature_refusals(sandbox: SmsSandbox, changes: dict, code: str, kind: Kind) -> None:
    c = make_client(sandbox.url, **changes)
    answer = send(c)
    c.close()
    assert (answer.code, answer.kind) == (code, kind)
    assert answer.request_id and not answer.serial_no
    assert sandbox.accepted == []


# --- the request -----------------------------------------------------------------------------


def test_the_request_shape(client: SmsClient, sandbox: SmsSandbox) -> None:
    answer = send(client, phone="+86 138-0000-0000", params=["咖啡", "已发货"],
                  context="row:42")
    [rec] = sandbox.accepted
    assert rec["body"] == {
        "PhoneNumberSet": [PHONE],
        "SmsSdkAppId": DEFAULT_SDK_APP_ID,
        "TemplateId": "1234567",
        "TemplateParamSet": ["咖啡", "已发货"],
        "SignName": "Herald",
        "SessionContext": "row:42",
    }
    assert rec["region"] == REGION and rec["serial_no"] == answer.serial_no


def test_no_sign_name_and_no_context_are_left_out(client: SmsClient,
                                                  sandbox: SmsSandbox) -> None:
    answer = send(client, phone="+6591234567", template="7654321", params=[], sign_name=None)
    assert answer.code == "Ok"
    assert sandbox.accepted[0]["body"] == {
        "PhoneNumberSet": ["+6591234567"], "SmsSdkAppId": DEFAULT_SDK_APP_ID,
        "TemplateId": "7654321", "TemplateParamSet": []}


def test_bad_input_is_an_answer_not_an_exception(client: SmsClient,
                                                 sandbox: SmsSandbox) -> None:
    for phone, params in [("13800000000", ["a", "b"]), (PHONE, ["a", 2]), (PHONE, "ab")]:
        answer = client.send(phone, "1234567", params, "Herald")  # type: ignore[arg-type]
        assert answer.kind is Kind.PERMANENT and answer.code is None
        assert answer.reason.startswith("not sent: ")
    assert sandbox.attempts == []


# --- every answer class --------------------------------------------------------------------


def test_ok_keeps_the_serial_number_as_text(client: SmsClient, sandbox: SmsSandbox) -> None:
    answer = send(client)
    assert answer == SmsAnswer(Kind.SUCCESS, "Ok", "accepted",
                               serial_no=sandbox.accepted[0]["serial_no"], fee=1,
                               request_id=sandbox.accepted[0]["request_id"])
    assert isinstance(answer.serial_no, str) and answer.serial_no.startswith("2640:")


CODES = [
    ("InternalError.Timeout", Kind.TRANSIENT),
    ("InternalError.OtherError", Kind.TRANSIENT),
    ("InternalError.SendAndRecvFail", Kind.TRANSIENT),
    ("InternalError", Kind.TRANSIENT),
    ("LimitExceeded.DeliveryFrequencyLimit", Kind.QUOTA_MINUTE),
    ("LimitExceeded.PhoneNumberDailyLimit", Kind.QUOTA_MINUTE),
    ("LimitExceeded.PhoneNumberThirtySecondLimit", Kind.QUOTA_MINUTE),
    ("LimitExceeded.PhoneNumberOneHourLimit", Kind.QUOTA_MINUTE),
    ("LimitExceeded.PhoneNumberSameContentDailyLimit", Kind.QUOTA_MINUTE),
    ("LimitExceeded.AppDailyLimit", Kind.QUOTA_MINUTE),
    ("LimitExceeded.SomethingNew", Kind.QUOTA_MINUTE),
    ("LimitExceeded", Kind.QUOTA_MINUTE),
    ("LimitExceeded.AppCountryOrRegionInBlacklist", Kind.PERMANENT),
    ("LimitExceeded.PhoneNumberCountLimit", Kind.PERMANENT),
    ("RequestLimitExceeded", Kind.QUOTA_MINUTE),
    ("RequestLimitExceeded.IPLimitExceeded", Kind.QUOTA_MINUTE),
    ("FailedOperation.PhoneNumberInBlacklist", Kind.PERMANENT),
    ("InvalidParameterValue.IncorrectPhoneNumber", Kind.PERMANENT),
    ("FailedOperation.TemplateIncorrectOrUnapproved", Kind.PERMANENT),
    ("FailedOperation.SignatureIncorrectOrUnapproved", Kind.PERMANENT),
    ("InvalidParameterValue.TemplateParameterFormatError", Kind.PERMANENT),
    ("InvalidParameterValue.TemplateParameterLengthLimit", Kind.PERMANENT),
    ("FailedOperation.ContainSensitiveWord", Kind.PERMANENT),
    ("Neverheard.OfThis", Kind.PERMANENT),
    ("AuthFailure.SignatureExpire", Kind.TRANSIENT),
    ("AuthFailure.SignatureFailure", Kind.CREDENTIAL),
    ("AuthFailure.SecretIdNotFound", Kind.CREDENTIAL),
    ("AuthFailure.InvalidAuthorization", Kind.CREDENTIAL),
    ("UnauthorizedOperation.RequestIpNotInWhitelist", Kind.CREDENTIAL),
    ("UnauthorizedOperation.ServiceSuspendDueToArrears", Kind.CREDENTIAL),
    ("InvalidParameterValue.SdkAppIdNotExist", Kind.CREDENTIAL),
    ("FailedOperation.InsufficientBalanceInSmsPackage", Kind.CREDENTIAL),
]


@pytest.mark.parametrize("where", ["error", "status"])
@pytest.mark.parametrize("code,kind", CODES)
def test_each_code_as_request_error_and_as_number_status(
    client: SmsClient, sandbox: SmsSandbox, code: str, kind: Kind, where: str
) -> None:
    sandbox.inject(code, where=where)
    answer = send(client)
    assert (answer.code, answer.kind) == (code, kind)
    assert answer.reason.startswith(code) and not answer.timed_out
    assert answer.serial_no is None and answer.request_id
    assert answer.fee == (0 if where == "status" else None)
    assert sandbox.accepted == []


def test_real_refusals_from_the_sandbox(client: SmsClient, sandbox: SmsSandbox) -> None:
    sandbox.blacklist("+8613800000001")
    assert send(client, phone="+8613800000001").code == "FailedOperation.PhoneNumberInBlacklist"
    assert (send(client, template="999").kind, send(client, sign_name="Other").kind) == (
        Kind.PERMANENT, Kind.PERMANENT)
    answer = send(client, params=["only one"])
    assert answer.code == "FailedOperation.TemplateParamSetNotMatchApprovedTemplate"
    assert answer.kind is Kind.PERMANENT


def test_a_timeout(sandbox: SmsSandbox) -> None:
    c = make_client(sandbox.url, timeout=0.3)
    sandbox.inject("timeout")
    answer = send(c)
    c.close()
    assert answer.kind is Kind.TRANSIENT and answer.timed_out and answer.code is None
    assert "may have delivered" in answer.reason


@pytest.mark.parametrize("fault,text", [
    ("reset", "connection to Tencent failed"),
    ("http_502", "Tencent answered HTTP 502"),
    ("http_503", "Tencent answered HTTP 503"),
    ("non_json", "not API 3.0 JSON"),
])
def test_transport_faults_are_transient(client: SmsClient, sandbox: SmsSandbox, fault: str,
                                        text: str) -> None:
    sandbox.inject(fault)
    answer = send(client)
    assert answer.kind is Kind.TRANSIENT and not answer.timed_out and answer.code is None
    assert text in answer.reason
    assert send(client).code == "Ok"  # the pool recovers


def test_a_closed_port_is_transient(sandbox: SmsSandbox) -> None:
    url = sandbox.url
    sandbox.stop()
    c = make_client(url)
    answer = send(c)
    c.close()
    assert answer.kind is Kind.TRANSIENT and answer.code is None and not answer.timed_out


@pytest.mark.parametrize("reply,text", [
    (b'{"Response": []}', "not API 3.0 JSON"),
    (b'[1, 2]', "not API 3.0 JSON"),
    (b'{"Other": {}}', "not API 3.0 JSON"),
    (b'{"Response": {"Error": "x", "RequestId": "r"}}', "malformed Error"),
    (b'{"Response": {"RequestId": "r"}}', "lacks SendStatusSet"),
    (b'{"Response": {"SendStatusSet": [{"Fee": 1}], "RequestId": "r"}}', "malformed"),
    (b'\xff\xfe', "not API 3.0 JSON"),
])
def test_odd_bodies_are_transient(reply: bytes, text: str) -> None:
    with fixed_server(lambda h, b: (200, "application/json", reply)) as url:
        c = make_client(url)
        answer = send(c)
        c.close()
    assert answer.kind is Kind.TRANSIENT and text in answer.reason


def test_the_status_for_our_number_is_the_one_read() -> None:
    reply = json.dumps({"Response": {"RequestId": "r", "SendStatusSet": [
        {"PhoneNumber": "+8613900000000", "Code": "Ok", "SerialNo": "x", "Fee": 1},
        {"PhoneNumber": PHONE, "Code": "LimitExceeded.PhoneNumberDailyLimit", "SerialNo": "",
         "Fee": 0, "Message": "daily"},
    ]}}).encode()
    with fixed_server(lambda h, b: (200, "application/json", reply)) as url:
        c = make_client(url)
        answer = send(c)
        c.close()
    assert answer.code == "LimitExceeded.PhoneNumberDailyLimit" and answer.fee == 0


def test_one_client_is_shared_by_threads(client: SmsClient, sandbox: SmsSandbox) -> None:
    answers: list[SmsAnswer] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(20):
            a = send(client, phone=f"+86138{n:03d}{i:05d}")
            with lock:
                answers.append(a)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a.code for a in answers] == ["Ok"] * 160
    assert len({a.serial_no for a in answers}) == 160 == len(sandbox.accepted)


# --- validate_phone and check_params ------------------------------------------------------


@pytest.mark.parametrize("text,normal", [
    ("+8613800000000", "+8613800000000"),
    (" +86 138 0000 0000 ", "+8613800000000"),
    ("+86-138-0000-0000", "+8613800000000"),
    ("+1 (415) 555-0100", "+14155550100"),
    ("+85291234567", "+85291234567"),
    ("+6591234567", "+6591234567"),
    ("+123456789012345", "+123456789012345"),  # 15 digits
    ("+4912345678", "+4912345678"),
])
def test_validate_phone_accepts(text: str, normal: str) -> None:
    assert validate_phone(text) == normal


@pytest.mark.parametrize("text,why", [
    ("", "empty"),
    ("   ", "empty"),
    ("13800000000", "must start with '+'"),
    ("008613800000000", "must start with '+'"),
    ("+0861380000000", "cannot start with 0"),
    ("+86138abc00000", "only digits"),
    ("+86１３８00000000", "only digits"),  # full-width digits
    ("++8613800000000", "only digits"),
    ("+1234567", "has 7 digits"),
    ("+1234567890123456", "has 16 digits"),
    ("+861380000000", "+86 number must be a mobile"),
    ("+862012345678", "+86 number must be a mobile"),
    (None, "must be text"),
])
def test_validate_phone_refuses(text: str, why: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_phone(text)
    assert why in str(info.value)


def test_check_params() -> None:
    check_params([])
    check_params(["", "x" * 12, "咖啡咖啡咖啡咖啡咖啡咖啡"])  # 12 characters, whatever their width
    check_params(["x" * 20], max_chars=20)
    with pytest.raises(ValueError, match="parameter 1 has 13 characters; .* at most 12"):
        check_params(["ok", "x" * 13])
    with pytest.raises(ValueError, match="parameter 2 must be text"):
        check_params(["a", "b", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="must be a list"):
        check_params("abc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="parameter 0 has 7 characters; .* at most 6"):
        check_params(["1234567"], max_chars=6)


# --- secrets -----------------------------------------------------------------------------------


def test_the_secret_key_and_signature_never_leak(sandbox: SmsSandbox,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Every outcome, with every logger at DEBUG, and a sandbox that echoes the key."""
    caplog.set_level(logging.DEBUG)
    key = "leaky-secret-key-0123456789"
    with SmsSandbox(secret_key=key, templates=TEMPLATES, sign_names=SIGNS,
                    clock=FakeClock()) as sb:
        c = SmsClient(sb.url, DEFAULT_SECRET_ID, key, REGION, DEFAULT_SDK_APP_ID, timeout=0.3,
                      clock=FakeClock())
        answers = [send(c)]
        for fault in ("http_502", "non_json", "reset", "timeout", "InternalError.Timeout"):
            sb.inject(fault)
            answers.append(send(c))
        sb.inject("FailedOperation.OtherError", message=f"echo {key} back")
        answers.append(send(c))
        sb.inject("LimitExceeded.PhoneNumberDailyLimit", where="status", message=key)
        answers.append(send(c))
        answers.append(send(c, phone="bad"))
        logging.getLogger("herald.test").warning("the key is %s", key)
        c.close()
    assert answers[0].code == "Ok"
    # The two echoes came back and were masked, not dropped.
    assert answers[-3].reason.endswith(f"echo {tencent_sms.MASK} back")
    assert answers[-2].reason.endswith(tencent_sms.MASK)
    for answer in answers:
        assert key not in answer.reason and key not in repr(answer)
    for record in caplog.records:
        assert key not in record.getMessage()


def test_an_echoed_authorization_header_is_masked(caplog: pytest.LogCaptureFixture) -> None:
    """A server (or proxy) that echoes our headers in every text field it has."""
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    def echo(handler: BaseHTTPRequestHandler, body: bytes) -> tuple[int, str, bytes]:
        auth = handler.headers["Authorization"]
        seen.append(auth)
        reply: dict[str, Any]
        if len(seen) == 1:
            reply = {"Response": {"Error": {"Code": "AuthFailure.SignatureFailure",
                                            "Message": f"you sent {auth}"}, "RequestId": "r"}}
            return 200, "application/json", json.dumps(reply).encode()
        if len(seen) == 2:
            reply = {"Response": {"RequestId": "r", "SendStatusSet": [
                {"PhoneNumber": PHONE, "Code": "FailedOperation.X", "Message": auth}]}}
            return 200, "application/json", json.dumps(reply).encode()
        return 200, "text/html", f"<p>{auth}</p>".encode()

    with fixed_server(echo) as url:
        c = make_client(url)
        answers = [send(c) for _ in range(3)]
        c.close()
    for auth, answer in zip(seen, answers, strict=True):
        signature = auth.rsplit("Signature=", 1)[1]
        assert signature not in answer.reason and "Credential=" not in answer.reason
        assert DEFAULT_SECRET_KEY not in answer.reason
        for record in caplog.records:
            assert signature not in record.getMessage()


def test_exception_texts_are_cleaned(sandbox: SmsSandbox) -> None:
    """An exception whose text carries the key (a library quoting its input) is masked."""
    import requests

    c = make_client(sandbox.url)
    boom = requests.ConnectionError(f"failed with key {DEFAULT_SECRET_KEY} Signature=" + "a" * 64)
    with mock.patch.object(c.session, "post", side_effect=boom):
        answer = send(c)
    c.close()
    assert answer.kind is Kind.TRANSIENT
    assert DEFAULT_SECRET_KEY not in answer.reason and "a" * 64 not in answer.reason
