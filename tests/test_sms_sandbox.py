"""The Tencent Cloud SMS sandbox, over real HTTP on 127.0.0.1.

Requests here are signed by the official SDK (tests/sms_support.py), not by Herald's
client, so these tests say whether the sandbox verifies TC3 the way Tencent's signer
expects, independently of channels/tencent_sms.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from tencentcloud.common.sign import Sign

from sandbox.sms import (
    DEFAULT_SDK_APP_ID,
    DEFAULT_SECRET_ID,
    DEFAULT_SECRET_KEY,
    SmsSandbox,
    split_number,
    tc3_expected,
)
from tests.sms_support import Receiver, sdk_client, sdk_signed

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = {"1234567": 2, "7654321": 0}
SIGNS = {"Herald"}
PHONE = "+8613800000000"
NOW = 1_800_000_000


class FakeClock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sandbox(clock: FakeClock) -> Iterator[SmsSandbox]:
    with SmsSandbox(templates=TEMPLATES, sign_names=SIGNS, clock=clock) as sb:
        yield sb


@pytest.fixture
def http() -> Iterator[requests.Session]:
    session = requests.Session()
    session.trust_env = False  # an environment proxy must not see loopback traffic
    yield session
    session.close()


def body(**changes: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "PhoneNumberSet": [PHONE],
        "SmsSdkAppId": DEFAULT_SDK_APP_ID,
        "TemplateId": "1234567",
        "TemplateParamSet": ["Coffee", "shipped"],
        "SignName": "Herald",
    }
    params.update(changes)
    return {k: v for k, v in params.items() if v is not None}


def signed(sb: SmsSandbox, params: dict[str, Any], *, key: str = DEFAULT_SECRET_KEY,
           secret_id: str = DEFAULT_SECRET_ID, timestamp: int = NOW,
           region: str = "ap-guangzhou") -> tuple[dict[str, str], str]:
    req = sdk_signed(params, host=f"127.0.0.1:{sb.port}", secret_id=secret_id,
                     secret_key=key, timestamp=timestamp, region=region)
    return dict(req.header), req.data


def post(http: requests.Session, sb: SmsSandbox, headers: dict[str, str],
         data: str | bytes) -> dict[str, Any]:
    resp = http.post(sb.url + "/", headers=headers,
                     data=data.encode() if isinstance(data, str) else data, timeout=5)
    assert resp.status_code == 200  # API 3.0 answers 200 for errors too
    answer = resp.json()["Response"]
    assert re.fullmatch(r"[0-9a-f-]{36}", answer["RequestId"])
    return answer


def error_code(answer: dict[str, Any]) -> str | None:
    return answer.get("Error", {}).get("Code")


# --- TC3 verification ------------------------------------------------------------------


def test_the_sandbox_signature_function_agrees_with_the_sdk() -> None:
    text = "TC3-HMAC-SHA256\n1551113065\n2019-02-25/sms/tc3_request\n" + "ab" * 32
    for key in ("Gu5t9xGARNpq86cd98joQYCN3EXAMPLE", "k", "密钥"):
        assert tc3_expected(key, "2019-02-25", "sms", text) == Sign.sign_tc3(
            key, "2019-02-25", "sms", text)


def test_an_sdk_signed_request_is_accepted(sandbox: SmsSandbox, http: requests.Session) -> None:
    headers, data = signed(sandbox, body())
    answer = post(http, sandbox, headers, data)
    assert "Error" not in answer
    [status] = answer["SendStatusSet"]
    assert set(status) == {"SerialNo", "PhoneNumber", "Fee", "SessionContext", "Code",
                           "Message", "IsoCode"}
    assert status["Code"] == "Ok" and status["Message"] == "send success"
    assert status["PhoneNumber"] == PHONE and status["Fee"] == 1 and status["IsoCode"] == "CN"
    assert isinstance(status["SerialNo"], str) and status["SerialNo"]
    assert sandbox.accepted[0]["serial_no"] == status["SerialNo"]


def test_the_sdk_client_itself_sends_through_the_sandbox() -> None:
    from tencentcloud.sms.v20210111 import models

    with SmsSandbox(templates=TEMPLATES, sign_names=SIGNS) as sb:
        client = sdk_client(f"127.0.0.1:{sb.port}", DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY)
        req = models.SendSmsRequest()
        req.PhoneNumberSet, req.SmsSdkAppId, req.TemplateId = [PHONE], DEFAULT_SDK_APP_ID, "7654321"
        req.SignName, req.SessionContext = "Herald", "row 42"
        resp = client.SendSms(req)
        assert resp.SendStatusSet[0].Code == "Ok"
        assert resp.SendStatusSet[0].SessionContext == "row 42"
        assert sb.accepted[0]["template_id"] == "7654321"


def test_a_wrong_secret_key_is_refused(sandbox: SmsSandbox, http: requests.Session) -> None:
    headers, data = signed(sandbox, body(), key=DEFAULT_SECRET_KEY + "x")
    assert error_code(post(http, sandbox, headers, data)) == "AuthFailure.SignatureFailure"
    assert sandbox.accepted == []


def test_an_unknown_secret_id_is_refused(sandbox: SmsSandbox, http: requests.Session) -> None:
    headers, data = signed(sandbox, body(), secret_id="AKIDnobody")
    assert error_code(post(http, sandbox, headers, data)) == "AuthFailure.SecretIdNotFound"


def test_a_changed_body_is_refused(sandbox: SmsSandbox, http: requests.Session) -> None:
    headers, data = signed(sandbox, body())
    tampered = data.replace("+8613800000000", "+8613900000000")
    assert tampered != data
    assert error_code(post(http, sandbox, headers, tampered)) == "AuthFailure.SignatureFailure"


@pytest.mark.parametrize("name,value", [
    ("Content-Type", "application/json; charset=utf-8"),
    ("Host", "sms.tencentcloudapi.com"),
])
def test_a_changed_signed_header_is_refused(sandbox: SmsSandbox, http: requests.Session,
                                            name: str, value: str) -> None:
    headers, data = signed(sandbox, body())
    headers[name] = value
    assert error_code(post(http, sandbox, headers, data)) == "AuthFailure.SignatureFailure"


def test_an_unsigned_header_may_change(sandbox: SmsSandbox, http: requests.Session) -> None:
    headers, data = signed(sandbox, body())
    headers["X-TC-Language"] = "en-US"  # sent by the SDK but not signed
    assert "Error" not in post(http, sandbox, headers, data)


@pytest.mark.parametrize("skew,code", [
    (-301, "AuthFailure.SignatureExpire"),
    (301, "AuthFailure.SignatureExpire"),
    (-299, None),
    (299, None),
])
def test_the_timestamp_must_be_within_five_minutes(sandbox: SmsSandbox, http: requests.Session,
                                                   skew: int, code: str | None) -> None:
    headers, data = signed(sandbox, body(), timestamp=NOW + skew)
    assert error_code(post(http, sandbox, headers, data)) == code


def test_more_signed_headers_are_verified(sandbox: SmsSandbox, http: requests.Session) -> None:
    """A signer may sign more than content-type and host; the sandbox follows SignedHeaders."""
    data = json.dumps(body()).encode()
    host = f"127.0.0.1:{sandbox.port}"
    signed_headers = "content-type;host;x-tc-action"
    canonical = (f"POST\n/\n\ncontent-type:application/json\nhost:{host}\nx-tc-action:sendsms\n"
                 f"\n{signed_headers}\n{hashlib.sha256(data).hexdigest()}")
    text = (f"TC3-HMAC-SHA256\n{NOW}\n2027-01-15/sms/tc3_request\n"
            f"{hashlib.sha256(canonical.encode()).hexdigest()}")
    signature = Sign.sign_tc3(DEFAULT_SECRET_KEY, "2027-01-15", "sms", text)
    headers = {
        "Content-Type": "application/json", "Host": host, "X-TC-Action": "SendSms",
        "X-TC-Version": "2021-01-11", "X-TC-Timestamp": str(NOW), "X-TC-Region": "ap-guangzhou",
        "Authorization": f"TC3-HMAC-SHA256 Credential={DEFAULT_SECRET_ID}/2027-01-15/sms/"
                         f"tc3_request, SignedHeaders={signed_headers}, Signature={signature}",
    }
    assert "Error" not in post(http, sandbox, headers, data)
    # Values are lower-cased in the canonical form, so the signature still holds and it is
    # the action check (case-sensitive) that refuses this one.
    headers["X-TC-Action"] = "SendSMS"
    assert error_code(post(http, sandbox, headers, data)) == "InvalidAction"
    headers["X-TC-Action"] = "SendSmsX"
    assert error_code(post(http, sandbox, headers, data)) == "AuthFailure.SignatureFailure"


@pytest.mark.parametrize("mangle,code", [
    (lambda a: None, "AuthFailure.InvalidAuthorization"),
    (lambda a: a.replace("TC3-HMAC-SHA256 ", "HMAC-SHA1 ", 1), "AuthFailure.InvalidAuthorization"),
    (lambda a: a.replace("SignedHeaders=content-type;host", "SignedHeaders=host"),
     "AuthFailure.InvalidAuthorization"),
    (lambda a: a.replace("/sms/", "/cvm/"), "AuthFailure.SignatureFailure"),
    (lambda a: re.sub(r"/\d{4}-\d\d-\d\d/", "/2020-01-01/", a), "AuthFailure.SignatureFailure"),
    (lambda a: a.split(", Signature=")[0], "AuthFailure.InvalidAuthorization"),
])
def test_malformed_authorization_headers(sandbox: SmsSandbox, http: requests.Session,
                                         mangle: Any, code: str) -> None:
    headers, data = signed(sandbox, body())
    changed = mangle(headers["Authorization"])
    if changed is None:
        del headers["Authorization"]
    else:
        headers["Authorization"] = changed
    assert error_code(post(http, sandbox, headers, data)) == code


@pytest.mark.parametrize("header,value,code", [
    ("X-TC-Action", "SendSmsV2", "InvalidAction"),
    ("X-TC-Version", "2019-07-11", "NoSuchVersion"),
])
def test_action_and_version(sandbox: SmsSandbox, http: requests.Session, header: str,
                            value: str, code: str) -> None:
    headers, data = signed(sandbox, body())
    headers[header] = value  # not signed by the SDK, so only the value check can refuse it
    assert error_code(post(http, sandbox, headers, data)) == code


def test_region_is_required_and_known(sandbox: SmsSandbox, http: requests.Session) -> None:
    headers, data = signed(sandbox, body(), region="ap-mars")
    assert error_code(post(http, sandbox, headers, data)) == (
        "UnsupportedOperation.UnsupportedRegion")
    headers, data = signed(sandbox, body())
    del headers["X-TC-Region"]
    assert error_code(post(http, sandbox, headers, data)) == "MissingParameter"


# --- the request's own checks ------------------------------------------------------------


@pytest.mark.parametrize("changes,code", [
    ({"SmsSdkAppId": "1400999999"}, "InvalidParameterValue.SdkAppIdNotExist"),
    ({"SmsSdkAppId": None}, "MissingParameter"),
    ({"TemplateId": "999"}, "FailedOperation.TemplateIncorrectOrUnapproved"),
    ({"TemplateParamSet": ["only one"]},
     "FailedOperation.TemplateParamSetNotMatchApprovedTemplate"),
    ({"TemplateParamSet": ["Coffee", "x" * 13]},
     "InvalidParameterValue.TemplateParameterLengthLimit"),
    ({"TemplateParamSet": ["Coffee", 5]}, "InvalidParameter"),
    ({"SignName": "Nobody"}, "FailedOperation.SignatureIncorrectOrUnapproved"),
    ({"SignName": None}, "FailedOperation.SignatureIncorrectOrUnapproved"),  # domestic: needed
    ({"PhoneNumberSet": []}, "MissingParameter.EmptyPhoneNumberSet"),
    ({"PhoneNumberSet": [f"+86138{i:08d}" for i in range(201)]},
     "LimitExceeded.PhoneNumberCountLimit"),
    ({"SessionContext": "x" * 512}, "InvalidParameter"),
])
def test_request_level_refusals(sandbox: SmsSandbox, http: requests.Session,
                                changes: dict[str, Any], code: str) -> None:
    headers, data = signed(sandbox, body(**changes))
    answer = post(http, sandbox, headers, data)
    assert set(answer) == {"Error", "RequestId"}
    assert answer["Error"]["Code"] == code and answer["Error"]["Message"]
    assert sandbox.accepted == []
    assert sandbox.attempts[-1].code == code


def test_a_sign_name_is_optional_abroad(sandbox: SmsSandbox, http: requests.Session) -> None:
    headers, data = signed(sandbox, body(SignName=None, PhoneNumberSet=["+6591234567"]))
    [status] = post(http, sandbox, headers, data)["SendStatusSet"]
    assert status["Code"] == "Ok" and status["IsoCode"] == "SG"


def test_per_number_codes_in_one_request(sandbox: SmsSandbox, http: requests.Session) -> None:
    sandbox.blacklist("+8613800000002")
    numbers = ["+8613800000001", "+8613800000002", "8613800000003"]
    headers, data = signed(sandbox, body(PhoneNumberSet=numbers, SessionContext="ctx"))
    statuses = post(http, sandbox, headers, data)["SendStatusSet"]
    assert [s["Code"] for s in statuses] == [
        "Ok", "FailedOperation.PhoneNumberInBlacklist",
        "InvalidParameterValue.IncorrectPhoneNumber"]
    assert [s["Fee"] for s in statuses] == [1, 0, 0]
    assert [bool(s["SerialNo"]) for s in statuses] == [True, False, False]
    assert all(s["SessionContext"] == "ctx" for s in statuses)
    assert [a["phone"] for a in sandbox.accepted] == ["+8613800000001"]


def test_accepted_records_the_request(sandbox: SmsSandbox, http: requests.Session) -> None:
    headers, data = signed(sandbox, body(SessionContext="row=7"))
    post(http, sandbox, headers, data)
    [rec] = sandbox.accepted
    assert {k: rec[k] for k in ("phone", "template_id", "params", "sign_name",
                                "session_context", "sdk_app_id", "region")} == {
        "phone": PHONE, "template_id": "1234567", "params": ["Coffee", "shipped"],
        "sign_name": "Herald", "session_context": "row=7", "sdk_app_id": DEFAULT_SDK_APP_ID,
        "region": "ap-guangzhou"}
    assert rec["body"] == json.loads(data)


def test_serial_numbers_are_distinct_strings(sandbox: SmsSandbox,
                                             http: requests.Session) -> None:
    for _ in range(3):
        headers, data = signed(sandbox, body())
        post(http, sandbox, headers, data)
    serials = [r["serial_no"] for r in sandbox.accepted]
    assert len(set(serials)) == 3 and all(isinstance(s, str) for s in serials)


# --- faults ------------------------------------------------------------------------------


def test_an_injected_code_lands_where_tencent_puts_it(sandbox: SmsSandbox,
                                                      http: requests.Session) -> None:
    sandbox.inject("LimitExceeded.PhoneNumberDailyLimit")  # per number
    sandbox.inject("InternalError.Timeout")  # request level
    sandbox.inject("LimitExceeded.AppDailyLimit", where="status")
    headers, data = signed(sandbox, body())
    answers = [post(http, sandbox, headers, data) for _ in range(4)]
    assert answers[0]["SendStatusSet"][0]["Code"] == "LimitExceeded.PhoneNumberDailyLimit"
    assert answers[0]["SendStatusSet"][0]["SerialNo"] == ""
    assert answers[1]["Error"]["Code"] == "InternalError.Timeout"
    assert answers[2]["SendStatusSet"][0]["Code"] == "LimitExceeded.AppDailyLimit"
    assert answers[3]["SendStatusSet"][0]["Code"] == "Ok"
    assert [a.fault for a in sandbox.attempts] == [
        "LimitExceeded.PhoneNumberDailyLimit", "InternalError.Timeout",
        "LimitExceeded.AppDailyLimit", None]


def test_an_injected_code_for_one_number_and_n_times(sandbox: SmsSandbox,
                                                     http: requests.Session) -> None:
    sandbox.inject("FailedOperation.PhoneNumberInBlacklist", times=2, phone="+8613800000009")
    codes = []
    for phone in ["+8613800000001", "+8613800000009", "+8613800000009", "+8613800000009"]:
        headers, data = signed(sandbox, body(PhoneNumberSet=[phone]))
        codes.append(post(http, sandbox, headers, data)["SendStatusSet"][0]["Code"])
    assert codes == ["Ok", "FailedOperation.PhoneNumberInBlacklist",
                     "FailedOperation.PhoneNumberInBlacklist", "Ok"]


def test_transport_faults(sandbox: SmsSandbox, http: requests.Session) -> None:
    headers, data = signed(sandbox, body())
    sandbox.inject("http_502")
    resp = http.post(sandbox.url + "/", headers=headers, data=data, timeout=5)
    assert resp.status_code == 502 and "Bad Gateway" in resp.text
    sandbox.inject("non_json")
    resp = http.post(sandbox.url + "/", headers=headers, data=data, timeout=5)
    assert resp.status_code == 200 and resp.text.startswith("<html>")
    sandbox.inject("reset")
    with pytest.raises(requests.ConnectionError):
        http.post(sandbox.url + "/", headers=headers, data=data, timeout=5)
    sandbox.inject("timeout")
    with pytest.raises(requests.Timeout):
        http.post(sandbox.url + "/", headers=headers, data=data, timeout=0.3)
    assert [a.fault for a in sandbox.attempts] == ["http_502", "non_json", "reset", "timeout"]


def test_a_typo_in_a_fault_fails_at_once(sandbox: SmsSandbox) -> None:
    with pytest.raises(ValueError):
        sandbox.inject("timeuot ")
    with pytest.raises(ValueError):
        sandbox.inject("http_99")
    with pytest.raises(ValueError):
        sandbox.inject("Ok", where="sideways")


def test_latency_applies_to_sends(sandbox: SmsSandbox, http: requests.Session) -> None:
    sandbox.latency = 0.2
    headers, data = signed(sandbox, body())
    start = time.perf_counter()
    post(http, sandbox, headers, data)
    assert time.perf_counter() - start >= 0.2


# --- the control API ---------------------------------------------------------------------


def test_the_http_control_api(sandbox: SmsSandbox, http: requests.Session) -> None:
    def control(name: str, payload: dict[str, Any]) -> requests.Response:
        return http.post(f"{sandbox.url}/_sandbox/{name}", json=payload, timeout=5)

    assert control("blacklist", {"phone": "+8613800000001"}).json() == {"ok": True}
    assert control("inject", {"fault": "RequestLimitExceeded", "times": 1}).json() == {"ok": True}
    assert control("config", {"latency": 0.01}).json() == {"ok": True}
    assert sandbox.latency == 0.01
    assert control("inject", {"fault": "nonsense fault"}).status_code == 400
    assert control("nothing", {}).status_code == 404

    headers, data = signed(sandbox, body(PhoneNumberSet=["+8613800000001"]))
    assert error_code(post(http, sandbox, headers, data)) == "RequestLimitExceeded"
    assert post(http, sandbox, headers, data)["SendStatusSet"][0]["Code"] == (
        "FailedOperation.PhoneNumberInBlacklist")
    headers, data = signed(sandbox, body())
    post(http, sandbox, headers, data)
    stats = http.get(f"{sandbox.url}/_sandbox/stats", timeout=5).json()
    assert stats["accepted"] == 1 and stats["attempts"] == 3
    accepted = http.get(f"{sandbox.url}/_sandbox/accepted", timeout=5).json()
    assert accepted[0]["phone"] == PHONE
    attempts = http.get(f"{sandbox.url}/_sandbox/attempts", timeout=5).json()
    assert [a["code"] for a in attempts] == [
        "RequestLimitExceeded", "FailedOperation.PhoneNumberInBlacklist", "Ok"]

    control("inject", {"fault": "InternalError.Timeout", "times": 5})
    assert control("clear_faults", {}).json() == {"ok": True}
    assert control("reset", {}).json() == {"ok": True}
    assert sandbox.accepted == [] and sandbox.stats()["faults_pending"] == 0


def test_unknown_paths_answer_in_the_api_shape(sandbox: SmsSandbox,
                                               http: requests.Session) -> None:
    resp = http.get(sandbox.url + "/", timeout=5)
    assert resp.json()["Response"]["Error"]["Code"] == "InvalidAction"


# --- delivery callbacks --------------------------------------------------------------------


def test_split_number() -> None:
    assert split_number("+8613800000000") == ("86", "13800000000")
    assert split_number("+14155550100") == ("1", "4155550100")
    assert split_number("+85291234567") == ("852", "91234567")
    assert split_number("+6591234567") == ("65", "91234567")


def test_a_delivery_report_arrives(clock: FakeClock, http: requests.Session) -> None:
    with Receiver() as receiver, SmsSandbox(templates=TEMPLATES, sign_names=SIGNS, clock=clock,
                                            callback_url=receiver.url,
                                            callback_delay=0.05) as sb:
        headers, data = signed(sb, body())
        serial = post(http, sb, headers, data)["SendStatusSet"][0]["SerialNo"]
        assert receiver.wait(lambda r: len(r.reports()) == 1)
        assert sb.wait_reports(1)
        [report] = receiver.reports()
        assert report == {
            # the fake clock's moment plus the delay, in Beijing time
            "user_receive_time": "2027-01-15 16:00:00",
            "nationcode": "86",
            "mobile": "13800000000",
            "report_status": "SUCCESS",
            "errmsg": "DELIVRD",
            "description": "用户短信送达成功",
            "sid": serial,
        }
        [cb] = sb.callbacks
        assert cb.ok and cb.status == 200 and cb.try_no == 1
        assert json.loads(cb.body) == {"result": 0, "errmsg": "OK"}


def test_an_undeliverable_number_reports_fail(http: requests.Session) -> None:
    with Receiver() as receiver, SmsSandbox(templates=TEMPLATES, sign_names=SIGNS,
                                            callback_url=receiver.url) as sb:
        sb.undeliverable("+8613800000002")
        for phone in ("+8613800000001", "+8613800000002"):
            headers, data = sdk_headers_now(sb, body(PhoneNumberSet=[phone]))
            post(http, sb, headers, data)
        assert receiver.wait(lambda r: len(r.reports()) == 2)
        by_mobile = {r["mobile"]: r for r in receiver.reports()}
        assert by_mobile["13800000001"]["report_status"] == "SUCCESS"
        failed = by_mobile["13800000002"]
        assert failed["report_status"] == "FAIL" and failed["errmsg"] == "UNDELIV"
        assert failed["sid"] == sb.accepted[1]["serial_no"]


def test_close_sends_share_one_post(http: requests.Session) -> None:
    with Receiver() as receiver, SmsSandbox(templates=TEMPLATES, sign_names=SIGNS,
                                            callback_url=receiver.url,
                                            callback_delay=0.3) as sb:
        for i in range(5):
            headers, data = sdk_headers_now(sb, body(PhoneNumberSet=[f"+86138000000{i:02d}"]))
            post(http, sb, headers, data)
        assert receiver.wait(lambda r: len(r.reports()) == 5)
        assert len(receiver.posts) == 1 and len(receiver.posts[0]) == 5
        assert [r["sid"] for r in receiver.posts[0]] == [a["serial_no"] for a in sb.accepted]


def test_a_failed_callback_is_retried_with_back_off(http: requests.Session) -> None:
    answers = [(500, b"oops"), (200, b'{"result":1,"errmsg":"busy"}')]
    with Receiver(answers) as receiver, SmsSandbox(templates=TEMPLATES, sign_names=SIGNS,
                                                   callback_url=receiver.url,
                                                   callback_backoff=0.05) as sb:
        headers, data = sdk_headers_now(sb, body())
        post(http, sb, headers, data)
        assert sb.wait_reports(1)
        assert [(c.try_no, c.status, c.ok) for c in sb.callbacks] == [
            (1, 500, False), (2, 200, False), (3, 200, True)]
        assert sb.callbacks[1].body == '{"result":1,"errmsg":"busy"}'
        assert len(receiver.posts) == 3 and receiver.posts[0] == receiver.posts[2]
        assert sb.stats()["reports_delivered"] == 1


def test_a_callback_is_given_up_after_the_retries(http: requests.Session) -> None:
    with Receiver([(503, b"down")] * 10) as receiver, SmsSandbox(
        templates=TEMPLATES, sign_names=SIGNS, callback_url=receiver.url,
        callback_backoff=0.02, callback_retries=2,
    ) as sb:
        headers, data = sdk_headers_now(sb, body())
        post(http, sb, headers, data)
        assert sb.wait_reports(1)
        assert [c.try_no for c in sb.callbacks] == [1, 2, 3]
        assert sb.stats()["reports_dropped"] == 1 and sb.stats()["reports_delivered"] == 0


def test_an_unreachable_callback_is_recorded(http: requests.Session) -> None:
    with SmsSandbox(templates=TEMPLATES, sign_names=SIGNS, callback_url="http://127.0.0.1:9/x",
                    callback_backoff=0.01, callback_retries=1) as sb:
        headers, data = sdk_headers_now(sb, body())
        post(http, sb, headers, data)
        assert sb.wait_reports(1)
        assert sb.callbacks[0].status is None and "Error" in sb.callbacks[0].body


def sdk_headers_now(sb: SmsSandbox, params: dict[str, Any]) -> tuple[dict[str, str], str]:
    return signed(sb, params, timestamp=int(time.time()))


# --- the command line ----------------------------------------------------------------------


def test_the_command_line_entry_point(tmp_path: Path, http: requests.Session) -> None:
    from channels.tencent_sms import SmsClient

    port_file = tmp_path / "port"
    with Receiver() as receiver:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox.sms", "--port", "0", "--port-file", str(port_file),
             "--latency", "0.05", "--callback-url", receiver.url],
            cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        )
        try:
            deadline = time.monotonic() + 20
            while not port_file.exists() and time.monotonic() < deadline:
                assert proc.poll() is None
                time.sleep(0.05)
            url = f"http://127.0.0.1:{int(port_file.read_text())}"
            client = SmsClient(url, DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY, "ap-guangzhou",
                               DEFAULT_SDK_APP_ID, timeout=5)
            start = time.perf_counter()
            answer = client.send(PHONE, "1234567", ["a", "b"], "Herald")
            assert time.perf_counter() - start >= 0.05
            client.close()
            assert answer.code == "Ok"
            assert receiver.wait(lambda r: len(r.reports()) == 1)
            assert receiver.reports()[0]["sid"] == answer.serial_no
            stats = http.get(f"{url}/_sandbox/stats", timeout=5).json()
            assert stats["accepted"] == 1
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
