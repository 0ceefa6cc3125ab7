"""Tencent Cloud SMS client (SendSms, API 3.0, version 2021-01-11, TC3-HMAC-SHA256).

One pooled requests.Session shared by all send threads, our own TC3 signer, answers as
values never exceptions, like channels/wechat_api.py.

Why not the official SDK (tencentcloud-sdk-python-sms 3.1.153): it does reach a
plain-HTTP loopback endpoint (HttpProfile(protocol="http", endpoint="127.0.0.1:PORT")),
keeps connections alive and survived 16 threads sharing one client. bench/sms_drain.py,
2 cores, 50 ms sandbox latency: 16 threads, own 304-306 msg/s vs SDK 300-303 (ceiling
320); 64 threads, own 1,093 vs SDK 913, the SDK opening 121 connections to our 65 (its
session keeps requests' default 10 idle); no latency, own 1,223 vs SDK 1,032. Client CPU
0.76-0.82 ms/msg vs 1.0-1.1. Beyond speed: the SDK folds timeouts, resets and HTTP
statuses into one ClientNetworkError/ServerNetworkError text (Herald needs timed_out
and the status), re-reads proxy variables per request, and at DEBUG logs the whole
request, Authorization header included. The tests hold this signer against the SDK's
`tencentcloud.common.sign.Sign.sign_tc3` and its request builder on fixed inputs.

Kinds use the shared vocabulary of channels/base.py. The code table below is
from the SendSms error page (cloud.tencent.com/document/api/382/59177), the common error
page (cloud.tencent.com/document/api/382/52075), and the SDK's own list
(tencentcloud/sms/v20210111/errorcodes.py in tencentcloud-sdk-python-sms 3.1.153), which
names every code used here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from channels.base import Kind, Meaning
from channels.http import make_session, root_cause
from logs import CLEAN_WINDOW, MASK, add_secret, redact

ACTION = "SendSms"
VERSION = "2021-01-11"
SERVICE = "sms"
ALGORITHM = "TC3-HMAC-SHA256"
# Exactly what the SDK sends for a JSON POST; signed and sent must be identical.
CONTENT_TYPE = "application/json"
SIGNED_HEADERS = "content-type;host"

# --- what Tencent's codes mean for a row --------------------------------------------

# Exact codes first; then the family prefixes in FAMILIES; anything else is permanent.
CODES: dict[str, Meaning] = {
    "Ok": Meaning(Kind.SUCCESS, "accepted"),  # SendStatusSet[].Code on success
    # 59177: 请求下发短信超时. Retry, but it may have gone out: a duplicate is possible.
    "InternalError.Timeout": Meaning(Kind.TRANSIENT, "Tencent timed out sending (it may "
                                                     "have delivered)"),
    # Back off. Herald's QUOTA_MINUTE is used as "wait, then retry"; the daily ones will
    # keep answering the same until the day turns (dispatch may treat them as QUOTA_DAY).
    "LimitExceeded.DeliveryFrequencyLimit": Meaning(Kind.QUOTA_MINUTE,
                                                    "frequency limit policy hit"),
    "LimitExceeded.PhoneNumberThirtySecondLimit": Meaning(Kind.QUOTA_MINUTE,
                                                          "per-number 30-second limit"),
    "LimitExceeded.PhoneNumberOneHourLimit": Meaning(Kind.QUOTA_MINUTE,
                                                     "per-number one-hour limit"),
    "LimitExceeded.PhoneNumberDailyLimit": Meaning(Kind.QUOTA_MINUTE, "per-number daily limit"),
    "LimitExceeded.PhoneNumberSameContentDailyLimit": Meaning(
        Kind.QUOTA_MINUTE, "per-number same-content daily limit"),
    "LimitExceeded.AppDailyLimit": Meaning(Kind.QUOTA_MINUTE, "SdkAppId daily limit"),
    "LimitExceeded.AppMainlandChinaDailyLimit": Meaning(Kind.QUOTA_MINUTE,
                                                        "SdkAppId mainland daily limit"),
    "LimitExceeded.AppGlobalDailyLimit": Meaning(Kind.QUOTA_MINUTE,
                                                 "SdkAppId international daily limit"),
    "LimitExceeded.AppCountryOrRegionDailyLimit": Meaning(Kind.QUOTA_MINUTE,
                                                          "per-country daily limit"),
    "LimitExceeded.DailyLimit": Meaning(Kind.QUOTA_MINUTE, "international daily limit"),
    "LimitExceeded.GlobalSmsSendingRateLimit": Meaning(Kind.QUOTA_MINUTE,
                                                       "international sending rate limit"),
    # Two LimitExceeded codes that no waiting fixes: a country banned in the console, and
    # more than 200 numbers in one call (Herald sends one).
    "LimitExceeded.AppCountryOrRegionInBlacklist": Meaning(Kind.PERMANENT,
                                                           "country or region not allowed"),
    "LimitExceeded.PhoneNumberCountLimit": Meaning(Kind.PERMANENT, "over 200 numbers in a call"),
    # Common errors (52075): the API's request rate, not the SMS rate. Back off.
    "RequestLimitExceeded": Meaning(Kind.QUOTA_MINUTE, "API request rate limit"),
    # Permanent for this row: resending the same request cannot succeed.
    "FailedOperation.PhoneNumberInBlacklist": Meaning(Kind.PERMANENT,
                                                      "number unsubscribed or blocked"),
    "InvalidParameterValue.IncorrectPhoneNumber": Meaning(Kind.PERMANENT,
                                                          "incorrect phone number"),
    "FailedOperation.TemplateIncorrectOrUnapproved": Meaning(
        Kind.PERMANENT, "template not approved or content mismatch"),
    "FailedOperation.TemplateParamSetNotMatchApprovedTemplate": Meaning(
        Kind.PERMANENT, "parameter count differs from the approved template"),
    "FailedOperation.SignatureIncorrectOrUnapproved": Meaning(
        Kind.PERMANENT, "sign name not approved or malformed"),
    "InvalidParameterValue.TemplateParameterFormatError": Meaning(
        Kind.PERMANENT, "verification-code parameter must be 0-6 digits"),
    "InvalidParameterValue.TemplateParameterLengthLimit": Meaning(
        Kind.PERMANENT, "a template parameter is too long"),
    "InvalidParameterValue.ProhibitedUseUrlInTemplateParameter": Meaning(
        Kind.PERMANENT, "URLs are not allowed in template parameters"),
    "FailedOperation.ContainSensitiveWord": Meaning(Kind.PERMANENT, "content has sensitive words"),
    "InvalidParameterValue.ContentLengthLimit": Meaning(Kind.PERMANENT, "message too long"),
    "FailedOperation.MarketingSendTimeConstraint": Meaning(
        Kind.PERMANENT, "marketing SMS only between 8:00 and 22:00"),
    # Clock skew (52075: timestamp more than five minutes off). A fresh timestamp on retry
    # helps if the skew passes; a host clock that stays wrong needs NTP, not retries.
    "AuthFailure.SignatureExpire": Meaning(Kind.TRANSIENT, "request timestamp more than 5 "
                                                           "minutes off (check the clock)"),
    # Account set-up rather than the row: rows should wait for an operator, as with
    # AuthFailure (the Kind's meaning: alert, rows wait).
    "InvalidParameterValue.SdkAppIdNotExist": Meaning(Kind.CREDENTIAL, "SdkAppId does not exist"),
    "FailedOperation.InsufficientBalanceInSmsPackage": Meaning(Kind.CREDENTIAL,
                                                               "SMS package used up"),
}

# Code families, matched by prefix when the exact code is not in CODES (each prefix also
# matches the bare family code, e.g. "LimitExceeded" from the common error table).
FAMILIES: tuple[tuple[str, Meaning], ...] = (
    ("InternalError", Meaning(Kind.TRANSIENT, "Tencent internal error")),
    ("LimitExceeded", Meaning(Kind.QUOTA_MINUTE, "a sending limit was hit")),
    ("RequestLimitExceeded", Meaning(Kind.QUOTA_MINUTE, "API request rate limit")),
    # Wrong SecretId/SecretKey, malformed or failing signature, MFA/token problems.
    ("AuthFailure", Meaning(Kind.CREDENTIAL, "authentication failed (SecretId/SecretKey)")),
    # IP not whitelisted, SdkAppId disabled, service suspended for arrears, no permission.
    ("UnauthorizedOperation", Meaning(Kind.CREDENTIAL, "operation not authorized for the "
                                                       "account")),
)
UNKNOWN = Meaning(Kind.PERMANENT, "code not in Herald's table")


def meaning(code: str) -> Meaning:
    """The meaning of a Tencent Code; unknown codes are permanent, so nothing loops on a
    code nobody has seen (an operator can re-drive such rows)."""
    found = CODES.get(code)
    if found is not None:
        return found
    for prefix, family in FAMILIES:
        if code.startswith(prefix):
            return family
    return UNKNOWN


# Answers that carry no Tencent code at all
HTTP_STATUS = Meaning(Kind.TRANSIENT, "Tencent answered HTTP {status}")
TIMEOUT = Meaning(Kind.TRANSIENT, "timed out waiting for Tencent (it may have delivered)")
CONNECTION = Meaning(Kind.TRANSIENT, "connection to Tencent failed")
NON_JSON = Meaning(Kind.TRANSIENT, "Tencent's answer was not API 3.0 JSON")


@dataclass(frozen=True, slots=True)
class SmsAnswer:
    """One SendSms call's outcome for its one number."""

    kind: Kind
    code: str | None  # Tencent's Code ("Ok", "FailedOperation..."), None for transport faults
    reason: str  # readable; never the SecretKey, the signature or the Authorization header
    serial_no: str | None = None  # SendStatusSet[].SerialNo, as text; the receipt's sid
    fee: int | None = None  # billed segments
    request_id: str | None = None
    timed_out: bool = False


