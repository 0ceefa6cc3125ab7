"""The ways Herald reaches a person, one module each; a template's `channel` names one.

Adding a channel: a module with a ChannelKind subclass (its template keys, how a
rendered template becomes a request, how an answer is classified), a sandbox for its
remote API in sandbox/, and one line here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from channels.base import Answer, BuildError, Built, ChannelKind, Kind
from channels.oa_template import OaTemplate
from channels.sms import Sms
from channels.subscribe import Subscribe
from channels.uniform import Uniform
from channels.webhook import Webhook

if TYPE_CHECKING:
    from channels.wechat_api import WeChatClient
    from config import Config

KINDS: dict[str, type[ChannelKind]] = {
    "subscribe": Subscribe,
    "uniform": Uniform,
    "oa_template": OaTemplate,
    "sms": Sms,
    "webhook": Webhook,
}
DEFAULT = "subscribe"


def build_senders(config: Config, wechat: WeChatClient) -> dict[str, ChannelKind]:
    """One sender per channel for a running Herald."""
    return {name: kind.create(config, wechat) for name, kind in KINDS.items()}


__all__ = ["DEFAULT", "KINDS", "Answer", "BuildError", "Built", "ChannelKind", "Kind",
           "build_senders"]
