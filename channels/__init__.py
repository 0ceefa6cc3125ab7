"""The ways Herald reaches a person, one module each; a template's `channel` names one.

Adding a channel: a module with a ChannelKind subclass (its template keys and their
checks, the app kinds that send it, how a rendered template becomes a request, its
answer table, what its sender needs), a sandbox for its remote API in sandbox/, and one
line in KINDS. Nothing outside this package names a channel: dispatch, the verbs, the
console and template loading ask the kind (tests/test_channel_seam.py holds it so).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from channels.base import Answer, BuildError, Built, ChannelKind, Kind, Lend, TemplateLike
from channels.oa_template import OaTemplate
from channels.sms import Sms
from channels.subscribe import Subscribe
from channels.uniform import Uniform
from channels.webhook import Webhook

if TYPE_CHECKING:
    from config import Config

KINDS: dict[str, type[ChannelKind]] = {
    "subscribe": Subscribe,
    "uniform": Uniform,
    "oa_template": OaTemplate,
    "sms": Sms,
    "webhook": Webhook,
}
DEFAULT = "subscribe"


def build_senders(config: Config, lend: Lend) -> dict[str, ChannelKind]:
    """One sender per channel for a running Herald; each asks `lend` for what it needs
    beyond the config (base.lender(the WeChat client) in runtime.py)."""
    return {name: kind.create(config, lend) for name, kind in KINDS.items()}


def app_problem(apps: Mapping[str, Any], app: str, tpl: TemplateLike) -> str | None:
    """Why `app` cannot send template `tpl`: not configured, or not a kind its channel
    sends with (dispatch fails such a row unsent; `render` and `enqueue` say so)."""
    if app not in apps:
        return f"unknown app {app!r} (configured: {', '.join(apps)})"
    return KINDS[tpl.channel].app_problem(tpl.name, app, apps[app].kind)


__all__ = ["DEFAULT", "KINDS", "Answer", "BuildError", "Built", "ChannelKind", "Kind",
           "app_problem", "build_senders"]
