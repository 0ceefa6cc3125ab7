"""One way to the database: every SQL statement and every engine difference lives in db/.

The tree outside db/ is read as Python (strings, names, imports), not as text, so a
docstring or a comment may talk about SQLite or an UPDATE while code may not:

- no string naming an engine or its driver as a value (one word, as code compares or
  picks it; a sentence for a person, or a URL given as an example, is not);
- no SQL in a string, and no call of execute_sql: statements live in db/;
- no name of an engine's driver or of a table's model (queries live in db/);
- no module-level database proxy, anywhere, and nothing binds the models on import.

Inside db/, only the engine modules (dialects, drivers, urls and PostgreSQL's
wake-up) compare an engine's name; the rest asks the Dialect.

The storage functions are then run with the models bound to nothing, as in Herald
itself, so none of them can lean on the binding the other tests set up.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from db.models import TABLES
from tests.bound import bind, unbind

ROOT = Path(__file__).resolve().parent.parent
# not Herald: its tests, benchmarks, client examples in other languages' style, builds
OUTSIDE = {"db", "tests", "bench", "examples", ".venv", "build", "herald.egg-info"}

ENGINE = re.compile(r"(?i)\b(sqlite3?|postgres(ql)?|pg|mysql|mariadb|pymysql|psycopg2?)\b")
SQL = re.compile(r"\b(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM|FOR UPDATE|SKIP LOCKED|"
                 r"CREATE (TABLE|INDEX|TRIGGER)|ALTER TABLE|DROP TABLE|ON CONFLICT|"
                 r"ON DUPLICATE KEY)\b")
MODELS = {m.__name__ for m in TABLES}
NAMES = {"execute_sql", "DatabaseProxy", "Proxy", "bind_ctx"} | MODELS

# What may stay, and why: (file, kind, how the hit's text begins).
ALLOWED = {
    # `herald demo` seeds its rows the way an application would: the sqlite3 module
    # and plain INSERTs, not Herald's code (that is what the demo shows)
    ("commands/demo.py", "name", "sqlite3"),
    ("commands/demo.py", "sql", "INSERT INTO msg_list ("),
    ("commands/demo.py", "sql", "INSERT INTO push_event (app, source, kind, openid, payload)"),
    ("commands/demo.py", "sql", "INSERT INTO subscribe_grant (app, openid, template_id, balance)"),
}


def _allowed(hit: tuple[str, str, str]) -> bool:
    return any(hit[0] == f and hit[1] == k and hit[2].startswith(t) for f, k, t in ALLOWED)


def production_files() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py")
                  if p.relative_to(ROOT).parts[0] not in OUTSIDE)


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                out.add(id(body[0].value))
    return out


def hits(path: Path) -> list[tuple[str, str, str]]:
    """(file, kind, text) of everything outside db/ that belongs in db/."""
    rel = str(path.relative_to(ROOT))
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
    skip = _docstrings(tree)
    found: list[tuple[str, str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            text = node.value
            if ENGINE.search(text) and "://" not in text and not re.search(r"\s", text):
                found.append((rel, "engine", text))
            if SQL.search(text):
                found.append((rel, "sql", text))
        names: list[str] = []
        if isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, ast.Attribute):
            names = [node.attr]
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
        for name in names:
            if name in NAMES or any(ENGINE.search(part) for part in re.split(r"[._]", name)):
                found.append((rel, "name", name))
    return [h for h in found if not _allowed(h)]


def test_the_search_looks_where_it_should():
    files = {str(p.relative_to(ROOT)) for p in production_files()}
    # the places that once held SQL or an engine's name are searched
    for expected in ("scheduler.py", "tokens.py", "runtime.py", "jobs/events.py",
                     "jobs/dispatch.py", "jobs/purge.py", "jobs/stale_retry.py",
                     "commands/check.py", "config/values.py", "web/console/overview.py",
                     "commands/demo.py", "commands/run.py", "service/wiring.py",
                     "jobs/fallback.py"):
        assert expected in files
    assert not any(f.startswith(("db/", "tests/")) for f in files)


def test_the_search_finds_what_it_looks_for(tmp_path):
    """The checks themselves: each kind of leak is caught, a docstring is not."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""A module about SQLite and SELECT, in words."""\n'
        "import psycopg2\n"
        "from db.models import MsgList\n"
        "def f(d, db):\n"
        '    """UPDATE the rows (words again)."""\n'
        '    if d.name == "mysql":\n'
        '        db.execute_sql("UPDATE msg_list SET status = %s")\n'
        '    sql = "SELECT id FROM push_event" + " FOR UPDATE SKIP LOCKED"\n'
        '    url = "postgresql://user@host/db"  # an example: allowed\n'
        "    return MsgList.select()\n", encoding="utf-8")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        found = hits(sample)
    finally:
        ROOT = saved
    kinds = {(k, t) for _, k, t in found}
    assert ("name", "psycopg2") in kinds
    assert ("name", "MsgList") in kinds
    assert ("engine", "mysql") in kinds
    assert ("name", "execute_sql") in kinds
    assert ("sql", "UPDATE msg_list SET status = %s") in kinds
    assert ("sql", "SELECT id FROM push_event") in kinds
    assert ("sql", " FOR UPDATE SKIP LOCKED") in kinds
    assert not any("postgresql://" in t for _, _, t in found)
    assert not any("words" in t for _, _, t in found)


