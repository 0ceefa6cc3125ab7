"""Helpers for the operator-verb tests: run a verb in this process (fast) or as a child
(the real environment), and seed rows in any state with plain SQL."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import clock
from db.dialects import dialect
from tests.conftest import insert_sql
from tests.support import ROOT, clean_env

# tables the shared fixture does not drop between tests on PostgreSQL/MySQL
SIDE_TABLES = ("msg_event", "herald_daemon", "subscribe_grant", "push_event")


@dataclass
class Ran:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def herald(capsys: pytest.CaptureFixture[str], *args: str) -> Ran:
    """`herald ARGS` in this process: scheduler.main, its exit code and output."""
    import scheduler

    capsys.readouterr()
    # the verb opens its own database and binds nothing: the test's models stay bound
    try:
        code = scheduler.main(list(args))
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return Ran(code, captured.out, captured.err)


def herald_child(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT,
                 timeout: float = 60) -> Ran:
    """`python scheduler.py ARGS` as a child with HERALD_*/WECHAT_* unset (plus `env`)."""
    res = subprocess.run([sys.executable, str(ROOT / "scheduler.py"), *args], cwd=cwd,
                         env=clean_env(**(env or {})), capture_output=True, text=True,
                         timeout=timeout)
    return Ran(res.returncode, res.stdout, res.stderr)


def queued(out: str) -> int:
    """The row id in enqueue's "queued #ID: template ..." line."""
    found = re.match(r"queued #(\d+): template ", out)
    assert found, f"enqueue printed no 'queued #ID' line: {out!r}"
    return int(found[1])


def clear_side_tables(db: Any) -> None:
    """Empty the history, heartbeat, grant and inbox tables (server databases keep them
    between tests: the shared fixture drops msg_list and access_token only)."""
    with db.connection_context():
        for table in SIDE_TABLES:
            db.execute_sql(f"DELETE FROM {table}")


def ago(seconds: float, now: datetime | None = None) -> datetime:
    return (now or clock.now()) - timedelta(seconds=seconds)


def seed(db: Any, **cols: Any) -> int:
    """A row with these columns, written with plain SQL (times converted for the engine)."""
    d = dialect(db)
    values = {k: d.ts(v) if isinstance(v, datetime) else v for k, v in cols.items()}
    values.setdefault("template", "order_status")
    values.setdefault("openid", "oUser")
    values.setdefault("params", '["Tea", 3, "shipped", "ok"]')
    with db.connection_context():
        return int(insert_sql(db, **values))


def event(db: Any, msg_id: int, kind: str, at: datetime, detail: str = "",
          errcode: int | None = None, channel: str | None = None,
          daemon: str | None = None) -> None:
    d = dialect(db)
    p = d.param
    with db.connection_context():
        db.execute_sql("INSERT INTO msg_event (msg_id, at, kind, channel, errcode, detail, "
                       f"daemon) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})",
                       (msg_id, d.ts(at), kind, channel, errcode, detail, daemon))


__all__ = ["Ran", "ago", "clear_side_tables", "event", "herald", "herald_child", "seed"]
