"""Official accounts (公众号), as the two endpoints that send their template messages see
them (uniform.py: the mini program's uniform_send; oa_template.py: the account's own
template/send): which appids are accounts, which account is bound to which mini program,
the accounts' templates, who follows them; the checks both endpoints make of a message;
and the path a send to either takes (fault, judgement, latency, answer).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sandbox.serving import Handler, loads
from sandbox.wechat.core import ERRMSGS, Core, errcode
from sandbox.wechat.faults import Faults
from sandbox.wechat.tokens import Tokens

# (the sending app, the request body) -> (errcode, errmsg)
Judge = Callable[[str, Any], tuple[int, str]]
# (the sending app, the request body, arrival) -> the answer's body
Accept = Callable[[str, dict[str, Any], float], bytes]


class Accounts:
    def __init__(self, core: Core, tokens: Tokens, faults: Faults) -> None:
        self.core = core
        self.tokens = tokens
        self.faults = faults
        self.official_accounts: set[str] = set()  # appids whose tokens send template/send
        self._bound: set[tuple[str, str]] = set()  # (mini program appid, account appid)
        # the accounts' templates: id -> data keys (None: any id, any keys)
        self.oa_templates: dict[str, list[str]] | None = None
        self._not_following: set[str] = set()

    # --- control -------------------------------------------------------------------------

    def add_official_account(self, appid: str, secret: str, *, bound_to: str | None = None
                             ) -> None:
        """An official account whose tokens send template/send, optionally bound to the
        mini program `bound_to` (so that mini program's uniform_send may name it)."""
        with self.core.lock:
            self.tokens.apps[appid] = secret
            self.official_accounts.add(appid)
            if bound_to is not None:
                self._bound.add((bound_to, appid))

    def bind(self, mini_appid: str, oa_appid: str) -> None:
        with self.core.lock:
            self._bound.add((mini_appid, oa_appid))

    def add_oa_template(self, template_id: str, keys: list[str] | tuple[str, ...]) -> None:
        """An official-account template: sends to it must carry exactly these data keys.
        Once one is added, unknown template ids answer 40037."""
        with self.core.lock:
            if self.oa_templates is None:
                self.oa_templates = {}
            self.oa_templates[template_id] = list(keys)

    def unfollow(self, openid: str) -> None:
        """The user does not follow the account: template/send and uniform_send 43004."""
        with self.core.lock:
            self._not_following.add(openid)

    # --- what the endpoints ask (under core.lock) ----------------------------------------

    def bound_locked(self, mini_appid: str | None, oa_appid: Any) -> bool:
        return (mini_appid, oa_appid) in self._bound

    def follows_locked(self, openid: str) -> bool:
        return openid not in self._not_following

    def minis_of_locked(self, oa_appid: str | None) -> set[str]:
        """The mini programs bound to this account."""
        return {mini for mini, oa in self._bound if oa == oa_appid}

    def check_message(self, template_id: Any, url: Any, data: Any) -> tuple[int, str]:
        """The checks template/send and uniform_send's mp_template_msg share."""
        if not isinstance(template_id, str) or not template_id:
            return 40037, ERRMSGS[40037]
        keys = None
        if self.oa_templates is not None:
            keys = self.oa_templates.get(template_id)
            if keys is None:
                return 40037, ERRMSGS[40037]
        if url is not None and (not isinstance(url, str)
                                or not url.startswith(("http://", "https://"))):
            return 47003, "argument invalid! url invalid"
        if not isinstance(data, dict) or not data:
            return 47003, "argument invalid! data invalid"
        for key, item in data.items():
            if not isinstance(item, dict) or not isinstance(item.get("value"), str):
                return 47003, f"argument invalid! data.{key}.value invalid"
        if keys is not None and sorted(data) != sorted(keys):
            wrong = [k for k in keys if k not in data] or [k for k in data if k not in keys]
            return 47003, f"argument invalid! data.{wrong[0]}.value invalid"
        return 0, "ok"

    # --- a send ----------------------------------------------------------------------------

    def serve_send(self, http: Handler, method: str, endpoint: str, query: dict[str, str],
                   body: bytes, template_id_of: Callable[[Any], Any], judge: Judge,
                   accept: Accept) -> None:
        """A send to `endpoint` (uniform or template), judged like subscribe/send: the
        token first, then `judge`; answered with what `accept` says."""
        if method != "POST":
            http.reply_json(errcode(43002))
            return
        at = time.monotonic()
        msg = loads(body)
        touser = msg.get("touser") if isinstance(msg, dict) else None
        template_id = template_id_of(msg)
        fault = self.faults.take(touser if isinstance(touser, str) else None, endpoint)
        latency = self.core.latency
        lose = fault == "lost_answer"
        if fault is not None and not lose:
            self.faults.answer(http, fault, touser, template_id, at, latency)
            return
        err, appid = self.tokens.app_of(query.get("access_token"))
        if appid is None:
            errmsg = ERRMSGS[err]
        else:
            err, errmsg = judge(appid, msg)
        if latency > 0:
            time.sleep(latency)
        if err:
            self.core.record(touser, template_id, err, None, at)
            http.reply_json({"errcode": err, "errmsg": errmsg})
            return
        assert isinstance(msg, dict) and appid is not None
        reply = accept(appid, msg, at)
        if lose:
            self.faults.lose_answer(http)
            return
        http.reply(200, reply)
