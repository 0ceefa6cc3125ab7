"""A local stand-in for Tencent Cloud SMS (API 3.0, SendSms 2021-01-11), on 127.0.0.1.

Herald's tests and benchmarks talk to this server instead of sms.tencentcloudapi.com.
It checks what Tencent checks (the TC3-HMAC-SHA256 Authorization header, the timestamp
window, action, version, region, SmsSdkAppId, template, signature name, phone numbers),
answers in the API 3.0 shape (HTTP 200 with `Response.Error` or `Response.SendStatusSet`),
records what it accepted, and lets a test inject what a real network and a real Tencent
produce: error codes for the next N sends, hangs, resets, 5xx pages, HTML bodies.

After an accepted send it can POST the delivery report (状态回调) to a callback URL the way
Tencent does: a JSON array, several results per POST when they pile up, retried with
back-off when the receiver does not answer `{"result": 0, ...}`.

The signature check here is written separately from channels/tencent_sms.py on purpose:
a shared helper would let one bug sign and verify the same wrong thing. The tests hold
both against the SDK's `tencentcloud.common.sign.Sign.sign_tc3`.

The HTTP plumbing is the sandboxes' shared one (sandbox/serving.py): one thread per
connection, one write per answer, no logging; the lock is held only for bookkeeping.

Run it on its own with `python -m sandbox.sms` from the project folder; see main().
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import re
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from sandbox.serving import (
    Emulator,
    Handler,
    add_listen_arguments,
    json_bytes,
    loads,
    serve_from_command_line,
    stop_on_signals,
)

__all__ = [
    "DEFAULT_SDK_APP_ID",
    "DEFAULT_SECRET_ID",
    "DEFAULT_SECRET_KEY",
    "DEFAULT_SIGN_NAME",
    "DEFAULT_TEMPLATES",
    "Attempt",
    "CallbackAttempt",
    "SmsSandbox",
    "main",
]

DEFAULT_SECRET_ID = "AKIDsandbox0000000000000000000000001"
DEFAULT_SECRET_KEY = "sandbox-secret-key-0000000000000001"
DEFAULT_SDK_APP_ID = "1400000001"
DEFAULT_SIGN_NAME = "Herald"
DEFAULT_TEMPLATES: dict[str, int] = {"1234567": 2}

ACTION = "SendSms"
VERSION = "2021-01-11"
SERVICE = "sms"
ALGORITHM = "TC3-HMAC-SHA256"
# Regions the SMS product lists (ap-beijing, ap-guangzhou, ap-nanjing).
REGIONS = frozenset({"ap-beijing", "ap-guangzhou", "ap-nanjing"})
# The common error table (cloud.tencent.com/document/api/382/52075): "Timestamp 和服务器时间
# 相差不得超过五分钟".
MAX_SKEW = 300.0
MAX_NUMBERS = 200  # SendSms doc: at most 200 numbers per call
SESSION_CONTEXT_MAX = 511  # "长度需小于512字节"
# Per-parameter length Tencent enforces (InvalidParameterValue.TemplateParameterLengthLimit);
# 12 per the older API doc (error 1036) and the personal-account review standard.
PARAM_MAX_CHARS = 12

CALLBACK_TIMEOUT = 5.0
CALLBACK_RETRIES = 3  # after the first POST
CALLBACK_BACKOFF = 0.1  # seconds before the first retry; doubles each time
CALLBACK_BATCH = 100  # results per POST at most

# Tencent stamps user_receive_time in Beijing time.
_BEIJING = timezone(timedelta(hours=8))

_E164 = re.compile(r"\+[1-9][0-9]{7,14}")
_CODE = re.compile(r"[A-Z][A-Za-z]*(\.[A-Za-z0-9]+)*")
_NAMED_FAULTS = frozenset({"non_json", "timeout", "reset"})

# Codes Tencent reports per number inside SendStatusSet rather than as Response.Error:
# the request was fine, this one number was not.
PER_NUMBER_CODES = frozenset({
    "FailedOperation.PhoneNumberInBlacklist",
    "InvalidParameterValue.IncorrectPhoneNumber",
    "LimitExceeded.PhoneNumberDailyLimit",
    "LimitExceeded.PhoneNumberOneHourLimit",
    "LimitExceeded.PhoneNumberThirtySecondLimit",
    "LimitExceeded.PhoneNumberSameContentDailyLimit",
    "LimitExceeded.DeliveryFrequencyLimit",
})

MESSAGES: dict[str, str] = {
    "AuthFailure.InvalidAuthorization": "Authorization header is not a valid TC3 header.",
    "AuthFailure.SecretIdNotFound": "The SecretId is not found, please ensure it is correct.",
    "AuthFailure.SignatureExpire": "Signature expired. The timestamp differs from the "
                                   "server time by more than five minutes.",
    "AuthFailure.SignatureFailure": "The provided credentials could not be validated. "
                                    "Please check your signature is correct.",
    "InvalidAction": "The requested action does not exist.",
    "NoSuchVersion": "The requested version does not exist.",
    "MissingParameter": "A required parameter is missing.",
    "UnsupportedOperation.UnsupportedRegion": "The region is not supported.",
    "FailedOperation.JsonParseFail": "The request body could not be parsed as JSON.",
    "InvalidParameter": "A parameter has the wrong type.",
    "InvalidParameterValue.SdkAppIdNotExist": "SdkAppId does not exist.",
    "FailedOperation.TemplateIncorrectOrUnapproved": "template is not approved or not exist",
    "FailedOperation.TemplateParamSetNotMatchApprovedTemplate":
        "the number of template parameters does not match the approved template",
    "InvalidParameterValue.TemplateParameterLengthLimit":
        "the length of a template parameter exceeds the limit",
    "FailedOperation.SignatureIncorrectOrUnapproved": "signature is not approved or not exist",
    "InvalidParameterValue.IncorrectPhoneNumber": "incorrect phone number",
    "FailedOperation.PhoneNumberInBlacklist": "the phone number is in the blacklist",
    "LimitExceeded.PhoneNumberCountLimit": "more than 200 phone numbers in one request",
    "MissingParameter.EmptyPhoneNumberSet": "PhoneNumberSet is empty",
    "LimitExceeded.PhoneNumberDailyLimit":
        "the number of sms messages sent from a single mobile number every day exceeds the "
        "upper limit",
    "LimitExceeded.PhoneNumberThirtySecondLimit":
        "the number of sms messages sent from a single mobile number within 30 seconds "
        "exceeds the upper limit",
    "LimitExceeded.PhoneNumberOneHourLimit":
        "the number of sms messages sent from a single mobile number within 1 hour exceeds "
        "the upper limit",
    "LimitExceeded.DeliveryFrequencyLimit": "the delivery frequency limit was hit",
    "LimitExceeded.AppDailyLimit": "the daily limit of the SdkAppId was reached",
    "InternalError.Timeout": "the request to send sms timed out",
    "RequestLimitExceeded": "the request frequency exceeds the limit",
}

# ITU country calling codes of one and two digits; every other code has three. The codes
# are prefix-free, so this is enough to split an E.164 number into nationcode and mobile.
_CC1 = frozenset({"1", "7"})
_CC2 = frozenset({
    "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46",
    "47", "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63",
    "64", "65", "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98",
})
_ISO = {"86": "CN", "852": "HK", "853": "MO", "886": "TW", "1": "US", "44": "GB",
        "65": "SG", "81": "JP", "82": "KR", "60": "MY", "49": "DE", "33": "FR"}


def split_number(phone: str) -> tuple[str, str]:
    """'+8613800000000' -> ('86', '13800000000')."""
    digits = phone[1:]
    for size, codes in ((1, _CC1), (2, _CC2)):
        if digits[:size] in codes:
            return digits[:size], digits[size:]
    return digits[:3], digits[3:]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One SendSms request that reached the handler (one per number), whatever became of it.

    code is Tencent's Code ('Ok', 'AuthFailure.SignatureFailure', ...) or None for faults
    with no answer body (timeout, reset, HTTP status, non-JSON); fault names the injected
    fault, or None for a request judged on its merits.
    """

    phone: str | None
    template_id: str | None
    code: str | None
    fault: str | None
    at: float


