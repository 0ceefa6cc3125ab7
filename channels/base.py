"""The Channel seam: what every way of reaching a person has in common.

A channel is two things, kept apart on purpose:

- a template *kind* (class methods, no state): which keys a template of this channel
  may have and what they must hold (`check`), and how a rendered template plus a row
  become one request (`build`): the body, the recipient key that must never see two
  sends at once, and which app's access token it needs, if any;
- a *sender* (an instance, built once per process from the config): sends one built
  request and classifies the answer into the shared Kind.

A channel renders nothing (templates/ does) and knows no queue (jobs/dispatch.py
does): dispatch, policy, outcomes and the history see only Kind and Answer. Adding a
channel is one module with one class, its sandbox, and one line in channels/__init__.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from channels.wechat_api import WeChatClient
    from config import Config


class CheckContext(Protocol):
    """What a template check may consult beyond the file (templates.LoadContext is one):
    the loaded config, when the templates are loaded for one (None: checks that need it
    are skipped), and where relative paths and ${VAR}s resolve."""

    @property
    def config(self) -> Config | None: ...

    @property
    def base_dir(self) -> Path: ...

    @property
    def env(self) -> Mapping[str, str]: ...


class Kind(StrEnum):
    """What an answer means for its row, whatever channel gave it."""

    SUCCESS = "success"      # accepted: row ends success, msgid stored
    # our token is stale: expire it (if still the stored one), refresh, resend once
    TOKEN = "token"
    TRANSIENT = "transient"  # busy/network: back off exponentially, up to retry.max_attempts
    QUOTA_MINUTE = "quota_minute"  # rate limited: wait for the next minute, hold the app
    QUOTA_DAY = "quota_day"  # daily quota spent: wait for the quota day; the attempt does not count
    USER_BUSY = "user_busy"  # another send to this recipient is in flight: retry in seconds
    PERMANENT = "permanent"  # resending cannot help: row ends fail now
    CREDENTIAL = "credential"  # the app's credentials/setup are wrong: alert, rows wait


@dataclass(frozen=True, slots=True)
class Answer:
    """One call's outcome: an answer code, or a transport-level failure.

    errcode is the channel's numeric code where it has one (WeChat); code the
    channel's own text code where it has those (Tencent Cloud's 'LimitExceeded.*').
    """

    kind: Kind
    errcode: int | None
    reason: str  # readable; never contains a token, a secret or a signature
    msgid: str | None = None
    payload: dict[str, Any] | None = None
    timed_out: bool = False
    code: str | None = None


@dataclass(frozen=True, slots=True)
class Built:
    """A template rendered for one row, as its channel will send it."""

    body: dict[str, Any]
    recipient: str  # sends to one recipient go out one at a time
    token_app: str | None = None  # the app whose access token the call needs
    truncated: tuple[str, ...] = ()
    target: str = ""  # where it goes, for people (render, the console): never a secret
    extra: Mapping[str, Any] = field(default_factory=dict)  # per-send settings


class BuildError(ValueError):
    """A row that cannot become a request of this channel; the row fails with it."""


class RowLike(Protocol):
    @property
    def openid(self) -> str | None: ...
    @property
    def phone(self) -> str | None: ...
    @property
    def page(self) -> str | None: ...
    @property
    def row_id(self) -> int | None: ...


class TemplateLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def channel(self) -> str: ...
    @property
    def template_id(self) -> str | None: ...
    @property
    def app(self) -> str | None: ...
    @property
    def settings(self) -> Mapping[str, Any]: ...
    @property
    def enums(self) -> Mapping[str, tuple[str, ...]]: ...


class ChannelKind:
    """Class-level description of a channel; subclasses add a sender."""

    name: ClassVar[str]
    # keys a template of this channel may have beyond the common ones
    keys: ClassVar[tuple[str, ...]] = ()
    # data: a mapping of named values, or a list (sms: TemplateParamSet, in order)
    data_is_list: ClassVar[bool] = False
    # whether the template's own template_id is required
    needs_template_id: ClassVar[bool] = True
    # which errcodes count as "this recipient cannot get it here" by default
    grants: ClassVar[bool] = False  # the subscribe grant ledger applies

    @classmethod
    def check(cls, spec: Mapping[str, Any], *, name: str, data: Sequence[tuple[str, str]],
              ctx: CheckContext) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """This channel's settings of one template (its own keys, resolved), and the
        problems found as (dotted key, message). `data` is (key, expression) pairs."""
        return {k: spec[k] for k in cls.keys if k in spec}, []

    @classmethod
    def build(cls, tpl: TemplateLike, data: Mapping[str, str] | list[str], row: RowLike,
              app: str) -> Built:
        raise NotImplementedError

    # -- the sender ---------------------------------------------------------------
    @classmethod
    def create(cls, config: Config, wechat: WeChatClient) -> ChannelKind:
        """The sender for a running Herald (one per process, shared by all workers)."""
        raise NotImplementedError

    def send(self, built: Built, token: str | None) -> Answer:
        raise NotImplementedError

    def close(self) -> None:
        pass


__all__ = ["Answer", "BuildError", "Built", "ChannelKind", "Kind", "RowLike", "TemplateLike"]
