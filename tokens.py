"""Access tokens: one per configured app, shared by all daemons in access_token.

A token is fetched when none is usable, refreshed ahead of expiry by the
token_refresh job, and expired on a 40001/40014/42001 answer only if the stored
token is the one that failed (compare-and-expire, as WxJava does): otherwise a
slow daemon would throw away the fresh token another daemon just fetched.

Sources: `stable` (POST /cgi-bin/stable_token: every caller gets the same token,
so daemons never invalidate each other), `legacy` (GET /cgi-bin/token: each fetch
invalidates the previous token after 5 minutes) and `external` (another service
keeps the token, in token_file or in this table: read it, never fetch it).

On PostgreSQL and MySQL the refreshing daemon holds the app's row lock while it
fetches, so the others wait and then read what it wrote. On SQLite the refresh runs in a
transaction begun IMMEDIATE, which holds the database's single write lock for the
length of the token call (tens of milliseconds, every two hours): the same effect.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from peewee import Database

from channels.base import Answer, Kind
from channels.wechat_api import WeChatClient
from config import AppConfig
from db.dialects import dialect
from db.models import AccessToken
from logs import add_secret

log = logging.getLogger("herald.tokens")

USABLE_MARGIN = timedelta(seconds=60)  # never send with a token this close to expiry
# A token WeChat hands out with a short life (expires_in 5) is used until it really
# expires rather than fetched again for every send: at most one fetch per app this often.
MIN_REFETCH = timedelta(seconds=30)
FAILURE_PAUSE = {Kind.CREDENTIAL: timedelta(minutes=5), Kind.TRANSIENT: timedelta(seconds=30)}


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
    ) -> None:
        self.db = db
        self.client = client
        self.apps = apps
        self.daemon_id = daemon_id
        self.refresh_margin = timedelta(seconds=refresh_margin)
        self._cache: dict[str, Cached] = {}
        self._locks = {name: threading.Lock() for name in apps}
        self._paused_until: dict[str, datetime] = {}
        self._last_problem: dict[str, str] = {}
        self._alerts: dict[str, str] = {}  # app -> the credential problem in force
        self.fetches = 0  # token API calls made by this process (tests and metrics)
        for app in apps.values():
            if app.secret is not None:
                add_secret(app.secret.reveal())

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

    def _read_row(self, app: str, *, lock: bool) -> AccessToken | None:
        q = AccessToken.select().where(AccessToken.app == app)
        if lock:
            q = dialect(self.db).for_update(q)
        return q.first()

    def _remember(self, app: str, token: str, expires_at: datetime,
                  fetched_at: datetime | None = None) -> str:
        add_secret(token)
        self._cache[app] = Cached(token, expires_at, fetched_at)
        return token

    # -- refreshing ------------------------------------------------------------
    def refresh(self, app: str, now: datetime, *, proactive: bool = True) -> str:
        """Make sure `app` has a token valid beyond the margin (proactive) or at all."""
        if app not in self.apps:
            raise TokenUnavailable(app, "not a configured app")
        cfg = self.apps[app]
        need_until = now + (self.refresh_margin if proactive else USABLE_MARGIN)
        with self._locks[app]:
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
            # make sure the row exists, so there is something to lock
            AccessToken.insert(app=app).on_conflict_ignore().execute()
            with self.db.atomic():
                # PostgreSQL/MySQL: SELECT ... FOR UPDATE; SQLite: the transaction began
                # IMMEDIATE and holds the write lock. Either way a second daemon waits
                # here until we have written the new token, then uses it.
                row = self._read_row(app, lock=True)
                if row and row.token and row.expires_at and row.expires_at > need_until:
                    # another daemon refreshed it: use theirs
                    return self._remember(app, row.token, row.expires_at)
                return self._fetch_and_store(cfg, now)

    def _fetch_and_store(self, cfg: AppConfig, now: datetime) -> str:
        secret = cfg.secret.reveal() if cfg.secret else ""
        self.fetches += 1
        if cfg.token_source == "legacy":
            ans: Answer = self.client.legacy_token(cfg.appid, secret)
        else:
            ans = self.client.stable_token(cfg.appid, secret)
        if ans.kind is not Kind.SUCCESS or not ans.payload:
            self._fetch_failed(cfg, now, ans)
        payload = ans.payload or {}
        token = str(payload["access_token"])
        add_secret(token)
        expires_at = now + timedelta(seconds=float(payload["expires_in"]))
        AccessToken.update({
            AccessToken.token: token,
            AccessToken.expires_at: expires_at,
            AccessToken.refreshed_at: now,
            AccessToken.refreshed_by: self.daemon_id,
        }).where(AccessToken.app == cfg.name).execute()
        self._paused_until.pop(cfg.name, None)
        self._last_problem.pop(cfg.name, None)
        self._alerts.pop(cfg.name, None)
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
        row = self._read_row(cfg.name, lock=False)
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
            with self.db.atomic():
                n = (
                    AccessToken.update({AccessToken.expires_at: now})
                    .where((AccessToken.app == app) & (AccessToken.token == failed_token))
                    .execute()
                )
        return bool(n)

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