@dataclass(frozen=True, slots=True)
class CallbackAttempt:
    """One POST of delivery reports to the callback URL."""

    reports: list[dict[str, Any]]
    try_no: int  # 1 for the first POST of these reports
    status: int | None  # HTTP status, None when the connection failed
    body: str  # the receiver's answer (first 1,000 characters), or the error text
    ok: bool  # 2xx and {"result": 0}


@dataclass(slots=True)
class _Fault:
    fault: str
    times: int
    phone: str | None
    where: str  # 'auto' | 'error' | 'status'
    message: str | None


@dataclass(slots=True)
class _Report:
    due: float  # time.monotonic() when it may be posted
    item: dict[str, Any]


@dataclass(slots=True)
class _Records:
    accepted: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    callbacks: list[CallbackAttempt] = field(default_factory=list)
    reports_delivered: int = 0
    reports_dropped: int = 0


class _Refusal(Exception):
    """A request-level Response.Error (internal control flow of the judge)."""

    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.message = message or MESSAGES.get(code, code)


def _normalise_fault(fault: str) -> str:
    """Validate a fault spec up front, so a typo fails in the test that wrote it."""
    if isinstance(fault, str):
        text = fault.strip()
        if text in _NAMED_FAULTS:
            return text
        if text.startswith("http_") and text[5:].isdigit() and 400 <= int(text[5:]) <= 599:
            return text
        if _CODE.fullmatch(text):
            return text
    raise ValueError(
        f"unknown fault {fault!r}: expected a Tencent code such as "
        "'LimitExceeded.PhoneNumberDailyLimit', 'http_502', 'non_json', 'timeout' or 'reset'"
    )


