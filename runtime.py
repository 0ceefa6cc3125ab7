"""The objects a running Herald shares between its jobs, built once from the config."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from peewee import Database

import channels
from channels.base import ChannelKind, lender
from channels.wechat_api import WeChatClient
from config import Config
from notify import Heartbeat
from ratelimit import RateLimiters
from service.wiring import make_daemon_id, mask_config_secrets, template_holder
from templates import TemplateHolder
from tokens import TokenManager, claim_seconds


class MetricsSink(Protocol):
    """What the jobs report; metrics.Metrics implements it for Prometheus."""

    def finished(self, template: str, status: str, errcode: int | None,
                 n: int = 1) -> None: ...
    def send_duration(self, seconds: float) -> None: ...
    def job_run(self, job: str, seconds: float, ok: bool) -> None: ...
    def config_reload(self, applied: bool) -> None: ...


class NullMetrics:
    """The sink used when metrics are off."""

    def finished(self, template: str, status: str, errcode: int | None,
                 n: int = 1) -> None: ...
    def send_duration(self, seconds: float) -> None: ...
    def job_run(self, job: str, seconds: float, ok: bool) -> None: ...
    def config_reload(self, applied: bool) -> None: ...


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
    # whose recipient falls in its share (service/processes.py); None: every row
    share: tuple[int, int] | None = None
    # senders and clients a reload replaced, closed once no send can still use them:
    # (monotonic time after which they may close, the objects)
    retired: list[tuple[float, list[Any]]] = field(default_factory=list)

    @classmethod
    def build(cls, config: Config, db: Database, *, daemon_id: str | None = None) -> Runtime:
        daemon_id = daemon_id or make_daemon_id()
        mask_config_secrets(config)
        stopping = threading.Event()
        client = WeChatClient(config.api_base, timeout=config.http.timeout,
                              pool_size=config.dispatch.workers)
        tokens = TokenManager(db, client, config.apps, daemon_id=daemon_id,
                              refresh_margin=token_margin(config),
                              claim_for=claim_seconds(config.http.timeout), stopping=stopping)
        templates = template_holder(config, db)
        return cls(
            config=config,
            db=db,
            templates=templates,
            client=client,
            tokens=tokens,
            daemon_id=daemon_id,
            limiters=RateLimiters(process_rate(config)),
            senders=channels.build_senders(config, lender(client)),
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
