"""Access tokens: POST /cgi-bin/stable_token and GET /cgi-bin/token, and the check every
other endpoint makes of the token it is given (40001 for one that is unknown or no
longer the latest, 42001 for one past its expiry).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sandbox.serving import Handler, loads
from sandbox.wechat.core import Core, errcode

# How long a legacy (/cgi-bin/token) token keeps working after a newer one was issued, and
# how close to expiry a stable token must be before a non-force call replaces it.
LEGACY_GRACE = 300.0
STABLE_RENEW_WITHIN = 300.0


@dataclass(slots=True)
class _Token:
    appid: str
    kind: str  # 'stable' or 'legacy'
    expires_at: float
    # When the token stops being "the latest": force_refresh sets it to now, a newer legacy
    # token to now + LEGACY_GRACE. Past it the answer is 40001, not 42001.
    superseded_at: float | None = None
    # Set by expire_all(): expired regardless of the clock, which a test may have frozen.
    expired: bool = False


class Tokens:
    def __init__(self, core: Core, *, apps: dict[str, str], token_ttl: float,
                 token_latency: float) -> None:
        self.core = core
        self.apps = apps  # appid -> secret; official accounts are added here too
        self.token_ttl = float(token_ttl)
        self.token_latency = float(token_latency)  # read without the lock, like latency
        self._tokens: dict[str, _Token] = {}
        self._stable: dict[str, str] = {}  # appid -> current stable token
        self._legacy: dict[str, str] = {}  # appid -> newest legacy token
        self._expire_after: int | None = None
        # answer(): canned answers of the token endpoints, used in order
        self._answers: list[dict[str, Any]] = []

    # --- control -------------------------------------------------------------------------

    def expire_all(self) -> None:
        with self.core.lock:
            self._expire_all_locked()

    def expire_after(self, n: int) -> None:
        """Expire every token after the next `n` accepted subscribe sends (now if n <= 0)."""
        with self.core.lock:
            if n <= 0:
                self._expire_after = None
                self._expire_all_locked()
            else:
                self._expire_after = n

    def answer(self, payload: dict[str, Any], *, times: int = 1) -> None:
        """The next `times` token calls (stable or legacy) answer `payload` verbatim
        (an errcode, an expires_in of 0, NaN or 1e12 ...), then normal service resumes."""
        with self.core.lock:
            self._answers.extend(dict(payload) for _ in range(times))

    def clear_answers(self) -> None:
        with self.core.lock:
            self._answers.clear()

    @property
    def calls(self) -> dict[str, int]:
        """Token calls so far, by endpoint."""
        with self.core.lock:
            calls = self.core.records.token_calls
            return {"stable": calls["stable"], "legacy": calls["legacy"]}

    # --- what the other endpoints ask ----------------------------------------------------

    def app_of(self, token: str | None) -> tuple[int, str | None]:
        """(0, appid) for a live token, else (40001 or 42001, None)."""
        now = self.core.clock()
        with self.core.lock:
            return self.app_of_locked(token, now)

    def app_of_locked(self, token: str | None, now: float) -> tuple[int, str | None]:
        info = self._tokens.get(token) if token else None
        if info is None or (info.superseded_at is not None and now >= info.superseded_at):
            return 40001, None
        if info.expired or now >= info.expires_at:
            return 42001, None
        return 0, info.appid

    def count_send_locked(self) -> None:
        """One more subscribe send accepted: the countdown expire_after() set."""
        if self._expire_after is not None:
            self._expire_after -= 1
            if self._expire_after <= 0:
                self._expire_after = None
                self._expire_all_locked()

    # --- the endpoints -------------------------------------------------------------------

    def serve_stable(self, http: Handler, method: str, query: dict[str, str], body: bytes
                     ) -> None:
        self._serve(http, method, "POST", "stable", lambda: self._stable_answer(body))

    def serve_legacy(self, http: Handler, method: str, query: dict[str, str], body: bytes
                     ) -> None:
        self._serve(http, method, "GET", "legacy", lambda: self._legacy_token(query))

    def _serve(self, http: Handler, method: str, required: str, kind: str,
               answer: Callable[[], dict[str, Any]]) -> None:
        if method != required:
            http.reply_json(errcode(43002 if required == "POST" else 43001))
            return
        if self.token_latency > 0:
            time.sleep(self.token_latency)
        canned = self._canned()
        if canned is not None:
            with self.core.lock:
                self.core.records.token_calls[kind] += 1
            http.reply(200, json.dumps(canned).encode())  # NaN stays NaN
        else:
            http.reply_json(answer())

    # --- issuing -------------------------------------------------------------------------

    def _canned(self) -> dict[str, Any] | None:
        with self.core.lock:
            return self._answers.pop(0) if self._answers else None

    def _expire_all_locked(self) -> None:
        for token in self._tokens.values():
            token.expired = True

    def _mint_locked(self, appid: str, kind: str, now: float) -> str:
        # 'sbx' marks sandbox tokens in logs; the random part makes them unguessable enough
        # that a test cannot pass by sending a token it invented.
        value = f"sbx_{kind[0]}_{os.urandom(24).hex()}"
        self._tokens[value] = _Token(appid, kind, now + self.token_ttl)
        return value

    def _check_app(self, grant_type: object, appid: object, secret: object) -> int:
        if grant_type != "client_credential":
            return 40002
        if not isinstance(appid, str) or appid not in self.apps:
            return 40013
        if secret != self.apps[appid]:
            return 40125
        return 0

    def _stable_answer(self, body: bytes) -> dict[str, Any]:
        parsed = loads(body)
        if not isinstance(parsed, dict):
            return errcode(47001)
        force = parsed.get("force_refresh") is True
        return self._issue("stable", parsed, lambda appid, now: self._stable_locked(
            appid, now, force))

    def _legacy_token(self, query: dict[str, str]) -> dict[str, Any]:
        return self._issue("legacy", query, self._legacy_locked)

    def _issue(self, kind: str, given: dict[str, Any],
               mint: Callable[[str, float], dict[str, Any]]) -> dict[str, Any]:
        """Count the call, check the app's credentials, then mint (under the lock)."""
        appid = given.get("appid")
        err = self._check_app(given.get("grant_type"), appid, given.get("secret"))
        with self.core.lock:
            self.core.records.token_calls[kind] += 1
            if err:
                return errcode(err)
            assert isinstance(appid, str)
            return mint(appid, self.core.clock())

    def _stable_locked(self, appid: str, now: float, force: bool) -> dict[str, Any]:
        current = self._tokens.get(self._stable.get(appid, ""))
        if force:
            if current is not None:
                current.superseded_at = now
            current = None
        elif current is not None and (
            current.expired
            or current.superseded_at is not None
            or current.expires_at - now < STABLE_RENEW_WITHIN
        ):
            # The old token is left alone: it keeps working until its own expiry.
            current = None
        if current is None:
            value = self._mint_locked(appid, "stable", now)
            self._stable[appid] = value
            current = self._tokens[value]
        else:
            value = self._stable[appid]
        return {"access_token": value, "expires_in": int(current.expires_at - now)}

    def _legacy_locked(self, appid: str, now: float) -> dict[str, Any]:
        previous = self._tokens.get(self._legacy.get(appid, ""))
        if previous is not None:
            grace_end = now + LEGACY_GRACE
            if previous.superseded_at is None or previous.superseded_at > grace_end:
                previous.superseded_at = grace_end
        value = self._mint_locked(appid, "legacy", now)
        self._legacy[appid] = value
        return {"access_token": value, "expires_in": int(self.token_ttl)}
