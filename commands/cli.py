"""The command line: every verb, its options and their help, in one place.

`herald VERB ...` and `python scheduler.py VERB ...` are the same parser. --config is
accepted before or after the verb (a subparser that defined it with a default would
overwrite the value given before the verb, hence SUPPRESS).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from db.dialects import NAMES as DIALECTS
from db.models import STATUSES
from version import __version__

Handler = Callable[[argparse.Namespace], int]

CONFIG_HELP = ("the config file (default: $HERALD_CONFIG, else ./config.yaml); "
               "may come before or after the verb")
EPILOG = "Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad config."


def prog_name() -> str:
    """'herald' when run as the console script, else 'python scheduler.py'."""
    name = os.path.basename(sys.argv[0] or "")
    return "herald" if name == "herald" else "python scheduler.py"


def _verb(sub: argparse._SubParsersAction, name: str, fn: Handler, help: str,
          description: str | None = None) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=description or help[0].upper() + help[1:]
                       + ".", epilog=EPILOG)
    p.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help=CONFIG_HELP)
    p.set_defaults(fn=fn)
    return p


def channel_names() -> list[str]:
    from channels import KINDS

    return list(KINDS)


# The long-running verbs load what they run only when they run: `herald status` needs
# neither APScheduler nor waitress nor the sandboxes.
def _run(args: argparse.Namespace) -> int:
    from commands.run import cmd_run

    return cmd_run(args)


def _serve(args: argparse.Namespace) -> int:
    from commands.serve import cmd_serve

    return cmd_serve(args)


def _console_password(args: argparse.Namespace) -> int:
    from commands.serve import cmd_console_password

    return cmd_console_password(args)


def _demo(args: argparse.Namespace) -> int:
    from commands.demo import main

    return main(args)


def build() -> argparse.ArgumentParser:
    """The parser: every verb, each with its handler (args -> exit code)."""
    from commands.check import cmd_check, cmd_templates_pull
    from commands.database import cmd_init_db, cmd_schema
    from commands.holds import cmd_holds
    from commands.render import cmd_render
    from commands.rows import cmd_cancel, cmd_enqueue, cmd_list, cmd_retry
    from commands.show import cmd_show
    from commands.status import cmd_status

    p = argparse.ArgumentParser(
        prog=prog_name(),
        description="Herald delivers WeChat Mini Program subscribe messages from the "
                    "msg_list table. `VERB --help` explains each verb.",
        epilog=EPILOG)
    p.add_argument("--config", metavar="PATH", help=CONFIG_HELP)
    p.add_argument("--version", action="version", version=f"herald {__version__}")
    sub = p.add_subparsers(dest="verb", metavar="VERB", required=True)

    s = _verb(sub, "run", _run, "run the daemon (stop with SIGTERM or Ctrl-C)",
              "Run the daemon: dispatch due rows, keep tokens fresh, recover rows a crash "
              "left, purge old rows. SIGHUP reloads config.yaml and templates.yaml; "
              "SIGTERM/SIGINT stop claiming, finish in-flight sends and exit 0.")
    s.add_argument("--once", action="store_true",
                   help="run each job once (token refresh, recovery, dispatch until nothing "
                        "is due, purge) and exit: for cron instead of a service")

    _verb(sub, "serve", _serve, "run the web side: WeChat push, SMS callbacks, console",
          "Serve WeChat message pushes and SMS status callbacks on web.listen and the "
          "operator console on console.listen. Needs no AppSecret. SIGTERM stops it; "
          "SIGHUP reloads templates.")
    _verb(sub, "console-password", _console_password,
          "print a password hash for console.users",
          "Read a password on stdin and print the hash to put in "
          "console.users.<name>.password_hash.")
    s = _verb(sub, "demo", _demo, "run everything locally: SQLite, sandbox, sample rows",
              "Build a SQLite queue in ./demo-run, start the local WeChat sandbox, insert "
              "sample rows (successes and failures), run the daemon until they settle and "
              "print them. Needs no WeChat account.")
    s.add_argument("--dir", default="demo-run", help="scratch folder (default: demo-run)")

    _verb(sub, "init-db", cmd_init_db, "create Herald's tables, or upgrade them in place",
          "Create msg_list, access_token and the other tables in the configured database, "
          "or upgrade an older schema in place. Safe to run again. Needs no app secrets.")
    s = _verb(sub, "schema", cmd_schema, "print the reference DDL for a database engine",
              "Print the SQL that init-db runs, for a DBA who applies schema changes by hand.")
    s.add_argument("--dialect", choices=list(DIALECTS), default=DIALECTS[0],
                   help=f"which engine's DDL (default: {DIALECTS[0]})")

    s = _verb(sub, "check", cmd_check, "validate config.yaml and templates.yaml",
              "Validate the config and the templates and print what is wrong, with key, "
              "value and what is allowed. --connect and --remote also try the real thing.")
    s.add_argument("--connect", action="store_true",
                   help="also reach the database (schema present and current) and fetch one "
                        "access token per app")
    s.add_argument("--remote", action="store_true",
                   help="also compare each subscribe template with the app's template list "
                        "at WeChat: its template_id, data keys and enum values")

    s = _verb(sub, "templates", cmd_templates_pull, "template helpers: `templates pull`",
              "Work with the templates WeChat holds for an app.")
    tsub = s.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = tsub.add_parser("pull", help="print YAML for the app's templates that "
                                     "templates.yaml lacks",
                        description="Fetch the app's template list from WeChat (GET "
                                    "/wxaapi/newtmpl/gettemplate) and print ready-to-paste "
                                    "templates.yaml entries for the templates the file does "
                                    "not declare yet: keywords with their labels, params, "
                                    "enum values, long-term marked.", epilog=EPILOG)
    t.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help=CONFIG_HELP)
    t.add_argument("--app", metavar="NAME",
                   help="the configured app whose list to read (default: default); only "
                        "its credentials are needed")
    t.set_defaults(fn=cmd_templates_pull)

    s = _verb(sub, "enqueue", cmd_enqueue, "insert one message row, checked as dispatch would",
              "Insert a row into msg_list, as an application would, after checking it the "
              "way dispatch will: template, app, params and keyword rules, openid. A row "
              "that would fail is refused (exit 2). Prints the new row's id.")
    s.add_argument("template", help="template name from templates.yaml (or its template_id)")
    s.add_argument("openid", help="the recipient's openid in the mini program")
    s.add_argument("--params", default="[]",
                   help='the values: a JSON array in the template\'s params order, e.g. '
                        '\'["Tea", 3, "shipped", "ok"]\', or an object by name '
                        '(default: [])')
    s.add_argument("--page", help="the page the card opens, overriding the template's")
    s.add_argument("--app", help="configured app that sends it (default: the template's "
                                 "app, else default)")
    s.add_argument("--phone", help="recipient phone in E.164 (+8613800138000), for sms rows")
    s.add_argument("--priority", type=int, default=0,
                   help="higher is sent first (default 0)")
    s.add_argument("--send-at", metavar="TIME",
                   help="not before this time: ISO 8601 (UTC unless it has an offset), or "
                        "+90s, +5m, +1h from now")
    s.add_argument("--expire-at", metavar="TIME",
                   help="never send after this time: ISO 8601, or +1h from now")
    s.add_argument("--dedup-key", metavar="KEY",
                   help="a unique key: a second row with the same key is refused")
    s.add_argument("--collapse-key", metavar="KEY",
                   help="updates of one thing (an order): of the rows to one user with this "
                        "key that are not sent yet, only the newest goes")

    s = _verb(sub, "status", cmd_status, "the queue, the daemons and the tokens at a glance",
              "Rows by status (waiting ones split into due, scheduled, retrying and held), "
              "per app and template; the oldest due row; the daemons alive; each app's "
              "token expiry and configuration alerts; recent failures. Needs no app "
              "secrets.")
    s.add_argument("--json", action="store_true", help="the same data as JSON, for scripts")
    s.add_argument("--failures", type=int, default=10, metavar="N",
                   help="how many recent failures to list (default 10)")

    s = _verb(sub, "holds", cmd_holds, "the quota holds in force; --lift APP ends one early",
              "List the quota holds every daemon honours: WeChat said an app's quota on a "
              "channel is spent (45009: until the quota day resets, 45011: until the next "
              "minute). --lift APP ends the app's holds now (recorded with who did it) and "
              "makes the waiting rows they deferred due. Needs no app secrets.")
    s.add_argument("--lift", metavar="APP", help="end this app's holds now")
    s.add_argument("--channel", choices=sorted(channel_names()),
                   help="with --lift: only the hold on this channel")
    s.add_argument("--all", action="store_true",
                   help="also the holds that ended or were lifted")
    s.add_argument("--json", action="store_true", help="the holds as JSON")

    s = _verb(sub, "show", cmd_show, "one row: what happened to it, its columns and history",
              "Show one msg_list row: what happened to it in words, every column, its "
              "history (claims, attempts, retries, cancels), its receipt and its fallback "
              "chain. Needs no app secrets.")
    s.add_argument("id", type=int, help="the row's id (msg_list.id)")
    s.add_argument("--json", action="store_true", help="the same data as JSON")

    s = _verb(sub, "list", cmd_list, "list rows, newest first, with filters",
              "List msg_list rows, newest first. Filters combine; page back with "
              "--before-id. Needs no app secrets.")
    s.add_argument("--status", choices=STATUSES, help="only rows with this status")
    s.add_argument("--template", help="only rows naming this template (as written in the row)")
    s.add_argument("--app", help="only rows of this app (--app default also matches rows "
                                 "whose app is NULL)")
    s.add_argument("--openid", help="only rows for this recipient")
    s.add_argument("--since", metavar="WHEN",
                   help="only rows created since: a duration ago (2h, 1d) or an ISO time")
    s.add_argument("--before-id", type=int, metavar="ID",
                   help="only rows with a smaller id (the next page: the last id shown)")
    s.add_argument("--limit", type=int, default=20, metavar="N",
                   help="how many rows at most (default 20, at most 1000)")
    s.add_argument("--json", action="store_true", help="the rows as JSON")

    s = _verb(sub, "cancel", cmd_cancel, "cancel waiting rows (by id, template or openid)",
              "Set waiting rows to cancelled so Herald never sends them. Only rows still "
              "waiting are cancelled; every other row named is left, and the reason said "
              "(exit 1 if a row named by id was left). Needs no app secrets.")
    s.add_argument("ids", nargs="*", type=int, help="ids of the rows to cancel (msg_list.id)")
    s.add_argument("--template", help="every waiting row of this template")
    s.add_argument("--openid", help="every waiting row for this recipient")
    s.add_argument("--app", help="only rows of this app")
    s.add_argument("--dry-run", action="store_true", help="only say what would be cancelled")

    s = _verb(sub, "retry", cmd_retry, "send failed rows again (by id, errcode, template, age)",
              "Put failed rows back to wait with attempts reset, due now. Filters combine. "
              "Rows named by id that are not failed are left and the reason said (exit 1). "
              "Try --dry-run first. Needs no app secrets.")
    s.add_argument("ids", nargs="*", type=int, help="ids of the rows to retry (msg_list.id)")
    s.add_argument("--errcode", type=int, help="only rows whose last errcode is this, e.g. -1")
    s.add_argument("--template", help="only rows of this template")
    s.add_argument("--app", help="only rows of this app")
    s.add_argument("--openid", help="only rows for this recipient")
    s.add_argument("--failed-within", metavar="DURATION",
                   help="only rows that failed in the last 2h, 1d, ...")
    s.add_argument("--failed-before", metavar="DURATION",
                   help="only rows that failed more than 1h, 1d, ... ago")
    s.add_argument("--all", action="store_true", help="every failed row (when no filter fits)")
    s.add_argument("--dry-run", action="store_true", help="only count and list them")

    s = _verb(sub, "render", cmd_render, "show the exact request a row would produce (no send)",
              "Render a row (by id) or ad-hoc values into the request its channel would "
              "get, failing exactly where dispatch would. Sends nothing; the token is "
              "never shown.")
    s.add_argument("id", nargs="?", type=int, help="msg_list row id")
    s.add_argument("--template", help="render these values with this template instead")
    s.add_argument("--openid", default="oPREVIEW", help="recipient (default: oPREVIEW)")
    s.add_argument("--params", default="[]", help="JSON array or object (default: [])")
    s.add_argument("--page", help="page override")
    s.add_argument("--app", help="configured app (default: the template's, else default)")
    s.add_argument("--phone", help="recipient phone for sms templates")
    return p


__all__ = ["build", "prog_name"]
