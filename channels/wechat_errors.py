"""What WeChat's answers mean for a row: the subscribe send's table (the other WeChat
channels extend it with their own codes), used by dispatch and documented in the README.

WeChat does not label its codes retryable or permanent; the split below follows the
wording of its docs (see shared notes) and what the tutorial's users ran into.
"""

from __future__ import annotations

from collections.abc import Mapping

from channels.base import Kind, Meaning

# errcodes of the send endpoint and of the token endpoints, with a readable meaning
ERRCODES: dict[int, Meaning] = {
    0: Meaning(Kind.SUCCESS, "accepted"),
    -1: Meaning(Kind.TRANSIENT, "WeChat system busy"),
    40001: Meaning(Kind.TOKEN, "access_token invalid or not the latest"),
    40014: Meaning(Kind.TOKEN, "access_token invalid"),
    42001: Meaning(Kind.TOKEN, "access_token expired"),
    45011: Meaning(Kind.QUOTA_MINUTE, "per-minute API quota reached"),
    45009: Meaning(Kind.QUOTA_DAY, "daily API quota reached"),
    43108: Meaning(Kind.USER_BUSY, "another message to this user is being sent"),
    40003: Meaning(Kind.PERMANENT, "invalid openid (not a user of this mini program)"),
    40037: Meaning(Kind.PERMANENT, "invalid template_id (compare templates.yaml with the console)"),
    41030: Meaning(Kind.PERMANENT, "invalid page (it must exist in the released version)"),
    43101: Meaning(Kind.PERMANENT, "user has not subscribed, or used up the one-time grant"),
    43107: Meaning(Kind.PERMANENT, "subscribe messages or this template are banned"),
    45168: Meaning(Kind.PERMANENT, "content hits WeChat's sensitive words"),
    47001: Meaning(Kind.PERMANENT, "request body is not valid JSON"),
    47003: Meaning(Kind.PERMANENT, "a data value breaks its keyword rule"),
    48001: Meaning(Kind.PERMANENT, "API not authorized for this app"),
    # token endpoint: configuration problems that no retry fixes
    40002: Meaning(Kind.CREDENTIAL, "invalid grant_type"),
    40013: Meaning(Kind.CREDENTIAL, "invalid appid"),
    40125: Meaning(Kind.CREDENTIAL, "invalid app secret"),
    40164: Meaning(Kind.CREDENTIAL, "caller IP not in the app's IP whitelist"),
    40243: Meaning(Kind.CREDENTIAL, "app secret frozen"),
    41002: Meaning(Kind.CREDENTIAL, "appid missing"),
    41004: Meaning(Kind.CREDENTIAL, "app secret missing"),
    50004: Meaning(Kind.CREDENTIAL, "access_token API forbidden for this app"),
    50007: Meaning(Kind.CREDENTIAL, "account frozen"),
    89501: Meaning(Kind.CREDENTIAL, "this IP awaits the administrator's confirmation"),
    89503: Meaning(Kind.CREDENTIAL, "this IP needs the administrator's confirmation"),
    89506: Meaning(Kind.CREDENTIAL, "administrator refused this IP twice: blocked for 24 h"),
    89507: Meaning(Kind.CREDENTIAL, "administrator refused this IP: blocked for 1 h"),
}

# Answers that are not an errcode at all
HTTP_5XX = Meaning(Kind.TRANSIENT, "WeChat answered HTTP {status}")
HTTP_OTHER = Meaning(Kind.TRANSIENT, "WeChat answered HTTP {status}")
TIMEOUT = Meaning(Kind.TRANSIENT, "timed out waiting for WeChat (it may have delivered)")
CONNECTION = Meaning(Kind.TRANSIENT, "connection to WeChat failed")
NON_JSON = Meaning(Kind.TRANSIENT, "WeChat's answer was not JSON")


UNKNOWN = Meaning(Kind.PERMANENT, "errcode not in Herald's table")


def meaning(errcode: int, table: Mapping[int, Meaning] | None = None) -> Meaning:
    """The meaning of an errcode; unknown codes are permanent, so nothing loops on a
    code nobody has seen (an operator can re-drive such rows with `retry`)."""
    return (ERRCODES if table is None else table).get(errcode, UNKNOWN)


__all__ = ["CONNECTION", "ERRCODES", "HTTP_5XX", "HTTP_OTHER", "NON_JSON", "TIMEOUT", "UNKNOWN",
           "Kind", "Meaning", "meaning"]