def test_no_sql_and_no_engine_outside_db():
    found = [h for p in production_files() for h in hits(p)]
    assert found == []


def test_the_allowed_hits_are_still_there():
    """An allowance that matches nothing any more is removed, not kept as a hole."""
    found = [h for p in production_files() for h in _all_hits(p)]
    for f, k, t in ALLOWED:
        assert any(h[0] == f and h[1] == k and h[2].startswith(t) for h in found), (f, k, t)


def _all_hits(path: Path) -> list[tuple[str, str, str]]:
    saved = set(ALLOWED)
    ALLOWED.clear()
    try:
        return hits(path)
    finally:
        ALLOWED.update(saved)


ENGINE_MODULES = {"dialects.py", "drivers.py", "urls.py", "wakeup.py"}


def test_inside_db_only_the_engine_modules_compare_engine_names():
    found = []
    for path in sorted((ROOT / "db").glob("*.py")):
        if path.name in ENGINE_MODULES:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            for part in [node.left, *node.comparators]:
                text = ast.unparse(part)
                if ENGINE.search(text) or text.endswith(".name"):
                    found.append((path.name, ast.unparse(node)))
    assert found == []


def test_no_database_proxy_and_no_binding_on_import():
    for path in [*production_files(), *sorted((ROOT / "db").rglob("*.py"))]:
        text = path.read_text(encoding="utf-8")
        assert "DatabaseProxy" not in text, path
        assert ".initialize(" not in text, path
    # every production module imported, and still no model knows a database
    code = ("import scheduler, runtime, metrics, web.server, web.console.app, commands.demo, "
            "commands.run, commands.serve, service.daemon, service.shell, service.wiring, "
            "jobs.dispatch, jobs.events, jobs.purge, jobs.stale_retry, jobs.token_refresh, "
            "jobs.fallback\n"
            "from db.models import TABLES\n"
            "print([m.__name__ for m in TABLES if m._meta.database is not None])")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


@pytest.fixture
def unbound(any_db):
    """The test's database, with the models bound to nothing (as in Herald)."""
    was = TABLES[0]._meta.database
    unbind()
    try:
        yield any_db
    finally:
        unbind()
        if was is not None:
            bind(was)


def test_storage_runs_with_the_models_bound_to_nothing(unbound):
    """Each storage function that goes through the models names its database: with the
    models bound to nothing, any that did not would fail here."""
    from db import heartbeat, ops, queue, rows, stale
    from db import tokens as table
    from db.claim import expire_overdue
    from db.purge import purge_events, purge_status

    db = unbound
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with db.connection_context():
        first = rows.insert(db, {"template": "t", "openid": "o1", "send_at": now,
                                 "expire_at": now - timedelta(seconds=1), "app": "a"})
        second = rows.insert(db, {"template": "t", "openid": "o2", "send_at": now,
                                  "app": "a"})
        assert rows.listing(db, limit=10, app="a")[0][0] == second
        assert rows.open_rows_naming(db, ["t"]) == {"t": 2}
        assert [r.id for r in rows.every_row(db)] == [first, second]
        assert rows.every_grant(db) == [] and rows.every_push(db) == []
        assert rows.ancestors(db, first) == ["t"]
        assert queue.counts_by_status(db)["wait"] == 2
        assert queue.oldest_due(db, now + timedelta(seconds=1)) is not None
        assert queue.due_count(db, now) == 2
        assert queue.held_for_grant(db) == (0, 0)
        assert queue.pending_events(db) == 0
        assert queue.receipts_since(db, now, now).delivered == 0
        assert expire_overdue(db, now=now) == 1  # the one past its expire_at
        sel = ops.Selection(ids=(second,))
        assert ops.count(db, sel, "wait", now=now) == 1
        assert ops.cancel(db, sel, now=now).changed == [second]
        assert ops.retry(db, ops.Selection(ids=(first,)), now=now).changed == [first]
        db.execute_sql("UPDATE msg_list SET status = 'sending', lease_until = NULL "
                       f"WHERE id = {int(first)}")
        found = stale.recover_batch(db, now, max_attempts=5, fail_mode=False, daemon_id="d")
        assert found.rows == 1 and found.counts == {"retry": 1}
        assert purge_status(db, "cancelled", now + timedelta(days=1), batch=10) == (1, 1)
        assert purge_events(db, now, batch=10) == 0
        table.ensure_row(db, "a")
        assert table.claim(db, "a", "d", at=now, until=now + timedelta(seconds=30),
                           need_until=now)
        assert table.store(db, "a", "d", token="tok", expires_at=now + timedelta(hours=2),
                           now=now)
        row = table.read(db, "a")
        assert row is not None and row.expires_at == now + timedelta(hours=2)
        assert table.expire(db, "a", "tok", now)
        table.release(db, "a", "d")
        heartbeat.beat(db, daemon_id="d", role="run", started_at=now, now=now)
        assert heartbeat.forget_old(db, now + timedelta(days=2)) == 1
        heartbeat.stopped(db, "d")
