"""An official account's template messages: POST /cgi-bin/message/template/send with the
account's token; a client_msg_id seen in the last 10 minutes answers the first send's
msgid and delivers nothing; TEMPLATESENDJOBFINISH is pushed after each delivery.
"""

from __future__ import annotations

import copy
from typing import Any

from sandbox.serving import Handler
from sandbox.wechat.accounts import Accounts
from sandbox.wechat.core import ERRMSGS, Attempt, Core
from sandbox.wechat.pushers import Pushers

# template/send's client_msg_id: "对于同一个openid + client_msg_id, 只发送一条消息,10分钟有效"
CLIENT_MSG_WINDOW = 600.0


def _template_id(msg: Any) -> Any:
    return msg.get("template_id") if isinstance(msg, dict) else None


class TemplateSend:
    def __init__(self, core: Core, accounts: Accounts, pushers: Pushers) -> None:
        self.core = core
        self.accounts = accounts
        self.pushers = pushers
        self._blocked: set[str] = set()
        # (account appid, touser, client_msg_id) -> (msgid, when first accepted)
        self._client_msgs: dict[tuple[str, str, str], tuple[int, float]] = {}

    def block(self, openid: str) -> None:
        """The user refuses the account's messages: TEMPLATESENDJOBFINISH says
        failed:user block."""
        with self.core.lock:
            self._blocked.add(openid)

    def serve(self, http: Handler, method: str, query: dict[str, str], body: bytes) -> None:
        self.accounts.serve_send(http, method, "template", query, body, _template_id,
                                 self._judge, self._accept)

    def _judge(self, appid: str, msg: Any) -> tuple[int, str]:
        """template/send's checks after the account's token, in WeChat's order."""
        accounts = self.accounts
        if appid not in accounts.official_accounts:
            return 48001, ERRMSGS[48001]
        if not isinstance(msg, dict):
            return 47001, ERRMSGS[47001]
        touser = msg.get("touser")
        if not isinstance(touser, str) or not touser:
            return 40003, ERRMSGS[40003]
        with self.core.lock:
            following = accounts.follows_locked(touser)
            linked = accounts.minis_of_locked(appid)
        if not following:
            return 43004, ERRMSGS[43004]
        mini = msg.get("miniprogram")
        if mini is not None:
            if not isinstance(mini, dict) or mini.get("appid") not in linked:
                return 40013, ERRMSGS[40013]
            page = mini.get("pagepath")
            if page not in (None, "") and (not isinstance(page, str)
                                           or self.core.page_unknown(page)):
                return 40165, ERRMSGS[40165]
        cmid = msg.get("client_msg_id")
        if cmid is not None and (not isinstance(cmid, str) or not cmid or len(cmid) > 64):
            return 47003, "argument invalid! client_msg_id invalid"
        return accounts.check_message(msg.get("template_id"), msg.get("url"),
                                      msg.get("data"))

    def _accept(self, appid: str, msg: dict[str, Any], at: float) -> bytes:
        """A client_msg_id seen in the last 10 minutes gets the first send's msgid back
        and delivers nothing."""
        touser: str = msg["touser"]
        cmid = msg.get("client_msg_id")
        now = self.core.clock()
        with self.core.lock:
            records = self.core.records  # read under the lock: reset_records() swaps it
            records.attempts.append(Attempt(touser, msg.get("template_id"), 0, None, at))
            key = (appid, touser, cmid) if isinstance(cmid, str) else None
            seen = self._client_msgs.get(key) if key is not None else None
            if seen is not None and now - seen[1] < CLIENT_MSG_WINDOW:
                records.oa_repeats.append({"touser": touser, "client_msg_id": cmid,
                                           "msgid": str(seen[0])})
                return b'{"errcode":0,"errmsg":"ok","msgid":%d}' % seen[0]
            msgid = self.core.take_msgid_locked()
            records.oa.append({**copy.deepcopy(msg), "from_appid": appid, "msgid": str(msgid)})
            if key is not None:
                self._client_msgs[key] = (msgid, now)
            pusher = self.pushers.pusher_locked(appid)
            status = "failed:user block" if touser in self._blocked else "success"
        if pusher is not None:
            pusher.template_job(touser, str(msgid), status)
        return b'{"errcode":0,"errmsg":"ok","msgid":%d}' % msgid
