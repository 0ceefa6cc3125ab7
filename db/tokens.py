"""The access_token table: one row per app, shared by every daemon (tokens.py decides
when to read, claim, store or expire; these are its statements, each its own short
transaction, none held across the token call)."""

from __future__ import annotations

from datetime import datetime

from peewee import Database

from db.dialects import dialect
from db.models import AccessToken

TokenRow = AccessToken  # what read() returns: token, expires_at, claimed_by, claim_until


def read(db: Database, app: str) -> AccessToken | None:
    """The app's row: a plain read, no lock, no transaction left open."""
    return AccessToken.select().where(AccessToken.app == app).first(db)


def ensure_row(db: Database, app: str) -> None:
    """Make sure the row exists, so there is something to claim (one statement)."""
    with db.atomic():
        db.execute_sql(dialect(db).insert_ignore("access_token", ("app",), "app"), (app,))


def claim(db: Database, app: str, daemon_id: str, *, at: datetime, until: datetime,
          need_until: datetime) -> bool:
    """Take the right to refresh `app`: one UPDATE that only succeeds while the stored
    token is not good enough beyond `need_until` and no live claim of another daemon
    stands at `at`."""
    n = (AccessToken.update({AccessToken.claimed_by: daemon_id,
                             AccessToken.claim_until: until})
         .where((AccessToken.app == app)
                & (AccessToken.token.is_null() | AccessToken.expires_at.is_null()
                   | (AccessToken.expires_at <= need_until))
                & (AccessToken.claimed_by.is_null() | AccessToken.claim_until.is_null()
                   | (AccessToken.claim_until <= at)
                   | (AccessToken.claimed_by == daemon_id)))
         .execute(db))
    return bool(n)


def release(db: Database, app: str, daemon_id: str) -> None:
    """Give up our claim: the next caller may try at once."""
    (AccessToken.update({AccessToken.claimed_by: None, AccessToken.claim_until: None})
     .where((AccessToken.app == app) & (AccessToken.claimed_by == daemon_id))
     .execute(db))


def store(db: Database, app: str, daemon_id: str, *, token: str, expires_at: datetime,
          now: datetime) -> bool:
    """Write a fetched token and clear the claim, only if the claim is still ours."""
    n = (AccessToken.update({
        AccessToken.token: token,
        AccessToken.expires_at: expires_at,
        AccessToken.refreshed_at: now,
        AccessToken.refreshed_by: daemon_id,
        AccessToken.claimed_by: None,
        AccessToken.claim_until: None,
    }).where((AccessToken.app == app) & (AccessToken.claimed_by == daemon_id))
        .execute(db))
    return bool(n)


def expire(db: Database, app: str, failed_token: str, now: datetime) -> bool:
    """Mark `failed_token` expired, only if it is still the stored one (compare and
    expire: a fresh token another daemon stored meanwhile stays)."""
    n = (AccessToken.update({AccessToken.expires_at: now})
         .where((AccessToken.app == app) & (AccessToken.token == failed_token))
         .execute(db))
    return bool(n)


__all__ = ["TokenRow", "claim", "ensure_row", "expire", "read", "release", "store"]