# --- TC3-HMAC-SHA256, the verifying side ------------------------------------------------


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def tc3_expected(secret_key: str, date: str, service: str, string_to_sign: str) -> str:
    """The hex signature Tencent expects: HMAC chain TC3+key -> date -> service ->
    'tc3_request', then HMAC of the string to sign (cloud.tencent.com/document/api/382/52072,
    which also says canonical header names and values are trimmed and lower-cased)."""
    key = ("TC3" + secret_key).encode("utf-8")
    for part in (date, service, "tc3_request"):
        key = _hmac(key, part)
    return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def _parse_authorization(value: str) -> tuple[str, str, str, str, list[str], str]:
    """'TC3-HMAC-SHA256 Credential=ID/DATE/sms/tc3_request, SignedHeaders=a;b, Signature=hex'
    -> (algorithm, secret_id, date, service, signed headers, signature)."""
    algorithm, _, rest = value.strip().partition(" ")
    fields: dict[str, str] = {}
    for chunk in rest.split(","):
        name, sep, text = chunk.strip().partition("=")
        if sep:
            fields[name.strip()] = text.strip()
    try:
        credential = fields["Credential"].split("/")
        signed = fields["SignedHeaders"]
        signature = fields["Signature"]
    except KeyError as exc:
        raise _Refusal("AuthFailure.InvalidAuthorization") from exc
    if len(credential) != 4 or credential[3] != "tc3_request" or not signed or not signature:
        raise _Refusal("AuthFailure.InvalidAuthorization")
    secret_id, date, service, _ = credential
    return algorithm, secret_id, date, service, signed.split(";"), signature


