"""WeChat HTTP client: one pooled requests.Session shared by all send threads of the
WeChat channels (subscribe, uniform, oa_template) and the token manager.

Results come back as values, never exceptions, so callers classify one table
(channels/wechat_errors.py and each channel's own) instead of catching a zoo of
requests exceptions. Texts that could hold the token (URLs inside requests' exception
messages) are redacted; an answer's values are checked before anyone relies on them
(an errcode that is not an integer, an expires_in of 0, NaN or 1e12).
"""

from __future__ import annotations

import json as _json
import math
from collections.abc import Mapping
from typing import Any

from channels.base import Answer, Kind
from channels.http import Caller, TransportError, make_session
from channels.wechat_errors import CONNECTION, HTTP_5XX, NON_JSON, TIMEOUT, Meaning, meaning
from logs import CLEAN_WINDOW, add_secret, redact

SEND_PATH = "/cgi-bin/message/subscribe/send"
STABLE_TOKEN_PATH = "/cgi-bin/stable_token"
LEGACY_TOKEN_PATH = "/cgi-bin/token"
TEMPLATE_LIST_PATH = "/wxaapi/newtmpl/gettemplate"
# WeChat documents expires_in up to 7200 s; a token "valid" for longer is a broken
# answer, one valid for less than a minute would be fetched again for every send.
TOKEN_TTL_MIN, TOKEN_TTL_MAX = 60.0, 7200.0
# WeChat's answers are a few hundred bytes (a template list a few KiB): a bigger one is
# broken or hostile, and is not read into memory.
ANSWER_MAX = 4 * 1024 * 1024


