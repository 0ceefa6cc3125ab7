"""The sms channel: Tencent Cloud SMS SendSms (API 3.0) to the row's phone column.

A template names the approved SMS template (`template_id`, a number), optionally a sign
name of its own, and its parameters as a list (TemplateParamSet, in order). The phone
is checked as E.164 and every parameter against Tencent's length limit before anything
is sent, so such a row fails here with a reason instead of a Tencent code. The client,
its signer and its code table are channels/tencent_sms.py; SerialNo becomes the row's
msgid (the status callback's sid), SessionContext the row id.
"""

from __future__ import annotations

import re
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
from channels.tencent_sms import CODES, PARAM_MAX_CHARS, SmsClient, check_params, validate_phone

if TYPE_CHECKING:
    from config import Config

SIGN_NAME_RE = re.compile(r"\S(?:[^\x00-\x1f\x7f]{0,30}\S)?")  # as config's sms.sign_name
PARAM_MAX_LIMIT = 500
NOT_CONFIGURED = ("SMS is not configured: config.yaml has no sms section (secret_id, "
                  "secret_key, sdk_app_id, sign_name)")


class Sms(ChannelKind):
    name = "sms"
    keys = ("sign_name", "param_max_chars")
    data_is_list = True
    answers = CODES  # and the code families (tencent_sms.meaning)

    def __init__(self, client: SmsClient | None, sign_name: str | None) -> None:
        self.client = client
        self.sign_name = sign_name

    @classmethod
    def create(cls, config: Config, lend: Lend) -> Sms:
        sms = config.sms
        if sms is None or sms.secret_id is None or sms.secret_key is None:
            return cls(None, None)
        client = SmsClient(sms.endpoint, sms.secret_id.reveal(), sms.secret_key.reveal(),
                           sms.region, sms.sdk_app_id, config.http.timeout,
                           pool_size=config.dispatch.workers)
        return cls(client, sms.sign_name)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

    @classmethod
    def check(cls, spec: Mapping[str, Any], *, name: str, data: Sequence[tuple[str, str]],
              ctx: CheckContext) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        settings, problems = super().check(spec, name=name, data=data, ctx=ctx)
        tid = spec.get("template_id")
        if isinstance(tid, int | str) and not isinstance(tid, bool) and not str(tid).strip(
                ).isdigit():
            problems.append(("template_id", f"{tid!r} must be the approved SMS template's "
                                            "number, e.g. \"1234567\""))
        sign = spec.get("sign_name")
        if sign is not None and (not isinstance(sign, str) or not SIGN_NAME_RE.fullmatch(sign)):
            problems.append(("sign_name", "must be an approved sign name: 1 to 32 characters "
                                          "on one line, e.g. 某某商城"))
        limit = spec.get("param_max_chars", PARAM_MAX_CHARS)
        if (isinstance(limit, bool) or not isinstance(limit, int)
                or not 1 <= limit <= PARAM_MAX_LIMIT):
            problems.append(("param_max_chars", f"must be a whole number from 1 to "
                                                f"{PARAM_MAX_LIMIT} (Tencent's limit per "
                                                f"parameter for your account; default "
                                                f"{PARAM_MAX_CHARS})"))
            limit = PARAM_MAX_CHARS
        settings["param_max_chars"] = limit
        if ctx.config is not None and ctx.config.sms is None:
            problems.append(("channel", NOT_CONFIGURED))
        for key, expr in data:
            if "{" not in expr:  # a constant: check it now, not when the first row fails
                try:
                    check_params([expr], limit)
                except ValueError as exc:
                    problems.append((f"data.{int(key) - 1}",
                                     str(exc).replace("parameter 0", "parameter")))
        return settings, problems

    @classmethod
    def build(cls, tpl: TemplateLike, data: Mapping[str, str] | list[str], row: RowLike,
              app: str) -> Built:
        phone = (row.phone or "").strip()
        if not phone:
            raise BuildError("phone is empty")
        try:
            phone = validate_phone(phone)
        except ValueError as exc:
            raise BuildError(f"phone {phone[:40]!r} is not E.164: {exc}") from None
        params = list(data.values()) if isinstance(data, Mapping) else list(data)
        try:
            check_params(params, int(tpl.settings.get("param_max_chars", PARAM_MAX_CHARS)))
        except ValueError as exc:
            raise BuildError(str(exc)) from None
        body: dict[str, Any] = {"PhoneNumberSet": [phone], "TemplateId": tpl.template_id,
                                "TemplateParamSet": params}
        if tpl.settings.get("sign_name"):
            body["SignName"] = tpl.settings["sign_name"]
        if row.row_id is not None:
            body["SessionContext"] = str(row.row_id)
        return Built(body=body, recipient=f"sms:{phone}", target="POST SendSms (Tencent Cloud)")

    def send(self, built: Built, token: str | None) -> Answer:
        if self.client is None:
            # the setup is wrong, not the row: it waits for an operator
            return Answer(Kind.CREDENTIAL, None, NOT_CONFIGURED)
        b = built.body
        ans = self.client.send(b["PhoneNumberSet"][0], b["TemplateId"], b["TemplateParamSet"],
                               b.get("SignName") or self.sign_name, b.get("SessionContext"))
        reason = ans.reason
        if ans.kind is Kind.SUCCESS and ans.serial_no is None:
            reason += " (the answer had no SerialNo: no receipt can be matched)"
        return Answer(ans.kind, None, reason, msgid=ans.serial_no, timed_out=ans.timed_out,
                      code=ans.code)


__all__ = ["NOT_CONFIGURED", "Sms"]