# --- input checks ----------------------------------------------------------------------

# Visual separators people type into numbers; E.164 itself has none.
_SEPARATORS = re.compile(r"[\s\-().]")

# Per-parameter length: the SendSms error page of the older API (382/3771, error 1036:
# 单个模板变量字符数超过12个) and the review standard for personal accounts (tencentcloud.com
# 382/40659) say 12 characters, each character counting one whatever its width. Newer pages
# differ: 382/39023 (2025) says the console shows each account's limit, and the SDK's
# errorcodes.py says accounts opened after 2024-01-25 default to 6, while enterprise
# accounts may have no limit. Hence max_chars is a parameter.
PARAM_MAX_CHARS = 12


def validate_phone(text: str) -> str:
    """An E.164 number ('+' then 8 to 15 digits, the first not 0) in normal form; spaces,
    hyphens, dots and brackets are dropped. Raises ValueError with a readable reason."""
    if not isinstance(text, str):
        raise ValueError(f"phone number must be text, not {type(text).__name__}")
    number = _SEPARATORS.sub("", text)
    if not number:
        raise ValueError("phone number is empty")
    if not number.startswith("+"):
        raise ValueError("phone number must start with '+' and the country code (E.164), "
                         "e.g. +8613800000000")
    digits = number[1:]
    if not digits.isascii() or not digits.isdigit():
        raise ValueError("phone number may hold only digits after the '+'")
    if digits[0] == "0":
        raise ValueError("country code cannot start with 0")
    if not 8 <= len(digits) <= 15:
        raise ValueError(f"phone number has {len(digits)} digits; E.164 allows 8 to 15")
    if digits.startswith("86") and not (len(digits) == 13 and digits[2] == "1"):
        # Mainland China: SMS goes to mobiles only, 11 digits starting with 1.
        raise ValueError("a +86 number must be a mobile: 11 digits starting with 1")
    return number


