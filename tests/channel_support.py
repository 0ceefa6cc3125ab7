"""What the channel tests share: a templates.yaml with one template per channel, the
config keys that point each channel at its sandbox, and the sandboxes set up alike.

No pytest here (fixtures live in the test modules that use them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from channels.wechat_api import WeChatClient
from sandbox.sms import (
    DEFAULT_SDK_APP_ID,
    DEFAULT_SECRET_ID,
    DEFAULT_SECRET_KEY,
    DEFAULT_SIGN_NAME,
)
from sandbox.wechat import Sandbox
from templates import TemplateSet, load_templates
from tests.support import APPID, SECRET

OA_APPID, OA_SECRET = "wxofficial00000001", "oa-secret-0123456789"
OA_TID = "OA-order-template-0001"
OA_KEYS = ["thing2", "thing11"]
SUBSCRIBE_TID = "zT99mpoUCb28M02K7ohTO3h81IvBUlgt8JVRn6rkNSc"  # templates.yaml's order_status
SMS_TID = "1234567"  # the SMS sandbox's default template: two parameters
HOOK_SECRET = "hook-secret-0123456789abcdef"
PARAMS = '["Flat white", 28, "shipped", "thanks"]'


def templates_text(hook_url: str = "http://127.0.0.1:9/hook") -> str:
    """One template per channel; order_status falls back to uniform, then SMS."""
    return f"""
order_status:
  template_id: {SUBSCRIBE_TID}
  page: pages/order/detail
  params: [goods_name, goods_price, order_status, remark]
  data:
    thing2: "{{{{ goods_name }}}}"
    amount3: "{{{{ goods_price }}}}元"
    thing11: "{{{{ order_status }}}}"
    thing5: "{{{{ remark }}}}"
  fallback: [order_uniform, order_sms]
order_uniform:
  channel: uniform
  oa_appid: {OA_APPID}
  template_id: {OA_TID}
  url: https://shop.example/order
  page: pages/order/detail
  params: [goods_name, goods_price, order_status, remark]
  data: {{thing2: "{{{{ goods_name }}}}", thing11: "{{{{ order_status }}}}"}}
order_oa:
  channel: oa_template
  app: shop_oa
  miniprogram_app: default
  template_id: {OA_TID}
  url: https://shop.example/order
  page: pages/order/detail
  params: [goods_name, goods_price, order_status, remark]
  data: {{thing2: "{{{{ goods_name }}}}", thing11: "{{{{ order_status }}}}"}}
  fallback: [order_sms]
  fallback_on: [43004]
order_sms:
  channel: sms
  template_id: {SMS_TID}
  params: [goods_name, goods_price, order_status, remark]
  data: ["{{{{ goods_name }}}}", "{{{{ order_status }}}}"]
order_hook:
  channel: webhook
  url: {hook_url}
  secret: {HOOK_SECRET}
  params: [goods_name, goods_price, order_status, remark]
  data: {{title: "订单{{{{ order_status }}}}", goods: "{{{{ goods_name }}}}"}}
"""


def write_templates(folder: Path, hook_url: str = "http://127.0.0.1:9/hook") -> Path:
    path = folder / "channels.yaml"
    path.write_text(templates_text(hook_url), encoding="utf-8")
    return path


def sms_config(endpoint: str) -> dict[str, Any]:
    return {"secret_id": DEFAULT_SECRET_ID, "secret_key": DEFAULT_SECRET_KEY,
            "sdk_app_id": DEFAULT_SDK_APP_ID, "sign_name": DEFAULT_SIGN_NAME,
            "region": "ap-guangzhou", "endpoint": endpoint}


def overrides(templates: Path, sms_endpoint: str = "http://127.0.0.1:9", **more: Any
              ) -> dict[str, Any]:
    """runtime_factory / make_config keys: the templates, the official account, SMS (a
    dead endpoint unless given: the templates need the sms section; `sms=None` drops it)."""
    out: dict[str, Any] = {
        "templates": str(templates),
        "apps": {"shop_oa": {"appid": OA_APPID, "secret": OA_SECRET,
                             "kind": "official_account"}},
        "sms": sms_config(sms_endpoint),
    }
    out.update(more)
    return out


def with_official_account(sb: Sandbox) -> Sandbox:
    """The account bound to the test mini program, with its order template."""
    sb.add_official_account(OA_APPID, OA_SECRET, bound_to=APPID)
    sb.add_oa_template(OA_TID, OA_KEYS)
    return sb


def token(sb: Sandbox, appid: str = APPID, secret: str = SECRET) -> str:
    client = WeChatClient(sb.url, timeout=5)
    try:
        answer = client.stable_token(appid, secret)
    finally:
        client.close()
    assert answer.payload, answer.reason
    return str(answer.payload["access_token"])


def load(path: Path, config: Any = None) -> TemplateSet:
    from templates import LoadContext

    return load_templates(path, context=LoadContext(config=config, base_dir=path.parent))


__all__ = ["HOOK_SECRET", "OA_APPID", "OA_KEYS", "OA_SECRET", "OA_TID", "PARAMS", "SMS_TID",
           "SUBSCRIBE_TID", "load", "overrides", "sms_config", "templates_text", "token",
           "with_official_account", "write_templates"]