class WeChatClient:
    def __init__(self, api_base: str, *, timeout: float, pool_size: int = 16) -> None:
        self.api_base = api_base.rstrip("/")
        # (connect, read): a socket timeout in real time even under freezegun
        self.timeout = (min(timeout, 5.0), timeout)
        self.session = make_session(self.api_base, pool_size)
        self.caller = Caller(self.session, self.api_base, timeout=self.timeout,
                             answer_max=ANSWER_MAX)

    def close(self) -> None:
        self.caller.close()
        self.session.close()

    def call(self, method: str, path: str, *, table: Mapping[int, Meaning] | None = None,
             params: Mapping[str, str] | None = None, json: Any = None,
             errcode_required: bool = False) -> Answer:
        """One API call; `table` classifies errcodes (default: the subscribe table).
        `errcode_required`: an answer without an errcode is not a success (every send
        endpoint answers with one; the token endpoints succeed without)."""
        try:
            # as requests encodes json=: ASCII-escaped, no NaN (a ValueError, not a send)
            data = None if json is None else _json.dumps(json, allow_nan=False).encode()
        except (ValueError, TypeError, RecursionError) as exc:
            return Answer(Kind.PERMANENT, None, f"the request body is not JSON: {exc}"[:200])
        try:
            reply = self.caller.exchange(method, path, query=params, body=data)
        except TransportError as exc:
            if exc.timed_out:
                return Answer(TIMEOUT.kind, None, f"{TIMEOUT.text}: {exc.text}", timed_out=True)
            return Answer(CONNECTION.kind, None, f"{CONNECTION.text}: {exc.text}")
        if reply.status >= 500:
            return Answer(HTTP_5XX.kind, None, HTTP_5XX.text.format(status=reply.status))
        return self._judge(reply.status, reply.body, table, errcode_required)

    def _judge(self, status: int, body: bytes | None, table: Mapping[int, Meaning] | None,
               errcode_required: bool = False) -> Answer:
        """What an answer means: its errcode in `table`, its msgid as exact text."""
        if body is None:
            return Answer(NON_JSON.kind, None, f"WeChat's answer (HTTP {status}) is "
                                               f"over {ANSWER_MAX // (1024 * 1024)} MiB")
        try:
            payload = _json.loads(body)
            if not isinstance(payload, dict):
                raise ValueError("not an object")
        except (ValueError, RecursionError):
            return Answer(NON_JSON.kind, None, f"{NON_JSON.text} (HTTP {status}): "
                                               f"{_excerpt(body)!r}")
        if errcode_required and "errcode" not in payload:
            # a proxy's or a broken gateway's `{}` must not mark a row delivered
            return Answer(NON_JSON.kind, None, f"WeChat's answer (HTTP {status}) has no "
                                               f"errcode: {_excerpt(body)!r}")
        raw = payload.get("errcode", 0)
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            return Answer(NON_JSON.kind, None, f"unexpected errcode {redact(repr(raw))[:40]}")
        try:
            errcode = int(raw)
        except ValueError:
            return Answer(NON_JSON.kind, None, f"unexpected errcode {redact(repr(raw))[:40]}")
        m = meaning(errcode, table)
        if errcode == 0:
            reason = m.text
        else:
            errmsg = redact(str(payload.get("errmsg", "")))[:200]
            reason = f"{errcode} {m.text}: {errmsg}"
        msgid = payload.get("msgid")
        text_id = None
        if msgid is not None and not isinstance(msgid, bool | dict | list | float):
            text_id = str(msgid)  # ints keep every digit: json parses them exactly
        elif isinstance(msgid, float):
            # a float has lost digits already: keep what there is, say so in the reason
            reason = f"{reason} (msgid arrived as a float: {msgid!r})"
        return Answer(m.kind, errcode, reason, msgid=text_id, payload=payload)

    def send(self, token: str, body: dict[str, Any]) -> Answer:
        """POST one subscribe message. msgid comes back as exact text (it exceeds 2^53)."""
        return self.call("POST", SEND_PATH, params={"access_token": token}, json=body,
                         errcode_required=True)

    def stable_token(self, appid: str, secret: str) -> Answer:
        # an errmsg may echo what was sent: the reason must never hold the secret, even
        # when no TokenManager registered it (Answer's contract, not its caller's)
        add_secret(secret)
        body = {"grant_type": "client_credential", "appid": appid, "secret": secret,
                "force_refresh": False}
        return self._check_token(self.call("POST", STABLE_TOKEN_PATH, json=body))

    def legacy_token(self, appid: str, secret: str) -> Answer:
        add_secret(secret)  # as stable_token
        params = {"grant_type": "client_credential", "appid": appid, "secret": secret}
        return self._check_token(self.call("GET", LEGACY_TOKEN_PATH, params=params))

    def template_list(self, token: str) -> Answer:
        """The app's subscribe templates (priTmplId, title, content, type, enums)."""
        ans = self.call("GET", TEMPLATE_LIST_PATH, params={"access_token": token})
        if ans.kind is Kind.SUCCESS and not isinstance((ans.payload or {}).get("data"), list):
            return Answer(Kind.TRANSIENT, ans.errcode, "template list answer has no data list")
        return ans

    @staticmethod
    def _check_token(ans: Answer) -> Answer:
        if ans.kind is Kind.SUCCESS:
            p = ans.payload or {}
            token, ttl = p.get("access_token"), p.get("expires_in")
            if (not isinstance(token, str) or not token or len(token) > 2048
                    or not token.isascii() or not token.isprintable() or " " in token):
                return Answer(Kind.TRANSIENT, ans.errcode,
                              "token answer lacks a usable access_token")
            if (isinstance(ttl, bool) or not isinstance(ttl, int | float)
                    or not math.isfinite(ttl) or ttl <= 0):
                return Answer(Kind.TRANSIENT, ans.errcode,
                              f"token answer has expires_in {redact(repr(ttl))[:30]}, not a "
                              "positive number of seconds")
            # clamp: a token WeChat says is valid for a year is valid for two hours at
            # most; one valid for 5 s is used until then, but fetched at most every minute
            clamped = min(max(float(ttl), 1.0), TOKEN_TTL_MAX)
            return Answer(ans.kind, ans.errcode, ans.reason,
                          payload={"access_token": token, "expires_in": clamped})
        if ans.kind is Kind.TOKEN:
            # on the token endpoint 40001 means a wrong secret, not a stale token
            return Answer(Kind.CREDENTIAL, ans.errcode, ans.reason)
        return ans


def _excerpt(body: bytes) -> str:
    """The start of an answer for a reason: masked whole before the cut (a cut first
    could leave a secret's first half)."""
    return redact(body[:CLEAN_WINDOW].decode("utf-8", "replace"))[:60]


__all__ = ["ANSWER_MAX", "LEGACY_TOKEN_PATH", "SEND_PATH", "STABLE_TOKEN_PATH",
           "TEMPLATE_LIST_PATH", "Answer", "WeChatClient"]
