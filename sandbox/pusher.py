"""WeChat's message push (消息推送), as the WeChat sandbox performs it: signed (and in safe
mode encrypted) event POSTs to the developer's receiver URL, from a background thread.

One Pusher per app, set up like the app's console: the receiver URL, the push Token, the
EncodingAESKey, the appid, the data format (xml | json) and the mode (plain: signature
only; compatible: plaintext fields plus Encrypt; safe: only Encrypt, signed with
msg_signature). The WeChat sandbox (sandbox/wechat/) hands it:

- a subscribe_msg_sent_event after each accepted subscribe send (ErrorCode 0 "success",
  or the failure it was told to report for that openid),
- a TEMPLATESENDJOBFINISH after each accepted official-account template/send
  (Status "success" or "failed:user block"),
- subscribe_msg_popup_event / subscribe_msg_change_event on request.

Delivery follows what the docs say WeChat does: a receiver that does not answer 200 with
"success" or an empty body within the timeout gets the same message again, up to three
retries (shared notes/events.md). Each attempt is signed afresh (new timestamp and
nonce, new AES random); CreateTime stays, so receivers can drop the retries. Every
attempt's answer is recorded.

Bodies are built by sandbox/push_bodies.py, with the receiver's own message types
(web.push_events) and cipher (web.wxcrypto); the tests check what arrives with an
independent receiver.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlencode

from sandbox.push_bodies import build_message, wrap_encrypted, wrap_plain
from web.push_events import CHANGE, POPUP, SENT, TEMPLATE_JOB, PushItem, PushMessage
from web.wxcrypto import PushCipher

Mode = Literal["plain", "compatible", "safe"]
MODES = ("plain", "compatible", "safe")
FORMATS = ("xml", "json")
RETRIES = 3  # after the first POST, as the customer-service receive page documents
TIMEOUT = 5.0  # seconds WeChat waits for an answer
ANSWER_MAX = 4096  # bytes of a receiver's answer kept in the record

__all__ = ["FORMATS", "MODES", "PushAnswer", "PushRecord", "Pusher"]


@dataclass(frozen=True, slots=True)
class PushAnswer:
    """What the receiver said to one attempt (status None: no HTTP answer at all)."""

    status: int | None
    body: str
    error: str | None
    at: float


@dataclass(slots=True)
class PushRecord:
    """One pushed message: what was sent, and every attempt's answer."""

    seq: int
    event: str
    openid: str
    msgid: str | None
    plaintext: bytes  # the message as the receiver should read it (after decrypting)
    query: dict[str, str] = field(default_factory=dict)  # of the last attempt
    body: bytes = b""  # of the last attempt
    answers: list[PushAnswer] = field(default_factory=list)
    delivered: bool = False  # the receiver acknowledged it
    gave_up: bool = False  # every attempt failed

    @property
    def finished(self) -> bool:
        return self.delivered or self.gave_up


def acknowledged(status: int | None, body: bytes) -> bool:
    """WeChat stops retrying on 200 with "success" or an empty body."""
    return status == 200 and body.strip().lower() in (b"", b"success")


