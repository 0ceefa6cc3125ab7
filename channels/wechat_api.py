"""WeChat HTTP client: one pooled requests.Session shared by all send threads.

Results come back as values, never exceptions, so dispatch classifies one table
(channels/wechat_errors.py) instead of catching a zoo of requests exceptions. Texts that
could hold the token (URLs inside requests' exception messages) are redacted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies

from logs import redact
from channels.wechat_errors import CONNECTION, HTTP_5XX, NON_JSON, TIMEOUT, Kind, meaning

SEND_PATH = "/cgi-bin/message/subscribe/send"
STABLE_TOKEN_PATH = "/cgi-bin/stable_token"
LEGACY_TOKEN_PATH = "/cgi-bin/token"


@dataclass(frozen=True, slots=True)
class Answer:
    """One API call's outcome: an errcode answer, or a transport-level failure."""

    kind: Kind
    errcode: int | None
    reason: str  # readable; never contains the token or secret
    msgid: str | None = None
    payload: dict[str, Any] | None = None
    timed_out: bool = False


class WeChatClient:
    def __init__(self, api_base: str, *, timeout: float, pool_size: int = 16) -> None:
        self.api_base = api_base.rstrip("/")
        # (connect, read): a socket timeout in real time even under freezegun
        self.timeout = (min(timeout, 5.0), timeout)
        self.session = requests.Session()
        # requests re-reads the proxy and CA variables of the whole environment on every
        # request (several percent of the CPU of a busy sender); read them once instead.
        self.session.trust_env = False
        self.session.proxies = get_environ_proxies(self.api_base)
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            self.session.verify = bundle
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(pool_size, 4), max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = "herald/1"

    def close(self) -> None:
        self.session.close()

    def _call(self, method: str, path: str, **kw: Any) -> Answer:
        try:
            resp = self.session.request(method, self.api_base + path, timeout=self.timeout, **kw)
        except requests.Timeout as exc:
            return Answer(TIMEOUT.kind, None, f"{TIMEOUT.text}: {redact(str(exc))[:200]}",
                          timed_out=True)
        except requests.RequestException as exc:
            return Answer(CONNECTION.kind, None, f"{CONNECTION.text}: {redact(str(exc))[:200]}")
        if resp.status_code >= 500:
            text = HTTP_5XX.text.format(status=resp.status_code)
            return Answer(HTTP_5XX.kind, None, text)
        try:
            payload = resp.json()
            if not isinstance(payload, dict):
                raise ValueError("not an object")
        except ValueError:
            snippet = redact(resp.text[:60])
            return Answer(NON_JSON.kind, None, f"{NON_JSON.text} (HTTP {resp.status_code}): "
                                               f"{snippet!r}")
        errcode = payload.get("errcode", 0)
        try:
            errcode = int(errcode)
        except (TypeError, ValueError):
            return Answer(NON_JSON.kind, None, f"unexpected errcode {errcode!r}")
        m = meaning(errcode)
        if errcode == 0:
            reason = m.text
        else:
            errmsg = redact(str(payload.get("errmsg", "")))[:200]
            reason = f"{errcode} {m.text}: {errmsg}"
        msgid = payload.get("msgid")
        return Answer(m.kind, errcode, reason,
                      msgid=str(msgid) if msgid is not None else None, payload=payload)

    def send(self, token: str, body: dict[str, Any]) -> Answer:
        """POST one subscribe message. msgid comes back as exact text (it exceeds 2^53)."""
        return self._call("POST", SEND_PATH, params={"access_token": token}, json=body)

    def stable_token(self, appid: str, secret: str) -> Answer:
        body = {"grant_type": "client_credential", "appid": appid, "secret": secret,
                "force_refresh": False}
        return self._check_token(self._call("POST", STABLE_TOKEN_PATH, json=body))

    def legacy_token(self, appid: str, secret: str) -> Answer:
        params = {"grant_type": "client_credential", "appid": appid, "secret": secret}
        return self._check_token(self._call("GET", LEGACY_TOKEN_PATH, params=params))

    @staticmethod
    def _check_token(ans: Answer) -> Answer:
        if ans.kind is Kind.SUCCESS:
            p = ans.payload or {}
            if not p.get("access_token") or not isinstance(p.get("expires_in"), int | float):
                return Answer(Kind.TRANSIENT, ans.errcode,
                              "token answer lacks access_token/expires_in", payload=None)
        elif ans.kind is Kind.TOKEN:
            # on the token endpoint 40001 means a wrong secret, not a stale token
            return Answer(Kind.CREDENTIAL, ans.errcode, ans.reason)
        return ans