def check_params(params: list[str], max_chars: int = PARAM_MAX_CHARS) -> None:
    """TemplateParamSet as Tencent takes it: a list of strings, each at most max_chars
    characters (see PARAM_MAX_CHARS for the sources). Raises ValueError naming the index."""
    if not isinstance(params, list):
        raise ValueError(f"template parameters must be a list, not {type(params).__name__}")
    for index, value in enumerate(params):
        if not isinstance(value, str):
            raise ValueError(f"template parameter {index} must be text, not "
                             f"{type(value).__name__}")
        if len(value) > max_chars:
            raise ValueError(f"template parameter {index} has {len(value)} characters; "
                             f"Tencent allows at most {max_chars}")


# --- TC3-HMAC-SHA256, the signing side ---------------------------------------------------


def _hmac_sha256(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret_key: str, date: str, service: str = SERVICE) -> bytes:
    """kSigning = HMAC(HMAC(HMAC("TC3" + key, date), service), "tc3_request")."""
    k_date = _hmac_sha256(("TC3" + secret_key).encode("utf-8"), date)
    return _hmac_sha256(_hmac_sha256(k_date, service), "tc3_request")


def string_to_sign(host: str, body: bytes, timestamp: int, service: str = SERVICE) -> str:
    """The canonical request of a JSON POST to '/' (no query; content-type and host
    signed), hashed into the string to sign (cloud.tencent.com/document/api/382/52072)."""
    canonical_request = (
        f"POST\n/\n\ncontent-type:{CONTENT_TYPE}\nhost:{host}\n\n{SIGNED_HEADERS}\n"
        + hashlib.sha256(body).hexdigest()
    )
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    digest = hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{timestamp}\n{date}/{service}/tc3_request\n{digest}"


