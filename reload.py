"""SIGHUP: re-read config.yaml (and the templates file), and apply all of it or none.

Every key of the new file is compared with the running configuration; each changed key
is one of:

- live in this process: `run` rebuilds what depends on it before anything changes (the
  HTTP client and every channel's sender for api_base, http.timeout, dispatch.workers
  and sms.*; the rate limiters; the token manager's credentials), `serve` has its
  templates and logging;
- unused by this process (`run` serves no pushes or console, `serve` sends nothing):
  taken as they are, they change nothing here;
- needing a restart (what a listening socket, an open database or the set of apps was
  built from). One such key refuses the whole reload: the keys are named at WARNING and
  every running setting stays.

A changed key no pattern matches needs a restart: a key added later is never silently
ignored. The templates are loaded with the new configuration and the in-use guard
(TemplateHolder.prepare): a file that would drop a template waiting rows name refuses
the reload, whether it changed in place or `templates:` points elsewhere. A file that no
longer validates refuses it too. `herald_config_reloads_total{result}` counts both
outcomes; "config reloaded" is said only when every change is in force.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Protocol

import channels
from channels.base import ChannelKind, lender
from channels.wechat_api import WeChatClient
from config import Config, ConfigError, load_config
from config.schema import SCHEMA
from logs import redact, set_secrets, setup_logging, template_secrets
from ratelimit import RateLimiters
from runtime import Runtime, process_rate, token_margin
from service.wiring import adopt, load_context
from templates import TemplateHolder, TemplateSet
from tokens import claim_seconds

log = logging.getLogger("herald.reload")

# Not settings: where the file is, what loading it found.
NOT_KEYS = ("path", "warnings", "unresolved")

# (pattern, what happens) for each process, first match wins, no match: restart. Each key
# says what SIGHUP does with it where it is declared (config/model.py, `reload=`).
RUN_KEYS: tuple[tuple[str, str], ...] = SCHEMA.sighup_table("run")
SERVE_KEYS: tuple[tuple[str, str], ...] = SCHEMA.sighup_table("serve")

# changes that need the senders (and the HTTP client they share) built again
SENDER_KEYS = ("api_base", "http.timeout", "dispatch.workers", "sms", "sms.*")


class Reschedulable(Protocol):
    def reschedule(self, name: str, every: float) -> None: ...
    def resize(self, workers: int) -> None: ...


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """dotted key -> value of every leaf of a loaded Config (a section that is null is
    one leaf, so adding or dropping it shows up as its own key)."""
    out: dict[str, Any] = {}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            if not prefix and f.name in NOT_KEYS:
                continue
            out.update(flatten(getattr(value, f.name), f"{prefix}{f.name}."))
        return out
    if isinstance(value, Mapping):
        if not value:
            out[prefix.rstrip(".")] = "{}"
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    out[prefix.rstrip(".")] = value
    return out


def changed_keys(old: Config, new: Config) -> list[str]:
    a, b = flatten(old), flatten(new)
    return sorted(k for k in a.keys() | b.keys() if k not in a or k not in b or a[k] != b[k])


def classify(key: str, table: tuple[tuple[str, str], ...]) -> str:
    for pattern, what in table:
        if fnmatchcase(key, pattern):
            return what
    return "restart"


def _matches(keys: list[str], patterns: tuple[str, ...]) -> bool:
    return any(fnmatchcase(k, p) for k in keys for p in patterns)


@dataclass
class Outcome:
    applied: bool
    changed: list[str] = field(default_factory=list)
    restart: list[str] = field(default_factory=list)
    reason: str = ""


def _load(old: Config, needs: Callable[[Config], list[str]] | None) -> Config:
    """The file again, as the process loaded it at start: credentials the process does
    not use may be missing; the ones it does must be there."""
    if old.path is None:
        raise ConfigError("no config file to reload (started without one)")
    new = load_config(old.path, strict_secrets=False)
    wanted = needs(new) if needs is not None else []
    if wanted:  # (require() with no prefix would ask for every secret)
        new.require(*wanted)
    return new


def _prepare_templates(holder: TemplateHolder, new: Config) -> TemplateSet:
    return holder.prepare(new.templates, load_context(new))


def _refuse(outcome: Outcome, metrics: Any) -> Outcome:
    metrics.config_reload(False)
    return outcome


def reload_config(rt: Runtime, daemon: Reschedulable | None = None, *,
                  needs: Callable[[Config], list[str]] | None = None) -> bool:
    """`run`'s SIGHUP: apply the re-read config.yaml and templates whole, or refuse.
    True if applied (the running configuration is the file's now)."""
    return reload_run(rt, daemon, needs=needs).applied


def reload_run(rt: Runtime, daemon: Reschedulable | None = None, *,
               needs: Callable[[Config], list[str]] | None = None) -> Outcome:
    old = rt.config
    try:
        new = _load(old, needs)
    except ConfigError as exc:
        log.error("config not reloaded, the running configuration stays: %s", redact(str(exc)))
        return _refuse(Outcome(False, reason=str(exc)), rt.metrics)
    changed = changed_keys(old, new)
    restart = [k for k in changed if classify(k, RUN_KEYS) == "restart"]
    if daemon is None:  # nothing to reschedule or resize: those need a restart here
        restart += [k for k in changed if fnmatchcase(k, "jobs.*.every")
                    or k == "dispatch.workers"]
    if restart:
        log.warning("config not reloaded, the running configuration stays: %s changed and "
                    "need a restart (restart herald to apply the file)", ", ".join(restart))
        return _refuse(Outcome(False, changed, restart), rt.metrics)
    # build everything new first: a failure here leaves the running objects untouched
    try:
        fresh = _prepare_templates(rt.templates, new)
    except Exception as exc:  # noqa: BLE001 - TemplateError, or a file gone
        log.error("config not reloaded, the running configuration stays: templates %s: %s",
                  new.templates, redact(str(exc)))
        return _refuse(Outcome(False, changed, reason=str(exc)), rt.metrics)
    client, senders = rt.client, rt.senders
    if _matches(changed, SENDER_KEYS):
        client = WeChatClient(new.api_base, timeout=new.http.timeout,
                              pool_size=new.dispatch.workers)
        try:
            senders = channels.build_senders(new, lender(client))
        except Exception as exc:  # noqa: BLE001 - keep every running sender
            client.close()
            log.error("config not reloaded, the running configuration stays: the senders "
                      "could not be built: %s", redact(str(exc)))
            return _refuse(Outcome(False, changed, reason=str(exc)), rt.metrics)
    # -- from here on nothing can fail: the new configuration goes in force whole
    adopt(rt.templates, fresh, new)
    if client is not rt.client:
        retired: list[ChannelKind | WeChatClient] = [*rt.senders.values(), rt.client]
        rt.client, rt.senders = client, senders
        # a send that started on them ends within its connect and read timeouts
        rt.retire(retired, after=2 * old.http.timeout)
    rt.tokens.configure(rt.client, new.apps, refresh_margin=token_margin(new),
                        claim_for=claim_seconds(new.http.timeout))
    if new.dispatch.rate_limit != old.dispatch.rate_limit:
        rt.limiters = RateLimiters(process_rate(new))
    if daemon is not None:
        for name, job in new.jobs.items():
            if job.every != old.jobs[name].every:
                daemon.reschedule(name, job.every)
        if new.dispatch.workers != old.dispatch.workers:
            daemon.resize(new.dispatch.workers)
    rt.config = new
    rt.metrics.config_reload(True)
    _say_applied(old, new, changed, fresh)
    return Outcome(True, changed)


def _say_applied(old: Config, new: Config, changed: list[str], fresh: TemplateSet) -> None:
    """The line that says the reload is in force, then the new logging (said before a
    new log.level could silence it)."""
    log.info("config reloaded from %s: %s; templates: %d from %s", old.path,
             f"{', '.join(changed)} changed" if changed else "no setting changed",
             len(fresh.templates), new.templates)
    if new.log != old.log:
        setup_logging(new.log.format, new.log.level, sql=new.log.sql)


class WebSide(Protocol):
    config: Config
    templates: TemplateHolder


def reload_serve(ctx: WebSide, *, needs: Callable[[Config], list[str]] | None = None,
                 metrics: Any = None) -> Outcome:
    """`serve`'s SIGHUP: the same whole-or-nothing rule, with serve's table."""
    from runtime import NullMetrics

    sink = metrics or NullMetrics()
    old = ctx.config
    try:
        new = _load(old, needs)
    except ConfigError as exc:
        log.error("config not reloaded, the running configuration stays: %s", redact(str(exc)))
        return _refuse(Outcome(False, reason=str(exc)), sink)
    changed = changed_keys(old, new)
    restart = [k for k in changed if classify(k, SERVE_KEYS) == "restart"]
    if restart:
        log.warning("config not reloaded, the running configuration stays: %s changed and "
                    "need a restart of serve (restart herald-web to apply the file)",
                    ", ".join(restart))
        return _refuse(Outcome(False, changed, restart), sink)
    try:
        fresh = _prepare_templates(ctx.templates, new)
    except Exception as exc:  # noqa: BLE001
        log.error("config not reloaded, the running configuration stays: templates %s: %s",
                  new.templates, redact(str(exc)))
        return _refuse(Outcome(False, changed, reason=str(exc)), sink)
    adopt(ctx.templates, fresh, new)
    ctx.config = new
    sink.config_reload(True)
    _say_applied(old, new, changed, fresh)
    return Outcome(True, changed)


def templates_watch(holder: TemplateHolder) -> bool | None:
    """The templates file changed on disk (no SIGHUP): reload it alone, guard included;
    the webhook secrets it holds become the ones redacted. None: it did not change."""
    done = holder.reload_if_changed()
    if done:
        set_secrets("templates", template_secrets(holder.current))
    return done


__all__ = ["RUN_KEYS", "SERVE_KEYS", "Outcome", "changed_keys", "classify", "flatten",
           "reload_config", "reload_run", "reload_serve", "templates_watch"]