class SmsSandbox(Emulator):
    """A Tencent Cloud SMS look-alike HTTP server. Use as a context manager or start()/stop().

    templates maps TemplateId to its number of parameters (None: any template, any count);
    sign_names is the set of approved signature names (None: any name, and none required).
    """

    server_version = "herald-sms-sandbox"
    label = "sms sandbox"

    def __init__(
        self,
        secret_id: str = DEFAULT_SECRET_ID,
        secret_key: str = DEFAULT_SECRET_KEY,
        sdk_app_id: str = DEFAULT_SDK_APP_ID,
        templates: dict[str, int] | None = None,
        sign_names: set[str] | None = None,
        latency: float = 0.0,
        callback_url: str | None = None,
        callback_delay: float = 0.05,
        clock: Callable[[], float] = time.time,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        param_max_chars: int = PARAM_MAX_CHARS,
        callback_retries: int = CALLBACK_RETRIES,
        callback_backoff: float = CALLBACK_BACKOFF,
    ) -> None:
        self.secret_id = secret_id
        self.secret_key = secret_key
        self.sdk_app_id = str(sdk_app_id)
        self.templates: dict[str, int] | None = dict(templates) if templates is not None else None
        self.sign_names: set[str] | None = set(sign_names) if sign_names is not None else None
        # Read once per request without the lock (see sandbox/wechat/core.py).
        self.latency = float(latency)
        self.callback_url = callback_url
        self.callback_delay = float(callback_delay)
        self.clock = clock
        super().__init__(host, port)
        self.param_max_chars = param_max_chars
        self.callback_retries = callback_retries
        self.callback_backoff = callback_backoff

        self._lock = threading.Lock()
        self._blacklist: set[str] = set()
        self._undeliverable: dict[str, tuple[str, str]] = {}
        self._faults: list[_Fault] = []
        self._serial = 0
        self._records = _Records()

        # Delivery reports waiting for the callback thread; guarded by _reports_cv.
        self._reports_cv = threading.Condition(threading.Lock())
        self._pending: list[_Report] = []
        self._stopping = False
        self._callback_thread: threading.Thread | None = None

    # --- lifecycle (start, stop, url: sandbox/serving.py) ------------------------------

    def _started(self) -> None:
        with self._reports_cv:
            self._stopping = False
        self._callback_thread = threading.Thread(
            target=self._callback_loop, name=f"sms-callback:{self.port}", daemon=True
        )
        self._callback_thread.start()

    def _stopped(self) -> None:
        with self._reports_cv:
            self._stopping = True
            self._reports_cv.notify_all()
        if self._callback_thread is not None:
            self._callback_thread.join(timeout=CALLBACK_TIMEOUT + 1)
            self._callback_thread = None

    # --- records ---------------------------------------------------------------------

    @property
    def accepted(self) -> list[dict[str, Any]]:
        """One record per accepted number: phone, template_id, params, sign_name,
        serial_no, session_context, sdk_app_id, region, request_id and the raw body."""
        with self._lock:
            return list(self._records.accepted)

    @property
    def attempts(self) -> list[Attempt]:
        with self._lock:
            return list(self._records.attempts)

    @property
    def callbacks(self) -> list[CallbackAttempt]:
        with self._lock:
            return list(self._records.callbacks)

    def stats(self) -> dict[str, Any]:
        server = self._server
        with self._lock:
            r = self._records
            return {
                "accepted": len(r.accepted),
                "attempts": len(r.attempts),
                "callback_posts": len(r.callbacks),
                "reports_delivered": r.reports_delivered,
                "reports_dropped": r.reports_dropped,
                "faults_pending": sum(f.times for f in self._faults),
                "connections_opened": server.connections_opened if server else 0,
            }

    def reset_records(self) -> None:
        with self._lock:
            self._records = _Records()

    def wait_reports(self, count: int, timeout: float = 5.0) -> bool:
        """Wait until `count` delivery reports were acknowledged by the receiver or given
        up on; True if that happened within timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                done = self._records.reports_delivered + self._records.reports_dropped
            if done >= count:
                return True
            time.sleep(0.01)
        return False

    # --- controls --------------------------------------------------------------------

    def blacklist(self, phone: str) -> None:
        """Sends to this number answer FailedOperation.PhoneNumberInBlacklist (per number)."""
        with self._lock:
            self._blacklist.add(phone)

    def undeliverable(self, phone: str, errmsg: str = "UNDELIV",
                      description: str = "用户短信未送达") -> None:
        """Sends to this number are accepted, but the delivery report says FAIL. The default
        errmsg is the carriers' generic 'not delivered' status (CMPP UNDELIV)."""
        with self._lock:
            self._undeliverable[phone] = (errmsg, description)

    def inject(self, fault: str, times: int = 1, phone: str | None = None,
               where: str = "auto", message: str | None = None) -> None:
        """The next `times` sends (to `phone`, or to any number) meet `fault`: a Tencent
        Code, or 'timeout' (no answer), 'reset' (TCP RST), 'http_502' (a gateway page),
        'non_json' (HTML with HTTP 200). A code lands in SendStatusSet for the per-number
        codes (PER_NUMBER_CODES) and in Response.Error otherwise, unless `where` is
        'error' or 'status'. `message` replaces Tencent's Message text."""
        if where not in ("auto", "error", "status"):
            raise ValueError(f"where must be auto, error or status, not {where!r}")
        if times < 1:
            raise ValueError("times must be at least 1")
        normal = _normalise_fault(fault)
        with self._lock:
            self._faults.append(_Fault(normal, times, phone, where, message))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    # --- the HTTP side (plumbing: sandbox/serving.py) ------------------------------------

    def handle(self, http: Handler, method: str, path: str, query: str, body: bytes
               ) -> None:
        if path.startswith("/_sandbox/"):
            http.control(method, path[len("/_sandbox/"):], body, self._views(),
                         self._actions())
        elif path == "/" and method == "POST":
            self._serve_send(http, query, body)
        else:
            _error(http, "InvalidAction", f"no such endpoint {method} {path[:60]}",
                   str(uuid.uuid4()))

    def _serve_send(self, http: Handler, query: str, body: bytes) -> None:
        at = time.monotonic()
        request_id = str(uuid.uuid4())
        msg = loads(body)
        phones: list[str] = []
        template_id: Any = None
        if isinstance(msg, dict):
            raw = msg.get("PhoneNumberSet")
            if isinstance(raw, list):
                phones = [p for p in raw if isinstance(p, str)]
            template_id = msg.get("TemplateId")
        first = phones[0] if phones else None
        fault = self._take_fault(phones)
        latency = self.latency
        if fault is not None and (
            fault.fault in _NAMED_FAULTS or fault.fault.startswith("http_")
        ):
            self._record(first, template_id, None, fault.fault, at)
            if fault.fault == "timeout":
                http.hang(self._release)
                return
            if latency > 0:
                time.sleep(latency)
            http.transport_fault(fault.fault)
            return
        headers = http.headers
        try:
            self._verify("POST", "/", query, headers, body)
            phones, template_id, params, sign_name = self._check_request(headers, msg)
        except _Refusal as refusal:
            if latency > 0:
                time.sleep(latency)
            self._record(first, template_id, refusal.code, None, at)
            _error(http, refusal.code, refusal.message, request_id)
            return
        assert isinstance(msg, dict)
        if latency > 0:
            time.sleep(latency)
        if fault is not None:
            code = fault.fault
            message = fault.message or MESSAGES.get(code, "injected error")
            per_number = fault.where == "status" or (
                fault.where == "auto" and code in PER_NUMBER_CODES
            )
            if not per_number:
                self._record(first, template_id, code, code, at)
                _error(http, code, message, request_id)
                return
        region = headers.get("X-TC-Region", "")
        statuses = []
        for phone in phones:
            if fault is not None and (fault.phone is None or fault.phone == phone):
                code, serial = fault.fault, ""
                self._record(phone, template_id, code, code, at)
            else:
                code = self._status_for(phone)
                message = MESSAGES.get(code, "")
                if code == "Ok":
                    serial = self._accept(phone, template_id, params, sign_name, msg,
                                          region, request_id, at)
                    message = "send success"
                else:
                    serial = ""
                    self._record(phone, template_id, code, None, at)
            country = split_number(phone)[0] if _E164.fullmatch(phone) else ""
            statuses.append({
                "SerialNo": serial,
                "PhoneNumber": phone,
                "Fee": 1 if code == "Ok" else 0,
                "SessionContext": msg.get("SessionContext") or "",
                "Code": code,
                "Message": message,
                "IsoCode": _ISO.get(country, ""),
            })
        http.reply_json({"Response": {"SendStatusSet": statuses, "RequestId": request_id}})

    # --- control API -----------------------------------------------------------------

    def _views(self) -> dict[str, Callable[[], Any]]:
        return {
            "stats": self.stats,
            "accepted": lambda: self.accepted,
            "attempts": lambda: [asdict(a) for a in self.attempts],
            "callbacks": lambda: [asdict(c) for c in self.callbacks],
        }

    def _actions(self) -> dict[str, Callable[[dict[str, Any]], object]]:
        return {
            "config": self._configure,
            "inject": lambda args: self.inject(
                str(args["fault"]), times=int(args.get("times", 1)), phone=args.get("phone"),
                where=str(args.get("where", "auto")), message=args.get("message")),
            "blacklist": lambda args: self.blacklist(str(args["phone"])),
            "undeliverable": lambda args: self.undeliverable(
                str(args["phone"]),
                **{k: str(args[k]) for k in ("errmsg", "description") if k in args}),
            "reset": lambda args: self.reset_records(),
            "clear_faults": lambda args: self.clear_faults(),
        }

    def _configure(self, args: dict[str, Any]) -> None:
        if "latency" in args:
            self.latency = float(args["latency"])
        if "callback_url" in args:
            self.callback_url = args["callback_url"] or None
        if "callback_delay" in args:
            self.callback_delay = float(args["callback_delay"])

    # --- the judge (called by the handler) ---------------------------------------------

    def _take_fault(self, phones: list[str]) -> _Fault | None:
        with self._lock:
            for index, pending in enumerate(self._faults):
                if pending.phone is None or pending.phone in phones:
                    pending.times -= 1
                    if pending.times <= 0:
                        del self._faults[index]
                    return pending
            return None

    def _verify(self, method: str, path: str, query: str, headers: Any, body: bytes) -> None:
        """The TC3-HMAC-SHA256 check, in the order Tencent's gateway applies it; raises
        _Refusal with the common error code when it fails."""
        auth = headers.get("Authorization")
        if not auth:
            raise _Refusal("AuthFailure.InvalidAuthorization", "Authorization header missing.")
        algorithm, secret_id, date, service, signed, signature = _parse_authorization(auth)
        if algorithm != ALGORITHM:
            raise _Refusal("AuthFailure.InvalidAuthorization",
                           f"Unsupported algorithm {algorithm[:40]!r}.")
        lowered = [name.lower() for name in signed]
        if "content-type" not in lowered or "host" not in lowered or lowered != signed:
            # Tencent requires content-type and host to be signed, names in lower case.
            raise _Refusal("AuthFailure.InvalidAuthorization",
                           "SignedHeaders must list content-type and host, in lower case.")
        stamp = headers.get("X-TC-Timestamp", "")
        if not stamp.isdigit():
            raise _Refusal("MissingParameter", "X-TC-Timestamp missing or not an integer.")
        timestamp = int(stamp)
        if abs(self.clock() - timestamp) > MAX_SKEW:
            raise _Refusal("AuthFailure.SignatureExpire")
        if secret_id != self.secret_id:
            raise _Refusal("AuthFailure.SecretIdNotFound")
        if service != SERVICE or date != datetime.fromtimestamp(timestamp, UTC).strftime(
            "%Y-%m-%d"
        ):
            # The credential scope must name this service and the timestamp's UTC date.
            raise _Refusal("AuthFailure.SignatureFailure")
        canonical_headers = ""
        for name in signed:
            value = headers.get(name)
            if value is None:
                raise _Refusal("AuthFailure.SignatureFailure")
            canonical_headers += f"{name}:{value.strip().lower()}\n"
        canonical = "\n".join([
            method, path, query, canonical_headers, ";".join(signed),
            hashlib.sha256(body).hexdigest(),
        ])
        string_to_sign = "\n".join([
            ALGORITHM, stamp, f"{date}/{service}/tc3_request",
            hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        ])
        expected = tc3_expected(self.secret_key, date, service, string_to_sign)
        if not hmac.compare_digest(expected, signature):
            raise _Refusal("AuthFailure.SignatureFailure")

    def _check_request(self, headers: Any, msg: Any) -> tuple[list[str], str, list[str],
                                                              str | None]:
        """Everything after the signature: action, version, region, the body's fields.
        Returns (phones, template_id, params, sign_name)."""
        action = headers.get("X-TC-Action")
        if not action:
            raise _Refusal("MissingParameter", "X-TC-Action missing.")
        if action != ACTION:
            raise _Refusal("InvalidAction", f"The action {action[:40]!r} does not exist.")
        if headers.get("X-TC-Version") != VERSION:
            raise _Refusal("NoSuchVersion")
        region = headers.get("X-TC-Region")
        if not region:
            raise _Refusal("MissingParameter", "X-TC-Region missing.")
        if region not in REGIONS:
            raise _Refusal("UnsupportedOperation.UnsupportedRegion")
        if not isinstance(msg, dict):
            raise _Refusal("FailedOperation.JsonParseFail")
        app_id = msg.get("SmsSdkAppId")
        if app_id is None:
            raise _Refusal("MissingParameter", "SmsSdkAppId missing.")
        if app_id != self.sdk_app_id:
            raise _Refusal("InvalidParameterValue.SdkAppIdNotExist")
        phones = msg.get("PhoneNumberSet")
        if not isinstance(phones, list) or not all(isinstance(p, str) for p in phones):
            raise _Refusal("InvalidParameter", "PhoneNumberSet must be an array of strings.")
        if not phones:
            raise _Refusal("MissingParameter.EmptyPhoneNumberSet")
        if len(phones) > MAX_NUMBERS:
            raise _Refusal("LimitExceeded.PhoneNumberCountLimit")
        template_id = msg.get("TemplateId")
        if not isinstance(template_id, str) or not template_id:
            raise _Refusal("MissingParameter", "TemplateId missing.")
        params = msg.get("TemplateParamSet", [])
        if params is None:
            params = []
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            raise _Refusal("InvalidParameter", "TemplateParamSet must be an array of strings.")
        if self.templates is not None:
            count = self.templates.get(template_id)
            if count is None:
                raise _Refusal("FailedOperation.TemplateIncorrectOrUnapproved")
            if count != len(params):
                raise _Refusal("FailedOperation.TemplateParamSetNotMatchApprovedTemplate")
        if any(len(p) > self.param_max_chars for p in params):
            raise _Refusal("InvalidParameterValue.TemplateParameterLengthLimit")
        sign_name = msg.get("SignName")
        if sign_name is not None and not isinstance(sign_name, str):
            raise _Refusal("InvalidParameter", "SignName must be a string.")
        if self.sign_names is not None:
            domestic = any(p.startswith("+86") for p in phones)
            if (sign_name or domestic) and sign_name not in self.sign_names:
                # A domestic SMS needs an approved signature; a given one must be approved.
                raise _Refusal("FailedOperation.SignatureIncorrectOrUnapproved")
        context = msg.get("SessionContext")
        if context is not None and (
            not isinstance(context, str) or len(context.encode("utf-8")) > SESSION_CONTEXT_MAX
        ):
            raise _Refusal("InvalidParameter", "SessionContext must be a string under 512 bytes.")
        return phones, template_id, params, sign_name

    def _status_for(self, phone: str) -> str:
        """'Ok' or the per-number code for one number of an otherwise valid request."""
        if not _E164.fullmatch(phone):
            return "InvalidParameterValue.IncorrectPhoneNumber"
        with self._lock:
            if phone in self._blacklist:
                return "FailedOperation.PhoneNumberInBlacklist"
        return "Ok"

    def _record(self, phone: str | None, template_id: Any, code: str | None,
                fault: str | None, at: float) -> None:
        with self._lock:
            self._records.attempts.append(Attempt(
                phone, template_id if isinstance(template_id, str) else None, code, fault, at,
            ))

    def _accept(self, phone: str, template_id: str, params: list[str], sign_name: str | None,
                msg: dict[str, Any], region: str, request_id: str, at: float) -> str:
        with self._lock:
            self._serial += 1
            # Real SerialNos look like '2640:<decimal digits>': an opaque string, longer
            # than any float keeps exactly.
            serial = f"2640:{1_000_000_000_000_000_000 + self._serial}"
            self._records.accepted.append({
                "phone": phone,
                "template_id": template_id,
                "params": list(params),
                "sign_name": sign_name,
                "serial_no": serial,
                "session_context": msg.get("SessionContext"),
                "sdk_app_id": msg.get("SmsSdkAppId"),
                "region": region,
                "request_id": request_id,
                "body": msg,
            })
            self._records.attempts.append(Attempt(phone, template_id, "Ok", None, at))
            failure = self._undeliverable.get(phone)
        if self.callback_url:
            self._queue_report(phone, serial, failure)
        return serial

    # --- delivery reports ------------------------------------------------------------

    def _queue_report(self, phone: str, serial: str, failure: tuple[str, str] | None) -> None:
        nationcode, mobile = split_number(phone)
        received = datetime.fromtimestamp(self.clock() + self.callback_delay, _BEIJING)
        item = {
            "user_receive_time": received.strftime("%Y-%m-%d %H:%M:%S"),
            "nationcode": nationcode,
            "mobile": mobile,
            "report_status": "FAIL" if failure else "SUCCESS",
            "errmsg": failure[0] if failure else "DELIVRD",
            "description": failure[1] if failure else "用户短信送达成功",
            "sid": serial,
        }
        with self._reports_cv:
            self._pending.append(_Report(time.monotonic() + self.callback_delay, item))
            self._reports_cv.notify()

    def _callback_loop(self) -> None:
        while True:
            with self._reports_cv:
                while not self._pending and not self._stopping:
                    self._reports_cv.wait()
                if self._stopping:
                    return
                wait = self._pending[0].due - time.monotonic()
                if wait > 0:
                    # Woken early by a newer report or by stop(); look again either way.
                    self._reports_cv.wait(wait)
                    continue
                # The oldest is due: everything pending goes along in one POST, which is
                # how close-together sends arrive as one array.
                batch = [r.item for r in self._pending[:CALLBACK_BATCH]]
                del self._pending[:CALLBACK_BATCH]
            self._deliver(batch)

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        url = self.callback_url
        delay = self.callback_backoff
        for try_no in range(1, self.callback_retries + 2):
            if not url:
                break
            status, text, ok = _post_json(url, batch)
            with self._lock:
                self._records.callbacks.append(CallbackAttempt(batch, try_no, status, text, ok))
                if ok:
                    self._records.reports_delivered += len(batch)
                    return
            with self._reports_cv:
                if self._stopping:
                    break
                self._reports_cv.wait(delay)  # stop() cuts the back-off short
                if self._stopping:
                    break
            delay *= 2
        with self._lock:
            self._records.reports_dropped += len(batch)


