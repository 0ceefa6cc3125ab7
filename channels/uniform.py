"""The uniform channel (统一服务消息): an official-account template message sent by the
mini program, to the mini program's openid.

POST /cgi-bin/message/wxopen/template/uniform_send?access_token=<the mini program's
token> with touser (the mini program openid) and mp_template_msg: the official account
bound to the mini program (`oa_appid`), its template_id, an optional url, the mini
program to open (the row's app's own appid, with the page) and data ({key: {value}}).
weapp_template_msg (the old mini-program template message) is offline and never sent.

WeChat only delivers it when the official account is bound to the mini program, both
belong to one entity, and the user follows the account: 40013 and 43004 name those.
Sources: the uniformMessage.send page and community threads (shared notes, section 5).
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
from channels.common import (
    app_kind,
    check_appid,
    check_data_keys,
    check_page,
    check_url,
    configured_apps,
    wechat_data,
)
from channels.wechat_api import WeChatClient
from channels.wechat_errors import ERRCODES, Meaning

if TYPE_CHECKING:
    from config import Config

UNIFORM_PATH = "/cgi-bin/message/wxopen/template/uniform_send"

# The subscribe table, with what these codes mean on this endpoint. 40013 is a
# credential problem on the token endpoint, but here the token is fine: it is the
# binding between the account and the mini program, which no retry fixes.
ERRCODES_UNIFORM: dict[int, Meaning] = {
    **ERRCODES,
    40003: Meaning(Kind.PERMANENT, "invalid openid (not a user of this mini program)"),
    40013: Meaning(Kind.PERMANENT, "invalid appid: oa_appid is not an official account bound "
                                   "to this mini program (same entity), or the appid is wrong"),
    40036: Meaning(Kind.PERMANENT, "invalid template_id length"),
    40037: Meaning(Kind.PERMANENT, "invalid template_id (it must be a template of the official "
                                   "account oa_appid)"),
    41028: Meaning(Kind.PERMANENT, "form_id invalid or expired (a weapp_template_msg field "
                                   "Herald never sends)"),
    41029: Meaning(Kind.PERMANENT, "form_id used up (a weapp_template_msg field Herald never "
                                   "sends)"),
    41030: Meaning(Kind.PERMANENT, "invalid page (it must exist in the released mini program)"),
    43004: Meaning(Kind.PERMANENT, "the user does not follow the official account"),
    43019: Meaning(Kind.PERMANENT, "the user is on the official account's blacklist"),
    43116: Meaning(Kind.PERMANENT, "the template is restricted for abuse"),
    45009: Meaning(Kind.QUOTA_DAY, "daily API quota reached"),
    48002: Meaning(Kind.PERMANENT, "the user turned off messages from the official account"),
}


def mini_program_appids(ctx: CheckContext) -> dict[str, str]:
    """name -> appid of the configured mini programs ({} when the config is unknown)."""
    out: dict[str, str] = {}
    for name in configured_apps(ctx) or []:
        kind, appid = app_kind(ctx, name)
        if kind == "miniprogram" and appid:
            out[name] = appid
    return out


class Uniform(ChannelKind):
    name = "uniform"
    keys = ("oa_appid", "url", "page")
    app_kinds = ("miniprogram",)
    answers = ERRCODES_UNIFORM
    app_need = "is sent by a mini program"

    def __init__(self, client: WeChatClient, appids: Mapping[str, str]) -> None:
        self.client = client
        self.appids = dict(appids)

    @classmethod
    def create(cls, config: Config, lend: Lend) -> Uniform:
        return cls(lend(WeChatClient), {n: a.appid for n, a in config.apps.items()
                            if a.kind == "miniprogram"})

    @classmethod
    def check(cls, spec: Mapping[str, Any], *, name: str, data: Sequence[tuple[str, str]],
              ctx: CheckContext) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        settings, problems = super().check(spec, name=name, data=data, ctx=ctx)
        if "oa_appid" not in spec:
            problems.append(("oa_appid", "required: the appid of the official account bound "
                                         "to the mini program (wx and 16 letters or digits)"))
        elif (bad := check_appid(spec["oa_appid"])) is not None:
            problems.append(("oa_appid", bad))
        if "url" in spec and (bad := check_url(spec["url"])) is not None:
            problems.append(("url", bad))
        if (bad := check_page(spec.get("page"))) is not None:
            problems.append(("page", bad))
        problems.extend(check_data_keys(data))
        app = spec.get("app")
        kind, _ = app_kind(ctx, app) if isinstance(app, str) else (None, None)
        if kind is not None and kind != "miniprogram":
            problems.append(("app", f"{app!r} is an {kind}; a uniform message is sent with a "
                                    "mini program's token"))
        # for `render` and the console: the body shows the appid that will be sent
        settings["app_appids"] = mini_program_appids(ctx)
        return settings, problems

    @classmethod
    def build(cls, tpl: TemplateLike, data: Mapping[str, str] | list[str], row: RowLike,
              app: str) -> Built:
        openid = (row.openid or "").strip()
        if not openid:
            raise BuildError("openid is empty")
        page = row.page if row.page else tpl.settings.get("page")
        mini: dict[str, str] = {"appid": tpl.settings.get("app_appids", {}).get(app, "")}
        if page:
            mini["pagepath"] = page
        msg: dict[str, Any] = {"appid": tpl.settings["oa_appid"], "template_id": tpl.template_id}
        if tpl.settings.get("url"):
            msg["url"] = tpl.settings["url"]
        msg["miniprogram"] = mini
        msg["data"] = wechat_data(data)
        return Built(body={"touser": openid, "mp_template_msg": msg}, recipient=openid,
                     token_app=app, target=f"POST {UNIFORM_PATH}", extra={"app": app})

    def send(self, built: Built, token: str | None) -> Answer:
        app = str(built.extra.get("app") or built.token_app or "")
        appid = self.appids.get(app)
        if appid is None:
            return Answer(Kind.PERMANENT, None, f"app {app!r} is not a configured mini program")
        # the running config is the truth for the appid, whatever the body was built with
        msg = dict(built.body["mp_template_msg"])
        msg["miniprogram"] = {**msg["miniprogram"], "appid": appid}
        body = {**built.body, "mp_template_msg": msg}
        return self.client.call("POST", UNIFORM_PATH, table=ERRCODES_UNIFORM,
                                params={"access_token": token or ""}, json=body,
                                errcode_required=True)


__all__ = ["ERRCODES_UNIFORM", "UNIFORM_PATH", "Uniform"]
