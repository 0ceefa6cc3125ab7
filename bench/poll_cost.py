#!/usr/bin/env python3
"""Poll cost: does one claim stay cheap when msg_list holds a million finished rows?

For each dialect (SQLite always; PostgreSQL and MySQL/MariaDB when reachable and their
DDL exists in db/ddl/), with 100 due waiting rows beside
  small: 1,000 finished rows, and
  big:   1,000,000 finished rows (the small table plus 999,000, then ANALYZE),
time db.claim.claim_batch(limit=100) (the real claim, one transaction) and the claim's
SELECT alone, K times each (the claimed rows go back to wait between runs, untimed), and
print the medians, big/small (target <= 2) and the query plans of the claim's
statements as the database runs them. Then, with a backlog of 100,000 due rows waiting,
the same timings again: that is the poll a drain makes, batch after batch.

    python bench/poll_cost.py                       # all three dialects
    python bench/poll_cost.py --db sqlite --json poll.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib as bl  # noqa: E402
from peewee import Database  # noqa: E402

from db.claim import claim_batch  # noqa: E402
from db.connection import dialect_of  # noqa: E402
from db.dialects import DDL_DIR  # noqa: E402
from db.models import MsgList  # noqa: E402

WAITING = 100
SMALL = 1_000
BIG = 1_000_000
RETENTION_S = 30 * 86400  # finished rows spread over the last 30 days, like a purged table

# Finished rows of a busy queue: 90% success, 10% fail, sent once, spread over 30 days.
# One INSERT ... SELECT per dialect, from the database's own row generator, so a million
# rows take seconds and no Python loop.
_COLS = ("template, openid, params, status, priority, send_at, created_at, updated_at, "
         "sent_at, attempts, msgid, errcode")

FILL_SQL = {
    "sqlite": f"""
        INSERT INTO msg_list ({_COLS})
        WITH RECURSIVE seq(n) AS (SELECT {{lo}} UNION ALL SELECT n + 1 FROM seq WHERE n < {{hi}})
        SELECT 'order_status', 'oDone' || n, '["a", 1, "b", "c"]',
               CASE WHEN n % 10 = 0 THEN 'fail' ELSE 'success' END, 0,
               datetime('now', '-' || (n % {RETENTION_S}) || ' seconds'),
               datetime('now', '-' || (n % {RETENTION_S}) || ' seconds'),
               datetime('now', '-' || (n % {RETENTION_S}) || ' seconds'),
               datetime('now', '-' || (n % {RETENTION_S}) || ' seconds'),
               1, CAST(1988810812324364291 + n AS TEXT), 0
        FROM seq""",
    "postgres": f"""
        INSERT INTO msg_list ({_COLS})
        SELECT 'order_status', 'oDone' || n, '["a", 1, "b", "c"]',
               CASE WHEN n % 10 = 0 THEN 'fail' ELSE 'success' END, 0,
               now() - (n % {RETENTION_S}) * interval '1 second',
               now() - (n % {RETENTION_S}) * interval '1 second',
               now() - (n % {RETENTION_S}) * interval '1 second',
               now() - (n % {RETENTION_S}) * interval '1 second',
               1, (1988810812324364291 + n)::text, 0
        FROM generate_series({{lo}}, {{hi}}) AS n""",
    # a cross join of digit tables: works on MySQL 8 and MariaDB alike, with no
    # recursion limit (cte_max_recursion_depth / max_recursive_iterations) to raise
    "mysql": f"""
        INSERT INTO msg_list ({_COLS})
        SELECT 'order_status', CONCAT('oDone', n), '["a", 1, "b", "c"]',
               IF(n % 10 = 0, 'fail', 'success'), 0,
               UTC_TIMESTAMP(6) - INTERVAL (n % {RETENTION_S}) SECOND,
               UTC_TIMESTAMP(6) - INTERVAL (n % {RETENTION_S}) SECOND,
               UTC_TIMESTAMP(6) - INTERVAL (n % {RETENTION_S}) SECOND,
               UTC_TIMESTAMP(6) - INTERVAL (n % {RETENTION_S}) SECOND,
               1, CAST(1988810812324364291 + n AS CHAR), 0
        FROM (SELECT 1 + a.d + 10 * b.d + 100 * c.d + 1000 * e.d + 10000 * f.d
                     + 100000 * g.d AS n
              FROM {{digits}} a, {{digits}} b, {{digits}} c, {{digits}} e, {{digits}} f,
                   {{digits}} g) AS seq
        WHERE n BETWEEN {{lo}} AND {{hi}}""",
}
DIGITS = "(" + " UNION ALL ".join(f"SELECT {d} AS d" for d in range(10)) + ")"

ANALYZE_SQL = {"sqlite": "ANALYZE", "postgres": "ANALYZE msg_list",
               "mysql": "ANALYZE TABLE msg_list"}
EXPLAIN = {"sqlite": "EXPLAIN QUERY PLAN ", "postgres": "EXPLAIN ", "mysql": "EXPLAIN "}


def fill_finished(db: Database, dialect: str, lo: int, hi: int) -> float:
    sql = FILL_SQL[dialect].format(lo=lo, hi=hi, digits=DIGITS)
    if dialect != "sqlite":
        sql = sql.replace("%", "%%")  # psycopg2 and PyMySQL read a bare % as a placeholder
    t0 = time.perf_counter()
    with db.atomic():
        db.execute_sql(sql)
    cur = db.execute_sql(ANALYZE_SQL[dialect])
    if dialect == "mysql":
        cur.fetchall()  # ANALYZE TABLE answers with a result set that must be read
    return time.perf_counter() - t0


def pick_query(now: datetime, dialect: str, limit: int = 100):
    """The claim's row-picking SELECT, as db/claim.py builds it (kept in step by hand;
    the plans of the statements claim_batch really sends are captured separately)."""
    q = (MsgList.select(MsgList.id)
         .where((MsgList.status == "wait") & (MsgList.send_at <= now))
         .order_by(MsgList.priority.desc(), MsgList.send_at, MsgList.id)
         .limit(limit))
    return q.for_update(skip_locked=True) if dialect != "sqlite" else q


def put_back(db: Database) -> None:
    """Claimed rows back to wait, as they were before the claim (untimed)."""
    with db.atomic():
        (MsgList.update({MsgList.status: "wait", MsgList.claimed_by: None,
                         MsgList.lease_until: None, MsgList.attempts: 0})
         .where(MsgList.status == "sending").execute())


def captured_claim_sql(db: Database) -> list[tuple[str, Any]]:
    """The statements claim_batch sends, recorded by wrapping execute_sql once."""
    seen: list[tuple[str, Any]] = []
    real = db.execute_sql

    def spy(sql: str, params: Any = None, *a: Any, **k: Any) -> Any:
        seen.append((sql, params))
        return real(sql, params, *a, **k)

    db.execute_sql = spy  # type: ignore[method-assign]
    try:
        claim_batch(db, daemon_id="bench", now=datetime.now(UTC), lease=300, limit=100)
    finally:
        del db.execute_sql  # back to the class's method
    put_back(db)
    return [(s, p) for s, p in seen
            if s.lstrip().upper().startswith(("UPDATE", "SELECT", "WITH"))]


def explain(db: Database, dialect: str, sql: str, params: Any) -> list[str]:
    if dialect == "postgres":
        # ANALYZE runs it, so inside a transaction that is rolled back: the plan with
        # real row counts and buffers, and nothing claimed
        with db.atomic() as txn:
            rows = db.execute_sql("EXPLAIN (ANALYZE, BUFFERS) " + sql, params).fetchall()
            txn.rollback()
        return [r[0] for r in rows]
    cur = db.execute_sql(EXPLAIN[dialect] + sql, params)
    rows = cur.fetchall()
    if dialect == "sqlite":  # (id, parent, notused, detail)
        return [f"{r[0]:>3} {r[1]:>3}  {r[3]}" for r in rows]
    names = [d[0] for d in cur.description]
    return [", ".join(f"{n}={v}" for n, v in zip(names, r, strict=True)) for r in rows]


def time_claims(db: Database, dialect: str, runs: int,
                expect: int = WAITING) -> dict[str, Any]:
    claim_ms: list[float] = []
    select_ms: list[float] = []
    for _ in range(runs):
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        rows = claim_batch(db, daemon_id="bench", now=now, lease=300, limit=100)
        claim_ms.append((time.perf_counter() - t0) * 1000)
        if len(rows) != expect:
            raise RuntimeError(f"claimed {len(rows)} rows, expected {expect}")
        put_back(db)
        sql, params = pick_query(datetime.now(UTC), dialect).sql()
        with db.atomic():
            t0 = time.perf_counter()
            db.execute_sql(sql, params).fetchall()
            select_ms.append((time.perf_counter() - t0) * 1000)
    return {
        "claim_median_ms": round(statistics.median(claim_ms), 3),
        "claim_min_ms": round(min(claim_ms), 3),
        "claim_max_ms": round(max(claim_ms), 3),
        "select_median_ms": round(statistics.median(select_ms), 3),
    }


def run_dialect(dialect: str, workdir: Path, runs: int, big: int,
                backlog: int) -> dict[str, Any]:
    if dialect != "sqlite":
        if not (DDL_DIR / f"{dialect}.sql").exists():
            return {"skipped": f"db/ddl/{dialect}.sql does not exist (yet)"}
        why = bl.server_reachable(dialect)
        if why:
            return {"skipped": f"server not reachable: {why}"}
    _url, db = bl.fresh_database(dialect, workdir)
    assert dialect_of(db) == dialect
    out: dict[str, Any] = {}
    with db.connection_context():
        out["fill_small_s"] = round(fill_finished(db, dialect, 1, SMALL), 2)
        bl.fill(db, WAITING, start=0)
        out["small"] = time_claims(db, dialect, runs)
        out["plan_small"] = [
            {"sql": s, "plan": explain(db, dialect, s, p)} for s, p in captured_claim_sql(db)]
        out["fill_big_s"] = round(fill_finished(db, dialect, SMALL + 1, big), 2)
        n = MsgList.select().count()
        out["rows_big"] = n
        out["big"] = time_claims(db, dialect, runs)
        out["plan_big"] = [
            {"sql": s, "plan": explain(db, dialect, s, p)} for s, p in captured_claim_sql(db)]
        sql, params = pick_query(datetime.now(UTC), dialect).sql()
        out["plan_select_big"] = explain(db, dialect, sql, params)
        out["select_sql"] = sql
        if backlog > WAITING:
            # not the brief's question but the drain's: a claim that sorts every due row
            # costs O(backlog) per batch while a large backlog drains
            out["fill_backlog_s"] = round(bl.fill(db, backlog - WAITING, start=WAITING), 2)
            cur = db.execute_sql(ANALYZE_SQL[dialect])
            if dialect == "mysql":
                cur.fetchall()
            out["backlog"] = time_claims(db, dialect, runs, expect=100)
            out["backlog_waiting"] = backlog
            sql, params = pick_query(datetime.now(UTC), dialect).sql()
            out["plan_select_backlog"] = explain(db, dialect, sql, params)
    for key in ("claim_median_ms", "select_median_ms"):
        out[f"ratio_{key}"] = round(out["big"][key] / out["small"][key], 2)
    if dialect == "sqlite":
        out["file_mb"] = round(sum(p.stat().st_size for p in workdir.glob("herald.db*"))
                               / 1e6, 1)
    db.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", action="append", choices=bl.DIALECTS,
                   help="dialect(s) to run; default all three")
    p.add_argument("--runs", type=int, default=20, help="claims timed per size")
    p.add_argument("--big", type=int, default=BIG, help="finished rows in the big table")
    p.add_argument("--backlog", type=int, default=100_000,
                   help="then also time claims with this many due waiting rows (0: skip)")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    results: dict[str, Any] = {"machine": bl.machine(), "runs": args.runs}
    for dialect in args.db or bl.DIALECTS:
        print(f"== {dialect}", flush=True)
        with bl.workdir() as wd:
            try:
                r = run_dialect(dialect, wd, args.runs, args.big, args.backlog)
            except Exception as exc:  # noqa: BLE001 - one dialect failing must not hide the rest
                r = {"error": f"{type(exc).__name__}: {exc}"}
        results[dialect] = r
        if "small" not in r:
            print(f"   skipped: {r.get('skipped') or r.get('error')}")
            continue
        print(f"   claim SELECT: {r['select_sql']}")
        for size in ("small", "big"):
            s = r[size]
            label = f"{SMALL:,}" if size == "small" else f"{r['rows_big'] - WAITING:,}"
            print(f"   {label:>9} finished + {WAITING} waiting: claim(100) median "
                  f"{s['claim_median_ms']} ms (min {s['claim_min_ms']}, max "
                  f"{s['claim_max_ms']}), SELECT alone {s['select_median_ms']} ms")
        print(f"   big/small: claim {r['ratio_claim_median_ms']}, SELECT "
              f"{r['ratio_select_median_ms']} (target <= 2); fills {r['fill_small_s']} s + "
              f"{r['fill_big_s']} s")
        if "backlog" in r:
            b = r["backlog"]
            print(f"   {'and':>9} {r['backlog_waiting']:,} due waiting (a backlog): claim(100) "
                  f"median {b['claim_median_ms']} ms, SELECT alone {b['select_median_ms']} "
                  f"ms; plan: {' / '.join(x.strip() for x in r['plan_select_backlog'])[:300]}")
        print("   plan (big) of the claim's SELECT alone:")
        for line in r["plan_select_big"]:
            print(f"      {line}")
        for stmt in r["plan_big"]:
            print(f"   plan (big) of: {' '.join(stmt['sql'].split())[:160]}...")
            for line in stmt["plan"]:
                print(f"      {line}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
