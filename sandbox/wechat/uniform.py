"""The mini program's unified service message: POST
/cgi-bin/message/wxopen/template/uniform_send, which sends an official account's template
message (mp_template_msg) with a mini program's token, to an account bound to it.
"""

from __future__ import annotations

import copy
from typing import Any

from sandbox.serving import Handler
from sandbox.wechat.accounts import Accounts
from sandbox.wechat.core import ERRMSGS, Attempt, Core


def _template_id(msg: Any) -> Any:
    if not isinstance(msg, dict):
        return None
    inner = msg.get("mp_template_msg")
    return (inner if isinstance(inner, dict) else msg).get("template_id")


class UniformSend:
    def __init__(self, core: Core, accounts: Accounts) -> None:
        self.core = core
        self.accounts = accounts

    def serve(self, http: Handler, method: str, query: dict[str, str], body: bytes) -> None:
        self.accounts.serve_send(http, method, "uniform", query, body, _template_id,
                                 self._judge, self._accept)

    def _judge(self, appid: str, msg: Any) -> tuple[int, str]:
        """uniform_send's checks after the mini program's token, in WeChat's order."""
        accounts = self.accounts
        if appid in accounts.official_accounts:
            return 48001, ERRMSGS[48001]
        if not isinstance(msg, dict) or not isinstance(msg.get("mp_template_msg"), dict):
            return 47001, ERRMSGS[47001]
        touser = msg.get("touser")
        if not isinstance(touser, str) or not touser:
            return 40003, ERRMSGS[40003]
        mp = msg["mp_template_msg"]
        mini = mp.get("miniprogram")
        with self.core.lock:
            bound = accounts.bound_locked(appid, mp.get("appid"))
            following = accounts.follows_locked(touser)
        if not bound or not isinstance(mini, dict) or mini.get("appid") != appid:
            return 40013, ERRMSGS[40013]
        page = mini.get("pagepath")
        if page not in (None, "") and (not isinstance(page, str) or self.core.page_unknown(page)):
            return 41030, ERRMSGS[41030]
        if not following:
            return 43004, ERRMSGS[43004]
        return accounts.check_message(mp.get("template_id"), mp.get("url"), mp.get("data"))

    def _accept(self, appid: str, msg: dict[str, Any], at: float) -> bytes:
        with self.core.lock:
            self.core.records.uniform.append({**copy.deepcopy(msg), "from_appid": appid})
            mp = msg["mp_template_msg"]
            self.core.records.attempts.append(Attempt(msg["touser"], mp.get("template_id"), 0,
                                                      None, at))
        return b'{"errcode":0,"errmsg":"ok"}'