def _post_json(url: str, payload: Any) -> tuple[int | None, str, bool]:
    """POST payload as JSON; (status, body text, acknowledged)."""
    request = urllib.request.Request(
        url, data=json_bytes(payload), method="POST",
        headers={"Content-Type": "application/json"},
    )
    # No proxies: the receiver is on loopback, and an environment proxy must not see it.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=CALLBACK_TIMEOUT) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()[:1000].decode("utf-8", "replace"), False
    except (OSError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"[:1000], False
    text = raw[:1000].decode("utf-8", "replace")
    try:
        answer = json.loads(raw)
    except ValueError:
        return status, text, False
    ok = 200 <= status < 300 and isinstance(answer, dict) and answer.get("result") == 0
    return status, text, ok


def _error(http: Handler, code: str, message: str, request_id: str) -> None:
    http.reply_json({"Response": {"Error": {"Code": code, "Message": message},
                                  "RequestId": request_id}})


# --- command line --------------------------------------------------------------------


def _parse_template(text: str) -> tuple[str, int]:
    template_id, sep, count = text.partition(":")
    if not sep or not template_id or not count.isdigit():
        raise argparse.ArgumentTypeError(f"expected TEMPLATE_ID:PARAM_COUNT, got {text!r}")
    return template_id, int(count)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.sms",
        description="A local Tencent Cloud SMS (SendSms) server for tests and benchmarks.",
    )
    add_listen_arguments(parser)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per send")
    parser.add_argument("--callback-url", help="POST delivery reports here")
    parser.add_argument("--callback-delay", type=float, default=0.05)
    parser.add_argument("--secret-id", default=DEFAULT_SECRET_ID)
    parser.add_argument("--secret-key", default=DEFAULT_SECRET_KEY)
    parser.add_argument("--sdk-app-id", default=DEFAULT_SDK_APP_ID)
    parser.add_argument("--template", type=_parse_template, action="append",
                        metavar="ID:N", help=f"may repeat; default {DEFAULT_TEMPLATES}")
    parser.add_argument("--sign-name", action="append",
                        help=f"may repeat; default {DEFAULT_SIGN_NAME}")
    args = parser.parse_args(argv)
    stop = stop_on_signals()
    sandbox = SmsSandbox(
        args.secret_id, args.secret_key, args.sdk_app_id,
        templates=dict(args.template) if args.template else dict(DEFAULT_TEMPLATES),
        sign_names=set(args.sign_name) if args.sign_name else {DEFAULT_SIGN_NAME},
        latency=args.latency, callback_url=args.callback_url,
        callback_delay=args.callback_delay, host=args.host, port=args.port,
    ).start()
    return serve_from_command_line(sandbox, stop, args.port_file)


if __name__ == "__main__":
    sys.exit(main())
