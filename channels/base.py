"""The Channel seam: what every way of reaching a person has in common.

A channel is two things, kept apart on purpose:

- a template *kind* (class methods, no state): which keys a template of this channel
  may have and what they must hold (`check`), and how a rendered template plus a row
  become one request (`build`): the body, the recipient key that must never see two
  sends at once, and which app's access token it needs, if any;
- a *sender* (an instance, built once per process from the config): sends one built
  request and classifies the answer into the shared Kind.

A channel renders nothing (templates/ does) and knows no queue (jobs/dispatch.py
does): dispatch, policy, outcomes and the history see only Kind and Answer. Everything
about a channel is declared on its class: its template keys and their checks, the app
kinds that may send it, its answer table, what its sender needs (asked for through a
`Lend`, so no channel is handed what it does not use). Nothing outside channels/ names
a channel. Adding a channel is one module with one class, its sandbox, and one line in
channels/__init__.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

if TYPE_CHECKING:
    from config import Config

T = TypeVar("T")


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
class Meaning:
    """One line of a channel's answer table: what a code means for the row."""

    kind: Kind
    text: str


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


class Lend(Protocol):
    """What a running Herald lends its senders: the one shared object of a type it holds
    (the pooled WeChat client the token manager uses too); LookupError if it holds none."""

    def __call__(self, what: type[T], /) -> T: ...


def lender(*objects: object) -> Lend:
    """A Lend over these objects (each found by its type)."""

    def lend(what: type[T], /) -> T:
        for obj in objects:
            if isinstance(obj, what):
                return obj
        raise LookupError(f"no shared {what.__name__} in this process")

    return lend


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


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
    # the kinds of app (apps.<name>.kind) that may send it; None: any configured app
    app_kinds: ClassVar[tuple[str, ...] | None] = None
    # what the app must be, said in a refusal ("is sent by a mini program")
    app_need: ClassVar[str] = ""
    # the answer table: the channel's codes and what each means for a row (codes not in
    # it are the channel's own business: WeChat's unknown codes are permanent)
    answers: ClassVar[Mapping[Any, Meaning]] = {}
    # whether the app's WeChat template list holds this channel's template_ids (so
    # `check --remote` compares them)
    listed_remotely: ClassVar[bool] = False

    @classmethod
    def app_problem(cls, template: str, app: str, app_kind: str) -> str | None:
        """Why app `app` (of kind `app_kind`) cannot send template `template` here."""
        if cls.app_kinds is None or app_kind in cls.app_kinds:
            return None
        return (f"template {template!r} (channel {cls.name}) {cls.app_need}; app {app!r} is "
                f"{_article(app_kind)} {app_kind}")

    @classmethod
    def precheck(cls, row: RowLike) -> str | None:
        """Why the row cannot be sent at all, said before its params are rendered (so
        this reason comes first), or None."""
        return None

    @classmethod
    def key_type(cls, key: str) -> str:
        """The type a data key's name gives its value, for people (the console)."""
        return ""

    @classmethod
    def needs_grant(cls, settings: Mapping[str, Any]) -> bool:
        """Whether a send of a template with these settings spends a user's grant."""
        return cls.grants

    @classmethod
    def grant_refused(cls, answer: Answer) -> bool:
        """Whether the answer says the user has no grant left (the ledger records it)."""
        return False

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
    def create(cls, config: Config, lend: Lend) -> ChannelKind:
        """The sender for a running Herald (one per process, shared by all workers);
        what it needs beyond the config it asks `lend` for."""
        raise NotImplementedError

    def send(self, built: Built, token: str | None) -> Answer:
        raise NotImplementedError

    def close(self) -> None:
        pass


__all__ = ["Answer", "BuildError", "Built", "ChannelKind", "Kind", "Lend", "Meaning", "RowLike",
           "TemplateLike", "lender"]
