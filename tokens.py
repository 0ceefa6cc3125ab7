"""Access tokens: one per configured app, shared by all daemons in access_token.

A token is fetched when none is usable, refreshed ahead of expiry by the
token_refresh job, and expired on a 40001/40014/42001 answer only if the stored
token is the one that failed (compare-and-expire, as WxJava does): otherwise a
slow daemon would throw away the fresh token another daemon just fetched.

Sources: `stable` (POST /cgi-bin/stable_token: every caller gets the same token,
so daemons never invalidate each other), `legacy` (GET /cgi-bin/token: each fetch
invalidates the previous token after 5 minutes) and `external` (another service
keeps the token, in token_file or in this table: read it, never fetch it).

No database lock is held while WeChat answers (on SQLite that lock would be every
application's INSERT). A refresh is three steps:

1. claim: one UPDATE, its own short transaction, sets claimed_by/claim_until on the
   app's row, only if the row holds no token good enough and nobody else's claim is
   live. Exactly one daemon wins;
2. fetch, with no transaction open;
3. store: one UPDATE writes the token and clears the claim, only if the claim is still
   ours.

The others wait for that one refresh, reading the row (plain reads, no lock) until the
token is there, and use it: still one fetch per expiry. Meanwhile a caller that only
needs a token usable now takes the stored one if it still is. A claim lasts the token
call's longest time and some: a refresher that dies leaves a claim that runs out, and
the next caller takes over. Threads of one process wait on the app's lock, so only one
of them talks to the table.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from peewee import Database

from channels.base import Answer, Kind
from channels.wechat_api import WeChatClient
from config import AppConfig
from db import tokens as table
from db.tokens import TokenRow
from logs import remember_token

log = logging.getLogger("herald.tokens")

USABLE_MARGIN = timedelta(seconds=60)  # never send with a token this close to expiry
# A token WeChat hands out with a short life (expires_in 5) is used until it really
# expires rather than fetched again for every send: at most one fetch per app this often.
MIN_REFETCH = timedelta(seconds=30)
FAILURE_PAUSE = {Kind.CREDENTIAL: timedelta(minutes=5), Kind.TRANSIENT: timedelta(seconds=30)}
# How often a caller waiting for another daemon's refresh looks at the row again.
POLL = 0.1
# A claim holds this long beyond the token call's own timeout (connect + read + the
# writes either side), so a live refresher never loses it to a waiter.
CLAIM_SLACK = 10.0


def claim_seconds(http_timeout: float) -> float:
    """How long a refresh claim holds: the token call's worst case (connect and read
    timeouts) and some."""
    return 2 * http_timeout + CLAIM_SLACK


@dataclass
class Cached:
    token: str
    expires_at: datetime
    fetched_at: datetime | None = None  # when this process fetched it (None: read it)


class TokenUnavailable(Exception):
    """No usable token for an app right now; rows for it wait."""

    def __init__(self, app: str, reason: str) -> None:
        self.app = app
        self.reason = reason
        super().__init__(f"app {app!r}: no access token: {reason}")


class TokenManager:
    def __init__(
        self,
        db: Database,
        client: WeChatClient,
        apps: Mapping[str, AppConfig],
        *,
        daemon_id: str,
        refresh_margin: float = 600.0,
        claim_for: float = claim_seconds(10.0),
        stopping: threading.Event | None = None,
    ) -> None:
        self.db = db
        self.client = client
        self.apps = apps
        self.daemon_id = daemon_id
        self.refresh_margin = timedelta(seconds=refresh_margin)
        self.claim_for = timedelta(seconds=claim_for)
        self.stopping = stopping or threading.Event()
        self._cache: dict[str, Cached] = {}
        self._locks = {name: threading.Lock() for name in apps}
        self._paused_until: dict[str, datetime] = {}
        self._last_problem: dict[str, str] = {}
        self._alerts: dict[str, str] = {}  # app -> the credential problem in force
        self.fetches = 0  # token API calls made by this process (tests and metrics)
        self.waits = 0  # refreshes this process waited for instead of fetching (tests)

    def configure(self, client: WeChatClient, apps: Mapping[str, AppConfig], *,
                  refresh_margin: float, claim_for: float) -> None:
        """A reload: new credentials, HTTP client or timings for the same apps."""
        if set(apps) != set(self.apps):
            raise ValueError("the set of apps changes only with a restart")
        self.client = client
        self.apps = apps
        self.refresh_margin = timedelta(seconds=refresh_margin)
        self.claim_for = timedelta(seconds=claim_for)
        # a new secret may cure a credential alert: try again at the next need
        self._paused_until.clear()

    # -- reading ---------------------------------------------------------------
    def expires_at(self, app: str) -> datetime | None:
        c = self._cache.get(app)
        return c.expires_at if c else None

    def alerts(self) -> dict[str, str]:
        """Apps whose token endpoint refused their credentials, with the reason."""
        return dict(self._alerts)

    def get(self, app: str, now: datetime) -> str:
        """A usable token for `app`, fetching one if needed; TokenUnavailable if none."""
        c = self._cache.get(app)
        if c and c.expires_at - USABLE_MARGIN > now:
            return c.token
        if c and c.fetched_at and now - c.fetched_at < MIN_REFETCH and c.expires_at > now:
            return c.token  # a short-lived token: use it while it lasts
        return self.refresh(app, now, proactive=False)

    def _read_row(self, app: str) -> TokenRow | None:
        # a plain read: no lock, no transaction left open
        return table.read(self.db, app)

    def _remember(self, app: str, token: str, expires_at: datetime,
                  fetched_at: datetime | None = None) -> str:
        remember_token(app, token)
        self._cache[app] = Cached(token, expires_at, fetched_at)
        return token

    # -- refreshing ------------------------------------------------------------
    def refresh(self, app: str, now: datetime, *, proactive: bool = True) -> str:
        """Make sure `app` has a token valid beyond the margin (proactive) or at all."""
        if app not in self.apps:
            raise TokenUnavailable(app, "not a configured app")
        cfg = self.apps[app]
        need_until = now + (self.refresh_margin if proactive else USABLE_MARGIN)
        lock = self._locks[app]
        # threads of this process queue here, one talks to the table; the wait ends on
        # stop (no network call or transaction is held by a waiter)
        while not lock.acquire(timeout=POLL):
            if self.stopping.is_set():
                raise TokenUnavailable(app, "stopping")
        try:
            c = self._cache.get(app)
            if c and c.expires_at > need_until:
                return c.token
            if (not proactive and c and c.fetched_at and now - c.fetched_at < MIN_REFETCH
                    and c.expires_at > now):
                return c.token
            if cfg.token_source == "external":
                return self._external(cfg, now)
            paused = self._paused_until.get(app)
            if paused and paused > now:
                if c and c.expires_at - USABLE_MARGIN > now:
                    return c.token
                raise TokenUnavailable(app, self._last_problem.get(app, "token fetch paused"))
            return self._shared_refresh(cfg, now, need_until)
        finally:
            lock.release()

    def _shared_refresh(self, cfg: AppConfig, now: datetime, need_until: datetime) -> str:
        """The stored token if good enough, else the one refresh: ours or another's."""
        app = cfg.name
        # make sure the row exists, so there is something to claim (one statement)
        table.ensure_row(self.db, app)
        started = time.monotonic()
        waited = False
        while True:
            # the caller's clock, moved on by how long we have waited
            at = now + timedelta(seconds=time.monotonic() - started)
            row = self._read_row(app)
            if row and row.token and row.expires_at and row.expires_at > need_until:
                if waited:
                    self.waits += 1
                return self._remember(app, row.token, row.expires_at)
            claimed_by = row.claimed_by if row else None
            live = (claimed_by is not None and claimed_by != self.daemon_id
                    and row is not None and row.claim_until is not None
                    and row.claim_until > at)
            if live:
                assert row is not None
                expires: datetime | None = row.expires_at
                if row.token and expires and expires - USABLE_MARGIN > at:
                    # refreshed ahead of expiry by another daemon: what is stored still
                    # serves, no need to wait for the new one
                    return self._remember(app, row.token, expires)
            elif self._claim(app, at, need_until):
                break
            # another daemon is refreshing (or claimed between our read and our claim)
            waited = True
            if self.stopping.wait(POLL):
                raise TokenUnavailable(app, "stopping")
        try:
            # stamped with the caller's time, not the later one: an expiry counted from
            # before the call errs on the early side
            return self._fetch_and_store(cfg, now)
        except BaseException:
            self._release(app)
            raise

    def _claim(self, app: str, at: datetime, need_until: datetime) -> bool:
        """Take the right to refresh `app`: one UPDATE (its own short transaction) that
        only succeeds while the stored token is not good enough and no live claim of
        another daemon stands."""
        return table.claim(self.db, app, self.daemon_id, at=at, until=at + self.claim_for,
                           need_until=need_until)

    def _release(self, app: str) -> None:
        """Give up our claim (the fetch failed): the next caller may try at once."""
        try:
            table.release(self.db, app, self.daemon_id)
        except Exception as exc:  # noqa: BLE001 - the claim then simply runs out
            log.warning("app %s: could not release the token claim (%s); it runs out by "
                        "itself", app, type(exc).__name__)

    def _fetch_and_store(self, cfg: AppConfig, now: datetime) -> str:
        secret = cfg.secret.reveal() if cfg.secret else ""
        self.fetches += 1
        # no transaction is open here: the claim is written, the call may take long
        if cfg.token_source == "legacy":
            ans: Answer = self.client.legacy_token(cfg.appid, secret)
        else:
            ans = self.client.stable_token(cfg.appid, secret)
        if ans.kind is not Kind.SUCCESS or not ans.payload:
            self._fetch_failed(cfg, now, ans)
        payload = ans.payload or {}
        token = str(payload["access_token"])
        remember_token(cfg.name, token)
        expires_at = now + timedelta(seconds=float(payload["expires_in"]))
        stored = table.store(self.db, cfg.name, self.daemon_id, token=token,
                             expires_at=expires_at, now=now)
        self._paused_until.pop(cfg.name, None)
        self._last_problem.pop(cfg.name, None)
        self._alerts.pop(cfg.name, None)
        if not stored:
            # our call outlasted the claim and another daemon took over: its token (if
            # written already) is the newer one; otherwise ours serves this process
            log.warning("app %s: the token call took longer than its claim (%s); another "
                        "daemon took over the refresh", cfg.name, self.claim_for)
            row = self._read_row(cfg.name)
            theirs: datetime | None = row.expires_at if row else None
            if row and row.token and theirs and theirs - USABLE_MARGIN > now:
                return self._remember(cfg.name, row.token, theirs)
        log.info("app %s: new access token from %s, expires in %ds", cfg.name,
                 cfg.token_source, int(payload["expires_in"]))
        if payload["expires_in"] < USABLE_MARGIN.total_seconds() * 2:
            log.warning("app %s: WeChat gave a token valid for only %ds; using it until it "
                        "expires, fetching at most every %ds", cfg.name,
                        int(payload["expires_in"]), MIN_REFETCH.total_seconds())
        return self._remember(cfg.name, token, expires_at, fetched_at=now)

    def _fetch_failed(self, cfg: AppConfig, now: datetime, ans: Answer) -> None:
        kind = ans.kind if ans.kind in FAILURE_PAUSE else Kind.TRANSIENT
        self._paused_until[cfg.name] = now + FAILURE_PAUSE[kind]
        self._last_problem[cfg.name] = ans.reason
        if kind is Kind.CREDENTIAL:
            self._alerts[cfg.name] = ans.reason
            log.error("app %s: CONFIGURATION ALERT: the token endpoint refused appid %s: %s. "
                      "Fix apps.%s in config.yaml or the app's console settings; rows for this "
                      "app stay waiting, next try in %s", cfg.name, cfg.appid, ans.reason,
                      cfg.name, FAILURE_PAUSE[kind])
        else:
            log.warning("app %s: token fetch failed: %s; next try in %s", cfg.name, ans.reason,
                        FAILURE_PAUSE[kind])
        raise TokenUnavailable(cfg.name, ans.reason)

    def _external(self, cfg: AppConfig, now: datetime) -> str:
        if cfg.token_file is not None:
            try:
                token = Path(cfg.token_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise TokenUnavailable(
                    cfg.name, f"cannot read token_file: {exc.strerror}") from None
            if not token:
                raise TokenUnavailable(cfg.name, "token_file is empty")
            # the file carries no expiry: re-read it every minute
            return self._remember(cfg.name, token, now + timedelta(seconds=120))
        row = self._read_row(cfg.name)
        expires_at: datetime | None = row.expires_at if row else None
        if row and row.token and expires_at and expires_at - USABLE_MARGIN > now:
            return self._remember(cfg.name, row.token, expires_at)
        raise TokenUnavailable(cfg.name, "external token source has no valid token in "
                               "access_token; the service that keeps it must write it")

    # -- after a token error -----------------------------------------------------
    def expire(self, app: str, failed_token: str, now: datetime) -> bool:
        """Mark `failed_token` expired, only if it is still the stored one."""
        with self._locks[app]:
            c = self._cache.get(app)
            if c and c.token == failed_token:
                del self._cache[app]
            if self.apps[app].token_source == "external" and self.apps[app].token_file:
                return True
            # one statement, its own short transaction
            return table.expire(self.db, app, failed_token, now)

    def refresh_all(self, now: datetime) -> dict[str, str]:
        """The token_refresh job's body: every app refreshed ahead of expiry."""
        result: dict[str, str] = {}
        for name in self.apps:
            try:
                self.refresh(name, now, proactive=True)
                result[name] = "ok"
            except TokenUnavailable as exc:
                result[name] = exc.reason
        return result
