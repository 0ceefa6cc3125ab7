"""The oa_template channel: an official account's template message (模板消息), sent with
the account's own token to the account's openid of the user.

POST /cgi-bin/message/template/send?access_token=<the official account's token> with
touser, template_id, url (optional), miniprogram {appid, pagepath} (optional: it wins
over url inside WeChat), client_msg_id and data ({key: {value}}).

client_msg_id is the row id: WeChat sends one message per (openid, client_msg_id) within
10 minutes, so a resend after a timeout (which may have delivered) cannot deliver twice.
Sources: the sendTemplateMessage page, silenceper/wechat PR #651 (client_msg_id), the
global return codes as WxJava lists them (shared notes, section 5).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from channels.base import (
    Answer,
    BuildError,
    Built,
    ChannelKind,
    CheckContext,
    Kind,
    Lend,
    RowLike,
    TemplateLike,
)
from channels.common import app_kind, check_data_keys, check_page, check_url, wechat_data
from channels.wechat_api import WeChatClient
from channels.wechat_errors import ERRCODES, Meaning

if TYPE_CHECKING:
    from config import Config

TEMPLATE_SEND_PATH = "/cgi-bin/message/template/send"

# The subscribe table, with what these codes mean on the account's send endpoint.
# 43004 is the natural fallback_on code: the user does not follow the account, so a
# mini program message or an SMS may still reach them.
ERRCODES_OA: dict[int, Meaning] = {
    **ERRCODES,
    40003: Meaning(Kind.PERMANENT, "invalid openid (not a follower of this official account)"),
    40013: Meaning(Kind.PERMANENT, "invalid appid (miniprogram_app is not linked to the "
                                   "official account, or the appid is wrong)"),
    40036: Meaning(Kind.PERMANENT, "invalid template_id length"),
    40037: Meaning(Kind.PERMANENT, "invalid template_id (compare templates.yaml with the "
                                   "official account's template list)"),
    40165: Meaning(Kind.PERMANENT, "invalid mini program page path"),
    43004: Meaning(Kind.PERMANENT, "the user does not follow the official account "
                                   "(require subscribe)"),
    43019: Meaning(Kind.PERMANENT, "the user is on the official account's blacklist"),
    43116: Meaning(Kind.PERMANENT, "the template is restricted for abuse"),
    45009: Meaning(Kind.QUOTA_DAY, "daily template message quota reached"),
    48002: Meaning(Kind.PERMANENT, "the user turned off messages from the official account"),
}


class OaTemplate(ChannelKind):
    name = "oa_template"
    keys = ("url", "page", "miniprogram_app")
    app_kinds = ("official_account",)
    answers = ERRCODES_OA
    app_need = "needs an official_account app"

    def __init__(self, client: WeChatClient, appids: Mapping[str, str]) -> None:
        self.client = client
        self.appids = dict(appids)  # mini programs a card may open: name -> appid

    @classmethod
    def create(cls, config: Config, lend: Lend) -> OaTemplate:
        return cls(lend(WeChatClient), {n: a.appid for n, a in config.apps.items()
                            if a.kind == "miniprogram"})

    @classmethod
    def check(cls, spec: Mapping[str, Any], *, name: str, data: Sequence[tuple[str, str]],
              ctx: CheckContext) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        settings, problems = super().check(spec, name=name, data=data, ctx=ctx)
        app = spec.get("app")
        if not isinstance(app, str) or not app:
            problems.append(("app", "required: the official_account app whose own token sends "
                                    "it (apps.<name>.kind: official_account)"))
        else:
            kind, _ = app_kind(ctx, app)
            if kind is not None and kind != "official_account":
                problems.append(("app", f"{app!r} is a {kind}; an oa_template message is sent "
                                        "with an official_account app's own token"))
        if "url" in spec and (bad := check_url(spec["url"])) is not None:
            problems.append(("url", bad))
        if (bad := check_page(spec.get("page"))) is not None:
            problems.append(("page", bad))
        mini = spec.get("miniprogram_app")
        if mini is not None:
            kind, appid = app_kind(ctx, mini) if isinstance(mini, str) else (None, None)
            if not isinstance(mini, str) or not mini:
                problems.append(("miniprogram_app", "must name a configured mini program app"))
            elif kind is not None and kind != "miniprogram":
                problems.append(("miniprogram_app", f"{mini!r} is an {kind}, not a mini "
                                                    "program"))
            elif appid:
                settings["miniprogram_appid"] = appid  # shown by `render`
        elif "page" in spec:
            problems.append(("page", "opens a mini program: name it with miniprogram_app"))
        problems.extend(check_data_keys(data))
        return settings, problems

    @classmethod
    def build(cls, tpl: TemplateLike, data: Mapping[str, str] | list[str], row: RowLike,
              app: str) -> Built:
        openid = (row.openid or "").strip()
        if not openid:
            raise BuildError("openid is empty")
        body: dict[str, Any] = {"touser": openid, "template_id": tpl.template_id}
        if tpl.settings.get("url"):
            body["url"] = tpl.settings["url"]
        mini_app = tpl.settings.get("miniprogram_app")
        if mini_app:
            mini = {"appid": tpl.settings.get("miniprogram_appid", "")}
            page = row.page if row.page else tpl.settings.get("page")
            if page:
                mini["pagepath"] = page
            body["miniprogram"] = mini
        if row.row_id is not None:
            body["client_msg_id"] = str(row.row_id)
        body["data"] = wechat_data(data)
        return Built(body=body, recipient=openid, token_app=app,
                     target=f"POST {TEMPLATE_SEND_PATH}", extra={"miniprogram_app": mini_app})

    def send(self, built: Built, token: str | None) -> Answer:
        body = built.body
        mini_app = built.extra.get("miniprogram_app")
        if mini_app:
            appid = self.appids.get(str(mini_app))
            if appid is None:
                return Answer(Kind.PERMANENT, None,
                              f"miniprogram_app {mini_app!r} is not a configured mini program")
            body = {**body, "miniprogram": {**body["miniprogram"], "appid": appid}}
        return self.client.call("POST", TEMPLATE_SEND_PATH, table=ERRCODES_OA,
                                params={"access_token": token or ""}, json=body,
                                errcode_required=True)


__all__ = ["ERRCODES_OA", "TEMPLATE_SEND_PATH", "OaTemplate"]
