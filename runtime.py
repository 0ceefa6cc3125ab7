"""The objects a running Herald shares between its jobs, built once from the config."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from typing import Protocol

from peewee import Database

from config import Config
from notify import Heartbeat
from ratelimit import RateLimiters
from templates import TemplateHolder
from tokens import TokenManager
from channels.wechat_api import WeChatClient


def make_daemon_id() -> str:
    """host:pid:random, unique per process: what claimed_by records."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class MetricsSink(Protocol):
    """What the jobs report; metrics.Metrics implements it for Prometheus."""

    def finished(self, template: str, status: str, errcode: int | None) -> None: ...
    def send_duration(self, seconds: float) -> None: ...
    def job_run(self, job: str, seconds: float, ok: bool) -> None: ...


class NullMetrics:
    """The sink used when metrics are off."""

    def finished(self, template: str, status: str, errcode: int | None) -> None: ...
    def send_duration(self, seconds: float) -> None: ...
    def job_run(self, job: str, seconds: float, ok: bool) -> None: ...


@dataclass
class Runtime:
    config: Config
    db: Database
    templates: TemplateHolder
    client: WeChatClient
    tokens: TokenManager
    daemon_id: str
    limiters: RateLimiters
    stopping: threading.Event = field(default_factory=threading.Event)
    metrics: MetricsSink = field(default_factory=NullMetrics)
    # progress reports from dispatch, read by the watchdog loop in scheduler.py
    heartbeat: Heartbeat = field(default_factory=Heartbeat)

    @classmethod
    def build(cls, config: Config, db: Database, *, daemon_id: str | None = None) -> Runtime:
        daemon_id = daemon_id or make_daemon_id()
        client = WeChatClient(config.api_base, timeout=config.http.timeout,
                              pool_size=config.dispatch.workers)
        tokens = TokenManager(db, client, config.apps, daemon_id=daemon_id,
                              refresh_margin=config.jobs["token_refresh"].every + 300)
        return cls(
            config=config,
            db=db,
            templates=TemplateHolder(config.templates),
            client=client,
            tokens=tokens,
            daemon_id=daemon_id,
            limiters=RateLimiters(config.dispatch.rate_limit),
        )

    def close(self) -> None:
        self.client.close()
