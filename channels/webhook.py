"""The webhook channel: POST the rendered message as JSON to the application's own
server (for in-app real-time notices through its push service), signed.

Body: {"id", "template", "app", "openid", "phone", "data": {rendered values}}, UTF-8
JSON, compact. Headers: X-Herald-Timestamp (Unix seconds) and X-Herald-Signature:
sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>, over the exact bytes sent, so
a receiver can check both who sent it and that it is fresh (the README has a receiver).

Answers: 2xx delivered (msgid: the `id` of a JSON answer, if it has one); 408 and 429
transient; any other 4xx permanent (the receiver refuses this message); 3xx permanent
(redirects are not followed: the signature is for this URL's receiver); 5xx, timeouts
and connection errors transient. The HTTP status is the row's errcode. At most 64 KiB
of an answer is read, within http.timeout; nothing a receiver sends can reach a log
line or a reason unredacted, and neither the secret nor the signature ever does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from requests.utils import get_environ_proxies

from channels.base import (
    Answer,
    Built,
    ChannelKind,
    CheckContext,
    Kind,
    Lend,
    Meaning,
    RowLike,
    TemplateLike,
)
from channels.common import check_url
from channels.http import make_session, root_cause
from config import Secret
from config.credentials import read_secret_file
from config.interpolate import interpolate
from config.values import Context, Invalid
from logs import CLEAN_WINDOW, MASK, add_secret, redact

if TYPE_CHECKING:
    from config import Config

SECRET_MIN = 16  # characters; `openssl rand -hex 32` gives 64
ANSWER_MAX = 64 * 1024  # bytes of an answer read at most
MSGID_MAX = 64
TIMESTAMP_HEADER = "X-Herald-Timestamp"
SIGNATURE_HEADER = "X-Herald-Signature"
# The answer table: answers are HTTP statuses, judged by their class in _judge() (2xx
# success, 5xx transient, other 4xx and 3xx permanent); these 4xx are the exceptions.
ANSWERS: dict[int, Meaning] = {
    408: Meaning(Kind.TRANSIENT, "request timeout: tried again"),
    429: Meaning(Kind.TRANSIENT, "too many requests: tried again"),
}


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Herald-Signature value: sha256=<hex HMAC-SHA256(secret, ts + "." + body)>."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body,
                   hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _deferring(ctx: CheckContext) -> bool:
    """Whether this load defers credentials: a config loaded with strict_secrets=False
    that left some unresolved (`serve` holds no send credentials), so an unavailable
    webhook secret is no error here either; a sender built from it refuses to send."""
    return ctx.config is not None and bool(ctx.config.unresolved)


def _resolve_secret(spec: Mapping[str, Any], ctx: CheckContext
                    ) -> tuple[str | None, list[tuple[str, str]]]:
    """The template's secret (from secret, ${VAR} expanded, or from secret_file), or the
    problems; no message ever quotes the secret."""
    has_text, has_file = "secret" in spec, "secret_file" in spec
    if has_text == has_file:
        return None, [("secret", "give exactly one of secret (may use ${VAR}) or secret_file "
                                 "(a file holding it, looked up in $CREDENTIALS_DIRECTORY "
                                 "first)")]
    env = ctx.env
    if has_text:
        raw = spec["secret"]
        if not isinstance(raw, str):
            return None, [("secret", "must be text (write ${VAR} to take it from the "
                                     "environment)")]
        value, unresolved = interpolate(raw, env, hidden=True)
        if unresolved and all(u.unset for u in unresolved) and _deferring(ctx):
            return None, []
        if unresolved:
            return None, [("secret", u.message) for u in unresolved]
        key, text = "secret", str(value).strip()
    else:
        try:
            text, _ = read_secret_file(spec["secret_file"], Context(base_dir=ctx.base_dir,
                                                                    env=env))
        except Invalid as exc:
            if _deferring(ctx):
                return None, []
            return None, [("secret_file", exc.reason)]
        key = "secret_file"
    if len(text) < SECRET_MIN:
        return None, [(key, f"the secret is {len(text)} characters; use at least {SECRET_MIN} "
                            "(e.g. the output of `openssl rand -hex 32`)")]
    return text, []


class Webhook(ChannelKind):
    name = "webhook"
    keys = ("url", "secret", "secret_file")
    needs_template_id = False
    answers = ANSWERS

    def __init__(self, timeout: float, pool_size: int, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.timeout = (min(timeout, 5.0), timeout)
        self.total = timeout
        self.clock = clock
        self.session = make_session("http://localhost", pool_size)
        # proxies are looked up per receiver host (no_proxy applies), once each
        self.session.proxies = {}
        self._proxies: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    @classmethod
    def create(cls, config: Config, lend: Lend) -> Webhook:
        return cls(config.http.timeout, config.dispatch.workers)

    def close(self) -> None:
        self.session.close()

    @classmethod
    def check(cls, spec: Mapping[str, Any], *, name: str, data: Sequence[tuple[str, str]],
              ctx: CheckContext) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        settings, problems = super().check(spec, name=name, data=data, ctx=ctx)
        if "url" not in spec:
            problems.append(("url", "required: where to POST, e.g. https://app.example/hook"))
        elif (bad := check_url(spec["url"])) is not None:
            problems.append(("url", bad))
        settings.pop("secret", None)  # the raw text may be the secret itself
        secret, found = _resolve_secret(spec, ctx)
        problems.extend(found)
        if secret is not None:
            add_secret(secret)  # every log line and error text masks it from now on
            settings["secret"] = Secret(secret)
        return settings, problems

    @classmethod
    def build(cls, tpl: TemplateLike, data: Mapping[str, str] | list[str], row: RowLike,
              app: str) -> Built:
        openid = (row.openid or "").strip() or None
        phone = (row.phone or "").strip() or None
        body = {"id": row.row_id, "template": tpl.name, "app": app, "openid": openid,
                "phone": phone, "data": dict(data) if isinstance(data, Mapping) else data}
        who = openid or phone or str(row.row_id)
        url = str(tpl.settings["url"])
        parts = urlsplit(url)
        # for people: the query may hold a key of the receiver's, so it is not shown
        target = f"POST {parts.scheme}://{parts.netloc}{parts.path or '/'}"
        return Built(body=body, recipient=f"webhook:{who}", target=target,
                     extra={"url": url, "secret": tpl.settings.get("secret")})

    # --- the call --------------------------------------------------------------------------

    def _proxies_for(self, url: str) -> dict[str, str]:
        parts = urlsplit(url)
        key = f"{parts.scheme}://{parts.netloc}"
        found = self._proxies.get(key)
        if found is None:
            found = get_environ_proxies(url)
            with self._lock:
                self._proxies[key] = found
        return found

    def send(self, built: Built, token: str | None) -> Answer:
        url = str(built.extra["url"])
        secret = built.extra.get("secret")
        if secret is None:  # loaded by a process that defers credentials
            return Answer(Kind.CREDENTIAL, None, "the webhook secret is not available in "
                                                 "this process (its variable or file is "
                                                 "missing)")
        body = json.dumps(built.body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        stamp = str(int(self.clock()))
        sig = signature(secret.reveal() if isinstance(secret, Secret) else str(secret),
                        stamp, body)
        headers = {"Content-Type": "application/json; charset=utf-8", TIMESTAMP_HEADER: stamp,
                   SIGNATURE_HEADER: sig}
        started = time.monotonic()
        try:
            resp = self.session.post(url, data=body, headers=headers, timeout=self.timeout,
                                     allow_redirects=False, stream=True,
                                     proxies=self._proxies_for(url))
        except requests.Timeout as exc:
            return Answer(Kind.TRANSIENT, None, "timed out waiting for the webhook receiver "
                          f"(it may have delivered): {_clean(root_cause(exc), sig)}",
                          timed_out=True)
        except requests.RequestException as exc:
            return Answer(Kind.TRANSIENT, None, "connection to the webhook receiver failed: "
                          f"{_clean(root_cause(exc), sig)}")
        try:
            status = resp.status_code
            text, note = _read(resp, started + self.total)
        finally:
            resp.close()
        return _judge(status, text, note, sig)


def _read(resp: requests.Response, deadline: float) -> tuple[bytes, str]:
    """Up to ANSWER_MAX bytes of the answer, read before `deadline`; and a note when the
    rest was left unread (too big, too slow, broken)."""
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in resp.iter_content(8192):
            chunks.append(chunk)
            size += len(chunk)
            if size > ANSWER_MAX:
                return b"".join(chunks)[:ANSWER_MAX], "answer over 64 KiB, not read to the end"
            if time.monotonic() > deadline:
                return b"".join(chunks), "answer too slow, not read to the end"
    except (requests.RequestException, OSError) as exc:
        return b"".join(chunks), f"answer broken off ({type(exc).__name__})"
    return b"".join(chunks), ""


def _judge(status: int, text: bytes, note: str, sig: str) -> Answer:
    # masked whole before the cut: a cut first could leave a secret's first half
    snippet = _clean(text[:CLEAN_WINDOW].decode("utf-8", "replace"), sig)[:80]
    extra = f"; {note}" if note else ""
    if 200 <= status < 300:
        msgid, why = _answer_id(text, note)
        reason = "accepted by the webhook receiver" + (f" ({why})" if why else "")
        return Answer(Kind.SUCCESS, None, reason, msgid=msgid)
    said = f"webhook receiver answered HTTP {status}: {snippet!r}{extra}"
    if (known := ANSWERS.get(status)) is not None:
        return Answer(known.kind, status, said)
    if status >= 500 or status < 200:
        return Answer(Kind.TRANSIENT, status, said)
    if 300 <= status < 400:
        return Answer(Kind.PERMANENT, status, f"{said} (redirects are not followed: set the "
                                              "receiver's final URL)")
    return Answer(Kind.PERMANENT, status, said)


def _answer_id(text: bytes, note: str) -> tuple[str | None, str]:
    """The `id` of a JSON object answer as text, or None and why not (no reason if the
    answer simply has none)."""
    if note or not text.strip():
        return None, note
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):
        return None, ""  # a plain "ok" is a fine answer
    value = payload.get("id") if isinstance(payload, dict) else None
    if value is None:
        return None, ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None, f"its id is a {type(value).__name__}, not kept"
    out = str(value)
    if not out or len(out) > MSGID_MAX or not out.isprintable():
        return None, f"its id is not storable ({len(out)} characters), not kept"
    return out, ""


def _clean(text: str, sig: str) -> str:
    """Network text fit for a reason: the signature and known secrets masked, bounded."""
    text = text.replace(sig, MASK).replace(sig.removeprefix("sha256="), MASK)
    return redact(text)[:200]


__all__ = ["ANSWER_MAX", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "Webhook", "signature"]
