"""What a loaded templates.yaml is: templates, the set, a rendered request, the errors."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import channels
from channels.base import Built, ChannelKind
from templates.expressions import Plan
from templates.spending import NO_RULES, Rules

DEFAULT_FALLBACK_ON = frozenset({"43101", "43107", "no_grant"})


class TemplateError(Exception):
    """templates.yaml is unusable; `problems` are 'file:line: what is wrong' lines."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = problems
        super().__init__(f"invalid templates in {path}:\n  - " + "\n  - ".join(problems))


class RenderError(Exception):
    """A row that cannot become a request. The row ends 'fail' with `reason`."""

    def __init__(self, reason: str, *, row_id: int | None = None, template: str | None = None,
                 unknown_template: bool = False):
        self.reason = reason
        self.row_id = row_id
        self.template = template
        self.unknown_template = unknown_template
        super().__init__(f"row {row_id} (template {template!r}): {reason}")

@dataclass(frozen=True)
class DataItem:
    key: str  # the keyword (subscribe), the field (webhook) or the position (sms)
    source: str
    compiled: Any
    plan: Plan | None


@dataclass(frozen=True)
class Template:
    name: str
    channel: str
    template_id: str | None
    app: str | None
    params: tuple[str, ...]
    items: tuple[DataItem, ...]
    line: int
    settings: Mapping[str, Any] = field(default_factory=dict)
    fallback: tuple[str, ...] = ()
    fallback_on: frozenset[str] = DEFAULT_FALLBACK_ON
    enums: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    data_is_list: bool = False
    spend: Rules = NO_RULES  # collapse_window, send_window, per_user

    @property
    def kind(self) -> type[ChannelKind]:
        return channels.KINDS[self.channel]

    @property
    def long_term(self) -> bool:
        return bool(self.settings.get("long_term", False))

    # the subscribe settings, as attributes (older code and tests read them so)
    @property
    def page(self) -> str | None:
        return self.settings.get("page")

    @property
    def miniprogram_state(self) -> str:
        return str(self.settings.get("miniprogram_state", "formal"))

    @property
    def lang(self) -> str:
        return str(self.settings.get("lang", "zh_CN"))

    @property
    def data(self) -> Mapping[str, Any]:
        return {i.key: i.compiled for i in self.items}

    @property
    def sources(self) -> Mapping[str, str]:
        return {i.key: i.source for i in self.items}

    def falls_back_on(self, errcode: int | None, reason_code: str | None = None) -> bool:
        if not self.fallback:
            return False
        if errcode is not None and str(errcode) in self.fallback_on:
            return True
        return reason_code is not None and reason_code in self.fallback_on


@dataclass(frozen=True)
class TemplateSet:
    path: Path
    templates: Mapping[str, Template]
    by_id: Mapping[str, tuple[Template, ...]] = field(default_factory=dict)

    def lookup(self, name_or_id: str) -> Template:
        """The template a row's `template` column names (a name or a template_id)."""
        tpl = self.templates.get(name_or_id)
        if tpl is not None:
            return tpl
        found = self.by_id.get(name_or_id, ())
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = ", ".join(t.name for t in found)
            raise RenderError(
                f"template_id {name_or_id!r} is declared by several templates ({names}): "
                "name the template instead"
            )
        close = difflib.get_close_matches(name_or_id, list(self.templates), n=1)
        mean = f" (did you mean {close[0]!r}?)" if close else ""
        raise RenderError(
            f"unknown template {name_or_id!r}: not a template name in {self.path.name} "
            f"nor a template_id one of them declares{mean}",
            unknown_template=True,
        )

    def names_and_ids(self) -> set[str]:
        return set(self.templates) | {t.template_id for t in self.templates.values()
                                      if t.template_id}


@dataclass(frozen=True)
class Request:
    """A row rendered into its channel's request, plus what the rendering had to change."""

    app: str | None
    template: Template
    built: Built

    @property
    def body(self) -> dict[str, Any]:
        return self.built.body

    @property
    def truncated(self) -> tuple[str, ...]:
        return self.built.truncated

    @property
    def recipient(self) -> str:
        return self.built.recipient

@dataclass(frozen=True)
class RowFields:
    """The row columns a channel may read."""

    openid: str | None
    phone: str | None = None
    page: str | None = None
    row_id: int | None = None


__all__ = ["DEFAULT_FALLBACK_ON", "DataItem", "RenderError", "Request", "RowFields",
           "Template", "TemplateError", "TemplateSet"]
