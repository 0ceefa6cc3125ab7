"""The subscribe channel (订阅消息): WeChat Mini Program subscribe messages.

POST /cgi-bin/message/subscribe/send?access_token=T with touser, template_id, page,
data ({key: {value}}), miniprogram_state and lang. Each data key's prefix is its
keyword type (`thing2` is a thing) and every value is checked against WeChat's rule
for that type before anything is sent (keywords.py), so a bad value fails its row
here with a reason instead of a 47003 from WeChat. The errcode table is
channels/wechat_errors.py. Sends to one openid go one at a time (43108).
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
    Lend,
    RowLike,
    TemplateLike,
)
from channels.common import check_page
from channels.wechat_api import SEND_PATH, WeChatClient
from channels.wechat_errors import ERRCODES
from keywords import KeywordError, check_value, keyword_type

if TYPE_CHECKING:
    from config import Config

STATES = ("developer", "trial", "formal")
LANGS = ("zh_CN", "en_US", "zh_HK", "zh_TW")


class Subscribe(ChannelKind):
    name = "subscribe"
    keys = ("page", "miniprogram_state", "lang", "long_term", "enums")
    grants = True
    app_kinds = ("miniprogram",)
    app_need = "is sent by a mini program"
    answers = ERRCODES
    listed_remotely = True  # the app's template list (check --remote)

    def __init__(self, client: WeChatClient) -> None:
        self.client = client

    @classmethod
    def create(cls, config: Config, lend: Lend) -> Subscribe:
        return cls(lend(WeChatClient))

    @classmethod
    def precheck(cls, row: RowLike) -> str | None:
        if row.openid is None or not str(row.openid).strip():
            return "openid is empty"
        return None

    @classmethod
    def key_type(cls, key: str) -> str:
        try:
            return keyword_type(key)
        except KeywordError:
            return "?"

    @classmethod
    def needs_grant(cls, settings: Mapping[str, Any]) -> bool:
        # a 长期订阅 (long-term) template needs no grant per message
        return not settings.get("long_term", False)

    @classmethod
    def grant_refused(cls, answer: Answer) -> bool:
        return answer.errcode == 43101

    @classmethod
    def check(cls, spec: Mapping[str, Any], *, name: str, data: Sequence[tuple[str, str]],
              ctx: CheckContext) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        settings, problems = super().check(spec, name=name, data=data, ctx=ctx)
        if (bad := check_page(spec.get("page"))) is not None:
            problems.append(("page", bad))
        state = spec.get("miniprogram_state", "formal")
        if state not in STATES:
            problems.append(("miniprogram_state",
                             f"{state!r} is not allowed (allowed: {', '.join(STATES)})"))
        lang = spec.get("lang", "zh_CN")
        if lang not in LANGS:
            problems.append(("lang", f"{lang!r} is not allowed (allowed: {', '.join(LANGS)})"))
        if not isinstance(spec.get("long_term", False), bool):
            problems.append(("long_term", "must be true or false (true: a 长期订阅 template, "
                                          "which needs no grant per message)"))
        enums = spec.get("enums", {})
        if not isinstance(enums, Mapping) or not all(
                isinstance(v, list) and v and all(isinstance(x, str) for x in v)
                for v in enums.values()):
            problems.append(("enums", "must map enum keywords to lists of allowed values, "
                                      "e.g. {enum4: [待发货, 已发货]}"))
            enums = {}
        keys = [k for k, _ in data]
        for key, expr in data:
            try:
                kind = keyword_type(key)
            except KeywordError as exc:
                problems.append((f"data.{key}", str(exc)))
                continue
            if kind != "enum" and key in enums:
                problems.append((f"enums.{key}", f"{key} is a {kind}, not an enum keyword"))
            if "{" not in expr:  # a constant: check it now, not when the first row fails
                try:
                    check_value(key, expr, truncate=False, choices=_choices(enums, key))
                except KeywordError as exc:
                    problems.append((f"data.{key}", f"the constant {exc}"))
        for key in enums:
            if key not in keys:
                problems.append((f"enums.{key}", "names no data keyword of this template"))
        return settings, problems

    @classmethod
    def build(cls, tpl: TemplateLike, data: Mapping[str, str] | list[str], row: RowLike,
              app: str) -> Built:
        openid = (row.openid or "").strip()
        if not openid:
            raise BuildError("openid is empty")
        assert isinstance(data, Mapping)
        body_data: dict[str, dict[str, str]] = {}
        truncated: list[str] = []
        for key, text in data.items():
            try:
                sent, cut = check_value(key, text, choices=_choices(tpl.enums, key))
            except KeywordError as exc:
                raise BuildError(str(exc)) from None
            if cut:
                truncated.append(key)
            body_data[key] = {"value": sent}
        body: dict[str, Any] = {"touser": openid, "template_id": tpl.template_id}
        page = row.page if row.page else tpl.settings.get("page")
        if page:
            body["page"] = page
        body["data"] = body_data
        body["miniprogram_state"] = tpl.settings.get("miniprogram_state", "formal")
        body["lang"] = tpl.settings.get("lang", "zh_CN")
        return Built(body=body, recipient=openid, token_app=app, truncated=tuple(truncated),
                     target=f"POST {SEND_PATH}")

    def send(self, built: Built, token: str | None) -> Answer:
        return self.client.send(token or "", built.body)


def _choices(enums: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    values = enums.get(key)
    return tuple(values) if values else None


__all__ = ["LANGS", "STATES", "Subscribe", "check_page"]  # check_page: channels.common
