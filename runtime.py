"""The objects a running Herald shares between its jobs, built once from the config."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from peewee import Database, fn

import channels
from channels.base import ChannelKind
from channels.wechat_api import WeChatClient
from config import Config
from db.models import MsgList
from logs import config_secrets, set_secrets, template_secrets
from notify import Heartbeat
from ratelimit import RateLimiters
from templates import LoadContext, TemplateHolder
from tokens import TokenManager, claim_seconds


def make_daemon_id() -> str:
    """host:pid:random, unique per process: what claimed_by records."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class MetricsSink(Protocol):
    """What the jobs report; metrics.Metrics implements it for Prometheus."""

    def finished(self, template: str, status: str, errcode: int | None) -> None: ...
    def send_duration(self, seconds: float) -> None: ...
    def job_run(self, job: str, seconds: float, ok: bool) -> None: ...
    def config_reload(self, applied: bool) -> None: ...


class NullMetrics:
    """The sink used when metrics are off."""

    def finished(self, template: str, status: str, errcode: int | None) -> None: ...
    def send_duration(self, seconds: float) -> None: ...
    def job_run(self, job: str, seconds: float, ok: bool) -> None: ...
    def config_reload(self, applied: bool) -> None: ...


def waiting_rows_naming(db: Database) -> object:
    """A TemplateHolder guard: how many wait/sending rows name each template (by name
    or template_id), so a reload never drops a template that rows still need."""

    def count(names: Iterable[str]) -> Mapping[str, int]:
        wanted = list(names)
        if not wanted:
            return {}
        with db.connection_context():
            query = (MsgList.select(MsgList.template, fn.COUNT(MsgList.id))
                     .where(MsgList.status.in_(["wait", "sending"])
                            & MsgList.template.in_(wanted))
                     .group_by(MsgList.template))
            return {str(t): int(n) for t, n in query.tuples()}

    return count


def process_rate(config: Config) -> float | None:
    """dispatch.rate_limit for one dispatch process: the daemon's rate shared between
    its processes, so that together they never start more sends a second than it says."""
    rate = config.dispatch.rate_limit
    return rate / config.dispatch.processes if rate else rate


def token_margin(config: Config) -> float:
    """How far ahead of expiry token_refresh renews a token: one job interval and 5 min."""
    return config.jobs["token_refresh"].every + 300


@dataclass
class Runtime:
    config: Config
    db: Database
    templates: TemplateHolder
    client: WeChatClient
    tokens: TokenManager
    daemon_id: str
    limiters: RateLimiters
    senders: dict[str, ChannelKind] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)
    metrics: MetricsSink = field(default_factory=NullMetrics)
    # progress reports from dispatch, read by the watchdog loop in scheduler.py
    heartbeat: Heartbeat = field(default_factory=Heartbeat)
    # dispatch.processes > 1: this process is the k-th of n and claims only the rows
    # whose recipient falls in its share (commands/processes.py); None: every row
    share: tuple[int, int] | None = None
    # senders and clients a reload replaced, closed once no send can still use them:
    # (monotonic time after which they may close, the objects)
    retired: list[tuple[float, list[Any]]] = field(default_factory=list)

    @classmethod
    def build(cls, config: Config, db: Database, *, daemon_id: str | None = None) -> Runtime:
        daemon_id = daemon_id or make_daemon_id()
        set_secrets("config", config_secrets(config))
        stopping = threading.Event()
        client = WeChatClient(config.api_base, timeout=config.http.timeout,
                              pool_size=config.dispatch.workers)
        tokens = TokenManager(db, client, config.apps, daemon_id=daemon_id,
                              refresh_margin=token_margin(config),
                              claim_for=claim_seconds(config.http.timeout), stopping=stopping)
        context = LoadContext(config=config, base_dir=config.templates.parent)
        templates = TemplateHolder(config.templates, in_use=waiting_rows_naming(db),  # type: ignore[arg-type]
                                   context=context)
        set_secrets("templates", template_secrets(templates.current))
        return cls(
            config=config,
            db=db,
            templates=templates,
            client=client,
            tokens=tokens,
            daemon_id=daemon_id,
            limiters=RateLimiters(process_rate(config)),
            senders=channels.build_senders(config, client),
            stopping=stopping,
        )

    def retire(self, objects: Iterable[Any], *, after: float) -> None:
        """Objects a reload replaced (senders, the HTTP client): a send that started
        before may still be using one, so each is closed only once `after` seconds (the
        old http.timeout) and some have passed, at a later reload or at close()."""
        now = time.monotonic()
        self._close_retired(now)
        self.retired.append((now + after + 5.0, list(objects)))

    def _close_retired(self, now: float | None = None) -> None:
        keep = []
        for due, objects in self.retired:
            if now is not None and due > now:
                keep.append((due, objects))
                continue
            for obj in objects:
                obj.close()
        self.retired = keep

    def close(self) -> None:
        for sender in self.senders.values():
            sender.close()
        self.client.close()
        self._close_retired()
