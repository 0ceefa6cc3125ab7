"""`check` (the files; --connect: the database and each app's token; --remote: the
templates against each app's template list at WeChat) and `templates pull`.

check without flags reads only files. --connect and --remote talk to the world; each
finding names what it is about (the database, a table, an app, a template's key line)
and, for WeChat, what the errcode means. Exit 2 when the configuration or the
templates are wrong (WeChat refused the credentials, a template disagrees with
WeChat's), 1 when the world is not reachable (no database, no network), else 0.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peewee import Database

import clock
from channels.base import Kind
from channels.wechat_api import WeChatClient
from commands import human
from commands.common import (
    EXIT_OK,
    EXIT_RUNTIME,
    EXIT_USAGE,
    VerbError,
    database_file,
    err,
    load,
    out,
    safe_url,
)
from commands.remote import RemoteTemplate, compare, missing_id, parse_list, pull_yaml
from commands.render import templates_of
from config import Config
from db.connection import connect
from db.dialects import dialect, for_url
from db.errors import describe
from db.rows import ping
from db.schema import VERSION, created_tables, state
from logs import add_secret
from strict_yaml import key_lines as _key_lines
from templates import TemplateSet, read_text
from tokens import TokenManager, TokenUnavailable


@dataclass
class Outcome:
    """What the checks found: config problems (exit 2) and runtime failures (exit 1)."""

    config: list[str] = field(default_factory=list)
    runtime: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def code(self) -> int:
        return EXIT_USAGE if self.config else EXIT_RUNTIME if self.runtime else EXIT_OK


def _at(tset: TemplateSet) -> Any:
    """'templates.yaml:LINE' of a key path, from the file as it is now."""
    lines = _key_lines(read_text(tset.path))

    def at(*keys: str) -> str:
        for n in range(len(keys), 0, -1):
            if keys[:n] in lines:
                return f"{tset.path.name}:{lines[keys[:n]]}"
        return f"{tset.path.name}:1"

    return at


# ----------------------------------------------------------------- the database


def check_database(cfg: Config, found: Outcome) -> Database | None:
    """Reach the database; its schema present and current. The Database, or None."""
    where = safe_url(cfg.database)
    file = database_file(cfg.database)
    if file is not None and not file.exists():
        # Before the first start this is expected, not a failure: say what comes next.
        out(f"database  not created yet: {file} does not exist")
        for line in first_start(for_url(cfg.database).name, file):
            out(f"          {line}")
        return None
    db = connect(cfg.database)
    try:
        db.connect(reuse_if_open=True)
        ping(db)
    except Exception as exc:  # noqa: BLE001 - every driver's failure, one sentence
        found.runtime.append(describe(exc, cfg.database))
        out(f"database  FAILED: {where}")
        return None
    try:
        schema = state(db)
    except Exception as exc:  # noqa: BLE001
        found.runtime.append(describe(exc, cfg.database))
        out(f"database  FAILED: {where}")
        return None
    if schema.version is None:
        out(f"database  reachable, no Herald tables yet: {where}")
        for line in first_start(dialect(db).name, file):
            out(f"          {line}")
        return None
    if not schema.up_to_date:
        found.runtime.append(f"database {where}: {schema.describe()}")
        out(f"database  reachable, schema NOT current: {where}")
        return db if schema.version is not None else None
    out(f"database  ok: {where}, {schema.describe()}")
    for warning in dialect(db).setting_warnings(db):
        found.warnings.append(f"database {where}: {warning}")
    return db


def first_start(dialect: str, file: Path | None) -> list[str]:
    """What `init-db` will create, and who should run it: a file made by the wrong user
    (root, say) is one the daemon cannot write."""
    tables = created_tables(dialect)
    lines = [f"init-db will create {len(tables)} tables at schema version {VERSION}: "
             f"{', '.join(tables)}"]
    if file is not None:
        owner = _owner(file.parent) if file.parent.exists() else None
        who = (f"the user the daemon runs as (the owner of {file.parent}: {owner})"
               if owner else "the user the daemon runs as")
        lines.append(f"run it as {who}, so the file is theirs: under systemd, "
                     "sudo -u herald .venv/bin/herald init-db; or start the daemon, which "
                     "creates them itself")
        if not file.parent.exists():
            # (a root-owned parent would name root: the folder is the daemon's to own)
            lines.append(f"the folder {file.parent} does not exist yet: systemd makes it at "
                         "the unit's first start (StateDirectory=), or create it owned by "
                         f"that user: install -d -o herald -g herald -m 0700 {file.parent}")
    else:
        lines.append("run it with an account that may create tables (the daemon's own, or "
                     "the database owner's); or start the daemon, which creates them itself")
    return lines


def _owner(path: Path) -> str | None:
    try:
        import pwd

        return pwd.getpwuid(path.stat().st_uid).pw_name
    except (KeyError, OSError, ImportError):
        return None


# ----------------------------------------------------------------- tokens


@dataclass
class AppToken:
    token: str | None
    line: str
    credential: bool = False  # WeChat refused the appid/secret: a configuration problem


def app_token(cfg: Config, name: str, client: WeChatClient, db: Database | None) -> AppToken:
    """One token fetch for the app (or the shared token, where a fetch would harm)."""
    app = cfg.apps[name]
    if app.token_source == "stable":
        # stable_token with force_refresh false hands every caller the same token: a
        # check never invalidates what the daemons hold
        ans = client.stable_token(app.appid, app.secret.reveal() if app.secret else "")
        if ans.kind is Kind.SUCCESS and ans.payload:
            token = str(ans.payload["access_token"])
            add_secret(token)
            ttl = human.age(float(ans.payload["expires_in"]))
            return AppToken(token, f"ok: stable_token answered a token valid for {ttl}")
        return AppToken(None, f"FAILED: stable_token: {ans.reason}",
                        credential=ans.kind is Kind.CREDENTIAL)
    if db is None:
        return AppToken(None, f"not checked: token_source {app.token_source} needs the "
                              "database (the shared token lives in access_token)")
    # legacy: each fetch replaces the token the daemons use, so the shared one is used
    # while valid; external: never fetched, read where the other service keeps it
    manager = TokenManager(db, client, {name: app}, daemon_id=f"check:{socket.gethostname()}"
                           f":{os.getpid()}", refresh_margin=0)
    try:
        token = manager.refresh(name, clock.now(), proactive=False)
    except TokenUnavailable as exc:
        return AppToken(None, f"FAILED: {exc.reason}", credential=bool(manager.alerts()))
    expires = manager.expires_at(name)
    left = human.age((expires - clock.now()).total_seconds()) if expires else "?"
    how = ("fetched from /cgi-bin/token and stored" if manager.fetches
           else "the shared token in access_token" if app.token_source == "legacy"
           else "read from " + (str(app.token_file) if app.token_file else "access_token"))
    return AppToken(token, f"ok: {how}, valid for {left}")


def check_tokens(cfg: Config, db: Database | None, client: WeChatClient, found: Outcome,
                 apps: list[str]) -> dict[str, str]:
    tokens: dict[str, str] = {}
    for name in apps:
        got = app_token(cfg, name, client, db)
        out(f"app {name:<8} {got.line}")
        if got.token:
            tokens[name] = got.token
        elif got.line.startswith("FAILED"):
            problem = f"app {name}: no access token: {got.line.removeprefix('FAILED: ')}"
            (found.config if got.credential else found.runtime).append(problem)
    return tokens


# ----------------------------------------------------------------- remote templates


def fetch_list(client: WeChatClient, name: str, token: str) -> list[RemoteTemplate]:
    ans = client.template_list(token)
    if ans.kind is not Kind.SUCCESS:
        raise VerbError(f"app {name}: the template list could not be fetched: {ans.reason}")
    return parse_list((ans.payload or {}).get("data") or [])


def listed_apps(tset: TemplateSet, cfg: Config) -> dict[str, list[Any]]:
    """app -> its templates that the app's WeChat template list holds (their channel
    says so: ChannelKind.listed_remotely); a template without `app` is sent by default."""
    out_: dict[str, list[Any]] = {}
    for tpl in tset.templates.values():
        if tpl.kind.listed_remotely and tpl.template_id:
            out_.setdefault(tpl.app or "default", []).append(tpl)
    return {a: ts for a, ts in out_.items() if a in cfg.apps}


def check_remote(cfg: Config, tset: TemplateSet, client: WeChatClient,
                 tokens: dict[str, str], found: Outcome) -> None:
    at = _at(tset)
    for app, templates in listed_apps(tset, cfg).items():
        token = tokens.get(app)
        if token is None:
            found.runtime.append(f"app {app}: templates not checked against WeChat: no token")
            continue
        try:
            listed = fetch_list(client, app, token)
        except VerbError as exc:
            found.runtime.append(str(exc))
            continue
        by_id = {r.template_id: r for r in listed}
        bad = 0
        for tpl in templates:
            remote = by_id.get(tpl.template_id or "")
            if remote is None:
                found.config.append(missing_id(tpl, app, listed, at))
                bad += 1
                continue
            f = compare(tpl, remote, app, at)
            found.config += f.problems
            found.warnings += f.warnings
            bad += bool(f.problems)
        missing = len([r for r in listed if r.template_id not in
                       {t.template_id for t in tset.templates.values()}])
        line = (f"templates of app {app}: {len(templates) - bad} of {len(templates)} match "
                f"WeChat's list ({len(listed)} there)")
        if missing:
            line += f"; {missing} not in {tset.path.name} (`templates pull --app {app}`)"
        out(line)


# ----------------------------------------------------------------- the verbs


def cmd_check(args: argparse.Namespace) -> int:
    cfg = load(args)
    tset = templates_of(cfg)
    problems = [
        f"{cfg.templates.name}:{t.line}: template {t.name}: app {t.app!r} is not configured "
        f"(configured: {', '.join(cfg.apps)})"
        for t in tset.templates.values() if t.app and t.app not in cfg.apps]
    if problems:
        err("\n".join(problems))
        return EXIT_USAGE
    out(f"config ok: {cfg.path}")
    out(f"  database  {safe_url(cfg.database)}")
    out(f"  apps      {', '.join(f'{a.name} ({a.token_source})' for a in cfg.apps.values())}")
    out(f"  templates {len(tset.templates)} in {cfg.templates}: {', '.join(tset.templates)}")
    for warning in cfg.warnings:  # valid but risky: said, never fatal
        err(f"warning: {warning}")
    for warning in plaintext_push_warnings(cfg):
        err(f"warning: {warning}")
    if not (args.connect or args.remote):
        return EXIT_OK
    found = Outcome()
    out("")
    apps = list(cfg.apps) if args.connect else list(listed_apps(tset, cfg))
    # --remote alone needs the database only for tokens kept there (legacy, external)
    need_db = args.connect or any(cfg.apps[a].token_source != "stable" for a in apps)
    db = check_database(cfg, found) if need_db else None
    client = WeChatClient(cfg.api_base, timeout=cfg.http.timeout, pool_size=2)
    try:
        tokens = check_tokens(cfg, db, client, found, apps)
        if args.remote:
            check_remote(cfg, tset, client, tokens, found)
    finally:
        client.close()
        if db is not None:
            db.close()
    return _finish(found)


def plaintext_push_warnings(cfg: Config) -> list[str]:
    """Apps whose push receiver takes plaintext mode only: the signature there does not
    cover the body, so a captured push can be replayed with another body within
    web.push_max_age (Herald refuses a second body for one timestamp and nonce, but
    cannot tell which body was WeChat's)."""
    return [f"apps.{name}.push has no aes_key: pushes to it are plaintext, whose signature "
            "does not cover the body; set the EncodingAESKey and safe mode (安全模式) in the "
            "app's console, the only mode to expose to the internet"
            for name, app in cfg.apps.items()
            if app.push is not None and app.push.aes_key is None]


def _finish(found: Outcome) -> int:
    for w in found.warnings:
        err(f"warning: {w}")
    for p in found.config + found.runtime:
        err(f"problem: {p}")
    n = len(found.config) + len(found.runtime)
    if n:
        err(f"{n} problem{'s' if n > 1 else ''} found")
    return found.code()


def cmd_templates_pull(args: argparse.Namespace) -> int:
    cfg = load(args, credentials=False)
    name = args.app or "default"
    if name not in cfg.apps:
        err(f"--app: {name!r} is not a configured app (configured: {', '.join(cfg.apps)})")
        return EXIT_USAGE
    cfg.require(f"apps.{name}.")  # only this app's credentials are needed
    tset = templates_of(cfg)
    db = None
    if cfg.apps[name].token_source != "stable":
        found = Outcome()
        db = check_database(cfg, found)
    client = WeChatClient(cfg.api_base, timeout=cfg.http.timeout, pool_size=2)
    try:
        got = app_token(cfg, name, client, db)
        if got.token is None:
            err(f"app {name}: no access token: {got.line.removeprefix('FAILED: ')}")
            return EXIT_USAGE if got.credential else EXIT_RUNTIME
        listed = fetch_list(client, name, got.token)
    finally:
        client.close()
        if db is not None:
            db.close()
    known = {t.template_id for t in tset.templates.values() if t.template_id}
    text, count = pull_yaml(listed, app=name, known_ids=known, names=set(tset.templates),
                            when=human.stamp(clock.now()))
    if not count:
        err(f"app {name}: all {len(listed)} templates of its list are in "
            f"{tset.path.name} already")
        return EXIT_OK
    sys.stdout.write(text)
    err(f"{count} template{'s' if count > 1 else ''} of app {name} not in {tset.path.name}: "
        f"append the YAML above to it (e.g. `>> {Path(tset.path).name}`), then `check --remote`")
    return EXIT_OK


__all__ = ["cmd_check", "cmd_templates_pull"]