class Pusher:
    """Pushes one app's events to its receiver. start()/stop(), or a context manager."""

    def __init__(self, url: str, *, token: str, appid: str, aes_key: str | None = None,
                 fmt: str = "xml", mode: str = "plain", to_user: str = "gh_sandbox000001",
                 delay: float = 0.05, retries: int = RETRIES, backoff: float = 0.2,
                 timeout: float = TIMEOUT, clock: Callable[[], float] = time.time) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if not url.startswith(("http://", "https://")):
            raise ValueError("the receiver URL must be http(s)")
        self.cipher: PushCipher | None = None
        if mode != "plain":
            if aes_key is None:
                raise ValueError(f"{mode} mode needs the EncodingAESKey")
            self.cipher = PushCipher(aes_key, appid)
        self.url = url
        self.token = token
        self.appid = appid
        self.fmt: Literal["xml", "json"] = "xml" if fmt == "xml" else "json"
        self.mode = mode
        self.to_user = to_user
        self.delay = float(delay)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.timeout = float(timeout)
        self.clock = clock
        self._cv = threading.Condition()
        self._queue: list[tuple[float, int, int]] = []  # (due, seq, attempt)
        self._records: dict[int, PushRecord] = {}
        self._seq = itertools.count(1)
        self._stopping = False
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:  # never the token or the key
        return f"Pusher(appid={self.appid!r}, url={self.url!r}, {self.fmt}, {self.mode})"

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> Pusher:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name=f"pusher:{self.appid}",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 5)
            self._thread = None

    def __enter__(self) -> Pusher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what to push ----------------------------------------------------------------

    def _message(self, openid: str, event: str, items: Iterable[PushItem]) -> PushMessage:
        return PushMessage(to_user=self.to_user, from_user=openid,
                           create_time=int(self.clock()), msg_type="event", event=event,
                           items=tuple(items))

    def sent(self, openid: str, template_id: str, msgid: str, error_code: int = 0,
             error_status: str = "success") -> PushRecord:
        """A subscribe_msg_sent_event for one send."""
        item = PushItem.receipt(template_id, str(msgid), error_code, error_status)
        return self.push(self._message(openid, SENT, [item]))

    def template_job(self, openid: str, msgid: str, status: str = "success") -> PushRecord:
        """A TEMPLATESENDJOBFINISH for one official-account template message."""
        return self.push(self._message(openid, TEMPLATE_JOB,
                                       [PushItem.template_job(str(msgid), status)]))

    def popup(self, openid: str, results: Mapping[str, str], scene: str = "0") -> PushRecord:
        """A subscribe_msg_popup_event: template_id -> accept | reject."""
        return self.push(self._message(openid, POPUP, [
            PushItem.grant(tid, status, popup_scene=scene) for tid, status in results.items()]))

    def change(self, openid: str, results: Mapping[str, str]) -> PushRecord:
        """A subscribe_msg_change_event (WeChat only pushes rejections today)."""
        return self.push(self._message(openid, CHANGE, [
            PushItem.grant(tid, status) for tid, status in results.items()]))

    def push(self, msg: PushMessage) -> PushRecord:
        """Queue `msg`; it goes out after `delay` seconds, from the pusher's thread."""
        plaintext = build_message(msg, self.fmt)
        msgid = next((i.msgid for i in msg.items if i.msgid is not None), None)
        with self._cv:
            seq = next(self._seq)
            record = PushRecord(seq, msg.event, msg.from_user, msgid, plaintext)
            self._records[seq] = record
            heapq.heappush(self._queue, (time.monotonic() + self.delay, seq, 0))
            self._cv.notify_all()
        return record

    # --- what happened ---------------------------------------------------------------

    @property
    def records(self) -> list[PushRecord]:
        """Every push so far, oldest first (copies of the answer lists)."""
        with self._cv:
            return [PushRecord(r.seq, r.event, r.openid, r.msgid, r.plaintext, dict(r.query),
                               r.body, list(r.answers), r.delivered, r.gave_up)
                    for r in self._records.values()]

    def wait(self, condition: Callable[[list[PushRecord]], bool], timeout: float = 10.0
             ) -> bool:
        """Wait until condition(records) holds (re-checked after every attempt)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                if condition(self.records):
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)

    def wait_finished(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until at least `count` pushes were delivered or given up."""
        return self.wait(lambda rs: sum(r.finished for r in rs) >= count, timeout)

    # --- delivery --------------------------------------------------------------------

    def _wrap(self, plaintext: bytes) -> tuple[dict[str, str], bytes]:
        timestamp, nonce = str(int(self.clock())), str(int.from_bytes(os.urandom(4), "big"))
        if self.cipher is None:
            return wrap_plain(self.token, plaintext, timestamp, nonce)
        return wrap_encrypted(self.cipher, self.token, plaintext, self.fmt, timestamp, nonce,
                              compatible=self.mode == "compatible")

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._stopping and (
                        not self._queue or self._queue[0][0] > time.monotonic()):
                    wait = self._queue[0][0] - time.monotonic() if self._queue else None
                    self._cv.wait(wait)
                if self._stopping:
                    return
                _, seq, attempt = heapq.heappop(self._queue)
                plaintext = self._records[seq].plaintext
            query, body = self._wrap(plaintext)
            answer, ok = self._post(query, body)
            with self._cv:
                record = self._records[seq]
                record.query, record.body = query, body
                record.answers.append(answer)
                if ok:
                    record.delivered = True
                elif attempt < self.retries:
                    due = time.monotonic() + self.backoff * (2 ** attempt)
                    heapq.heappush(self._queue, (due, seq, attempt + 1))
                else:
                    record.gave_up = True
                self._cv.notify_all()

    def _post(self, query: dict[str, str], body: bytes) -> tuple[PushAnswer, bool]:
        sep = "&" if "?" in self.url else "?"
        content_type = "text/xml" if self.fmt == "xml" else "application/json"
        req = urllib.request.Request(self.url + sep + urlencode(query), data=body,
                                     method="POST", headers={"Content-Type": content_type})
        at = self.clock()
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                data = resp.read(ANSWER_MAX)
                status = resp.status
        except urllib.error.HTTPError as exc:
            data = exc.read(ANSWER_MAX) if exc.fp is not None else b""
            return PushAnswer(exc.code, data.decode("utf-8", "replace"), None, at), False
        except (OSError, ValueError) as exc:  # URLError, timeouts, resets
            return PushAnswer(None, "", f"{type(exc).__name__}: {exc}"[:200], at), False
        text = data.decode("utf-8", "replace")
        return PushAnswer(status, text, None, at), acknowledged(status, data)
