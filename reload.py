"""SIGHUP: re-read config.yaml and apply what can change while running.

Live: log level, retry policy, dispatch batch_size / lease / on_stale / rate_limit,
job intervals, retention, the templates file. Everything else (database, api_base,
apps and their secrets, workers, http.timeout, metrics, log format) needs a restart:
a reload that changes those logs which keys will wait for it. A config that no longer
validates is reported and the running one stays.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Protocol

from config import Config, ConfigError, load_config
from ratelimit import RateLimiters
from runtime import Runtime
from templates import TemplateHolder

log = logging.getLogger("herald.reload")

RESTART_ONLY = ("database", "api_base", "apps", "http", "metrics")


class Reschedulable(Protocol):
    def reschedule(self, name: str, every: float) -> None: ...


def changes_needing_restart(old: Config, new: Config) -> list[str]:
    keys = [k for k in RESTART_ONLY if getattr(old, k) != getattr(new, k)]
    if old.dispatch.workers != new.dispatch.workers:
        keys.append("dispatch.workers")
    if old.log.format != new.log.format:
        keys.append("log.format")
    return keys


def reload_config(rt: Runtime, daemon: Reschedulable | None = None) -> bool:
    """Apply a re-read config.yaml to the running daemon. True if applied."""
    old = rt.config
    try:
        new = load_config(old.path) if old.path else None
    except ConfigError as exc:
        log.error("config not reloaded, the running configuration stays: %s", exc)
        return False
    if new is None:
        return False
    pending = changes_needing_restart(old, new)
    # the parts that need a restart keep their running values until then
    live = dataclasses.replace(
        new,
        **{k: getattr(old, k) for k in RESTART_ONLY},
        dispatch=dataclasses.replace(new.dispatch, workers=old.dispatch.workers),
        log=dataclasses.replace(new.log, format=old.log.format),
    )
    if live.templates != old.templates:
        try:
            rt.templates = TemplateHolder(live.templates)
        except Exception as exc:  # noqa: BLE001 - keep the running templates
            log.error("templates: %s not loaded, keeping %s: %s", live.templates,
                      old.templates, exc)
            live = dataclasses.replace(live, templates=old.templates)
    if live.dispatch.rate_limit != old.dispatch.rate_limit:
        rt.limiters = RateLimiters(live.dispatch.rate_limit)
    if live.log.level != old.log.level:
        logging.getLogger().setLevel(live.log.level)
    if daemon is not None:
        for name, job in live.jobs.items():
            if job.every != old.jobs[name].every:
                daemon.reschedule(name, job.every)
    rt.config = live
    if pending:
        log.warning("config reloaded; changes to %s take effect after a restart",
                    ", ".join(pending))
    else:
        log.info("config reloaded")
    return True
