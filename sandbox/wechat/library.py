"""The mini program's subscribe templates (订阅消息模板库, newtmpl): which template ids
exist with which keywords (what a subscribe send is judged by), and GET
/wxaapi/newtmpl/gettemplate, which lists them the way WeChat shapes that list.
"""

from __future__ import annotations

from typing import Any

from sandbox.serving import Handler
from sandbox.wechat.core import Core, errcode
from sandbox.wechat.tokens import Tokens


class TemplateLibrary:
    def __init__(self, core: Core, tokens: Tokens,
                 templates: dict[str, list[str]] | None) -> None:
        self.core = core
        self.tokens = tokens
        # template id -> its data keys, in order (None: any id, any keys)
        self.templates: dict[str, list[str]] | None = (
            {tid: list(keys) for tid, keys in templates.items()} if templates is not None else None
        )
        # what GET /wxaapi/newtmpl/gettemplate lists: tid -> title, type, labels, enums
        self.template_info: dict[str, dict[str, Any]] = {}

    def add_template(self, template_id: str, keywords: dict[str, str], *, title: str = "",
                     long_term: bool = False, enums: dict[str, list[str]] | None = None,
                     example: str = "") -> None:
        """Make a template known (sends to it are judged by its keywords) and listed by
        the template-list endpoint: keywords maps each data key to its label (商品名称)."""
        with self.core.lock:
            if self.templates is None:
                self.templates = {}
            self.templates[template_id] = list(keywords)
            self.template_info[template_id] = {
                "title": title or template_id, "type": 3 if long_term else 2,
                "labels": dict(keywords), "enums": dict(enums or {}), "example": example}

    def remove_template(self, template_id: str) -> None:
        with self.core.lock:
            if self.templates is not None:
                self.templates.pop(template_id, None)
            self.template_info.pop(template_id, None)

    def enums(self, template_id: str) -> dict[str, list[str]]:
        """The allowed values of the template's enumerated keywords."""
        enums: dict[str, list[str]] = self.template_info.get(template_id, {}).get("enums", {})
        return enums

    def template_list(self) -> list[dict[str, Any]]:
        """The `data` of GET /wxaapi/newtmpl/gettemplate, as WeChat shapes it."""
        with self.core.lock:
            known = dict(self.templates or {})
            info = {k: dict(v) for k, v in self.template_info.items()}
        out = []
        for tid, keys in known.items():
            meta = info.get(tid, {})
            labels = meta.get("labels") or {k: k for k in keys}
            content = "\n".join(f"{labels.get(k, k)}:{{{{{k}.DATA}}}}" for k in keys)
            out.append({
                "priTmplId": tid, "title": meta.get("title", tid), "content": content,
                "example": meta.get("example", ""), "type": meta.get("type", 2),
                "keywordEnumValueList": [{"keywordCode": f"{k}.DATA", "enumValueList": list(v)}
                                         for k, v in meta.get("enums", {}).items()],
            })
        return out

    def serve_list(self, http: Handler, method: str, query: dict[str, str], body: bytes
                   ) -> None:
        if method != "GET":
            http.reply_json(errcode(43001))
            return
        err, _ = self.tokens.app_of(query.get("access_token"))
        if err:
            http.reply_json(errcode(err))
        else:
            http.reply_json({"errcode": 0, "errmsg": "ok", "data": self.template_list()})