def sign(secret_key: str, host: str, body: bytes, timestamp: int,
         service: str = SERVICE) -> str:
    """The hex TC3 signature of one request."""
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    key = signing_key(secret_key, date, service)
    text = string_to_sign(host, body, timestamp, service)
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def _host_of(endpoint: str) -> tuple[str, str]:
    """(URL to POST to, Host header to sign). Default ports are dropped from Host, as
    HTTP clients do, so the signed value is the one sent."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"SMS endpoint must be an http(s) URL, not {endpoint!r}")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}[parts.scheme]
    if parts.port is not None and parts.port != default:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{parts.netloc}/", host


# Anything shaped like a TC3 Authorization header or signature, in case a server or a
# library echoes one back.
_SIGNATURE_RE = re.compile(r"(?i)(signature\s*[=:]\s*[\"']?)[0-9a-f]{16,}")
_CREDENTIAL_RE = re.compile(r"(?i)(TC3-HMAC-SHA256\s+)[^\r\n\"']+")


class SmsClient:
    """Sends one SMS per call. Thread-safe: share one client among all sender threads."""

    def __init__(
        self,
        endpoint: str,
        secret_id: str,
        secret_key: str,
        region: str,
        sdk_app_id: str,
        timeout: float,
        pool_size: int = 16,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url, self.host = _host_of(endpoint)
        self.secret_id = secret_id
        self._secret_key = secret_key
        self.region = region
        self.sdk_app_id = str(sdk_app_id)
        self.clock = clock
        # Every log record Herald makes masks the key from now on (logs.py).
        add_secret(secret_key)
        # (connect, read): as in channels/wechat_api.py
        self.timeout = (min(timeout, 5.0), timeout)
        # proxies and the CA bundle read once, one kept-alive connection per sender
        # thread (the SDK's session would keep 10): channels/http.py, as the WeChat client
        self.session = make_session(self.url, pool_size)
        # The signing key changes once a UTC day; derive it once per day, not per send.
        self._key_lock = threading.Lock()
        self._key_date = ""
        self._key = b""

    def close(self) -> None:
        self.session.close()

    # --- signing -----------------------------------------------------------------------

    def _key_for(self, date: str) -> bytes:
        with self._key_lock:
            if date != self._key_date:
                self._key = signing_key(self._secret_key, date)
                self._key_date = date
            return self._key

    def _headers(self, body: bytes) -> tuple[dict[str, str], str]:
        timestamp = int(self.clock())
        date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
        text = string_to_sign(self.host, body, timestamp)
        signature = hmac.new(self._key_for(date), text.encode("utf-8"),
                             hashlib.sha256).hexdigest()
        headers = {
            "Authorization": (f"{ALGORITHM} Credential={self.secret_id}/{date}/{SERVICE}/"
                              f"tc3_request, SignedHeaders={SIGNED_HEADERS}, "
                              f"Signature={signature}"),
            "Content-Type": CONTENT_TYPE,
            "Host": self.host,
            "X-TC-Action": ACTION,
            "X-TC-Version": VERSION,
            "X-TC-Timestamp": str(timestamp),
            "X-TC-Region": self.region,
        }
        return headers, signature

    def _clean(self, text: str, signature: str = "") -> str:
        """Text from the network or from an exception, fit for a reason or a log line.
        Masked whole before any cut: a cut first could leave a secret's first half."""
        text = text.replace(self._secret_key, MASK)
        if len(self.secret_id) >= 4:  # Tencent echoes the SecretId in some errors
            text = text.replace(self.secret_id, MASK)
        if signature:
            text = text.replace(signature, MASK)
        text = _CREDENTIAL_RE.sub(lambda m: m.group(1) + MASK, text)
        text = _SIGNATURE_RE.sub(lambda m: m.group(1) + MASK, text)
        return redact(text)

    # --- the call ----------------------------------------------------------------------

    def send(self, phone_e164: str, template_id: str, params: list[str],
             sign_name: str | None, session_context: str | None = None) -> SmsAnswer:
        """SendSms to one number. Never raises: every outcome is an SmsAnswer."""
        try:
            phone = validate_phone(phone_e164)
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                raise ValueError("template parameters must be a list of strings")
        except ValueError as exc:
            return SmsAnswer(Kind.PERMANENT, None, f"not sent: {exc}")
        payload: dict[str, Any] = {
            "PhoneNumberSet": [phone],
            "SmsSdkAppId": self.sdk_app_id,
            "TemplateId": str(template_id),
            "TemplateParamSet": params,
        }
        if sign_name:
            payload["SignName"] = sign_name
        if session_context is not None:
            payload["SessionContext"] = session_context
        # The exact bytes that are signed are the bytes sent.
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers, signature = self._headers(body)
        try:
            resp = self.session.post(self.url, data=body, headers=headers, timeout=self.timeout)
        except requests.Timeout as exc:
            return SmsAnswer(TIMEOUT.kind, None,
                             f"{TIMEOUT.text}: {self._clean(root_cause(exc), signature)[:200]}",
                             timed_out=True)
        except requests.RequestException as exc:
            return SmsAnswer(CONNECTION.kind, None,
                             f"{CONNECTION.text}: {self._clean(root_cause(exc), signature)[:200]}")
        if resp.status_code != 200:
            # API 3.0 answers 200 even for errors; anything else is a gateway or proxy.
            return SmsAnswer(HTTP_STATUS.kind, None,
                             HTTP_STATUS.text.format(status=resp.status_code))
        return self._judge(resp, phone, signature)

    def _judge(self, resp: requests.Response, phone: str, signature: str) -> SmsAnswer:
        try:
            payload = resp.json()
            answer = payload["Response"]
            if not isinstance(answer, dict):
                raise ValueError("Response is not an object")
        except (ValueError, KeyError, TypeError):
            snippet = self._clean(resp.text[:CLEAN_WINDOW], signature)[:60]
            return SmsAnswer(NON_JSON.kind, None, f"{NON_JSON.text}: {snippet!r}")
        request_id = _text(answer.get("RequestId"))
        error = answer.get("Error")
        if error is not None:
            if not isinstance(error, dict) or not isinstance(error.get("Code"), str):
                return SmsAnswer(NON_JSON.kind, None, f"{NON_JSON.text}: malformed Error",
                                 request_id=request_id)
            return self._coded(error["Code"], error.get("Message"), signature,
                               request_id=request_id)
        statuses = answer.get("SendStatusSet")
        if not isinstance(statuses, list) or not statuses:
            # Neither an error nor a status: we cannot tell whether it was sent.
            return SmsAnswer(Kind.TRANSIENT, None, "answer lacks SendStatusSet",
                             request_id=request_id)
        status = next((s for s in statuses if isinstance(s, dict)
                       and s.get("PhoneNumber") == phone), statuses[0])
        if not isinstance(status, dict) or not isinstance(status.get("Code"), str):
            return SmsAnswer(Kind.TRANSIENT, None, "malformed SendStatusSet entry",
                             request_id=request_id)
        fee = status.get("Fee")
        return self._coded(
            status["Code"], status.get("Message"), signature, request_id=request_id,
            serial_no=_text(status.get("SerialNo")),
            fee=fee if isinstance(fee, int) and not isinstance(fee, bool) else None,
        )

    def _coded(self, code: str, message: Any, signature: str, *, request_id: str | None,
               serial_no: str | None = None, fee: int | None = None) -> SmsAnswer:
        m = meaning(code)
        code = self._clean(code, signature)[:100]
        if m.kind is Kind.SUCCESS:
            reason = m.text
        else:
            detail = self._clean(str(message or ""), signature)[:200]
            reason = f"{code} {m.text}: {detail}" if detail else f"{code} {m.text}"
        return SmsAnswer(m.kind, code, reason, serial_no=serial_no, fee=fee,
                         request_id=request_id)


def _text(value: Any) -> str | None:
    """A string field as text; empty or missing is None (serial numbers stay strings)."""
    if value is None or value == "":
        return None
    return str(value)
