"""Message push (消息推送) as each app's console sets it up: which receiver an app's events
go to, with which Token, key, format and mode (sandbox/pusher.py does the pushing), and
the events a user causes by hand: answering a subscribe popup, changing a subscription.
"""

from __future__ import annotations

from typing import Any

from sandbox.pusher import Pusher, PushRecord
from sandbox.wechat.core import Core


class Pushers:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._by_app: dict[str, Pusher] = {}  # appid -> its message push; under core.lock

    def push_to(self, appid: str, url: str, *, token: str, aes_key: str | None = None,
                fmt: str = "xml", mode: str = "plain", **options: Any) -> Pusher:
        """Push `appid`'s events to `url` as its console would be set up (see
        sandbox/pusher.py for the options); replaces an earlier set-up."""
        pusher = Pusher(url, token=token, appid=appid, aes_key=aes_key, fmt=fmt, mode=mode,
                        clock=self.core.clock, **options).start()
        with self.core.lock:
            old = self._by_app.get(appid)
            self._by_app[appid] = pusher
        if old is not None:
            old.stop()
        return pusher

    def pusher(self, appid: str) -> Pusher | None:
        with self.core.lock:
            return self._by_app.get(appid)

    def pusher_locked(self, appid: str | None) -> Pusher | None:
        return self._by_app.get(appid) if appid else None

    def any_app(self) -> bool:
        """Whether any app pushes. Read without the lock on the send path: a dict's truth
        is one atomic look, and a push set up while a send is under way may miss it."""
        return bool(self._by_app)

    def _pusher_or_raise(self, appid: str) -> Pusher:
        found = self.pusher(appid)
        if found is None:
            raise ValueError(f"no push set up for app {appid!r} (push_to first)")
        return found

    def popup(self, appid: str, openid: str, results: dict[str, str], scene: str = "0"
              ) -> PushRecord:
        """The user answered a subscribe popup: template_id -> accept | reject."""
        return self._pusher_or_raise(appid).popup(openid, results, scene)

    def change(self, appid: str, openid: str, results: dict[str, str]) -> PushRecord:
        """The user changed a subscription in the settings (reject)."""
        return self._pusher_or_raise(appid).change(openid, results)

    def pushes(self) -> list[dict[str, Any]]:
        """Every push of every app, as GET /_sandbox/pushes shows them."""
        with self.core.lock:
            pushers = list(self._by_app.items())
        out = []
        for appid, pusher in pushers:
            for r in pusher.records:
                out.append({"appid": appid, "seq": r.seq, "event": r.event, "openid": r.openid,
                            "msgid": r.msgid, "plaintext": r.plaintext.decode("utf-8"),
                            "delivered": r.delivered, "gave_up": r.gave_up,
                            "answers": [{"status": a.status, "body": a.body, "error": a.error}
                                        for a in r.answers]})
        return out

    def stop_all(self) -> None:
        with self.core.lock:
            pushers, self._by_app = list(self._by_app.values()), {}
        for pusher in pushers:
            pusher.stop()
