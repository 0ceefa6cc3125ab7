"""How long each console page takes with a million-row msg_list.

Fills msg_list in the database itself (a recursive CTE on SQLite and MySQL/MariaDB,
generate_series on PostgreSQL): 88 % success (sent over the last
7 days, most with a receipt), 6 % fail over five errcodes, 3 % waiting (half due, half
scheduled), the rest cancelled or sending; two apps, three templates, 50,000 users.
Then it starts the real `serve`, logs in over HTTP like a browser, and times every page
(the first request, and the median of the next --repeat), with the overview's
aggregate both cold (its first computation) and from its cache.

    .venv/bin/python bench/console_pages.py                 # SQLite, 1,000,000 rows
    .venv/bin/python bench/console_pages.py --db postgres   # HERALD_BENCH_POSTGRES_URL
    .venv/bin/python bench/console_pages.py --rows 100000 --json out.json

PostgreSQL and MySQL use the database benchlib.server_url names (HERALD_BENCH_<D>_URL,
else herald_bench next to HERALD_TEST_<D>_URL); the script drops Herald's tables there.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402
import requests  # noqa: E402

from db.connection import dialect_of  # noqa: E402
from tests.support import ServeProcess, fresh_db, write_config  # noqa: E402
from web.console.auth import hash_password  # noqa: E402

TABLES = ("msg_list", "access_token", "push_event", "subscribe_grant", "msg_event",
          "herald_daemon", "herald_schema")
PASSWORD = "bench-password-1"
DAY = 86400

# one row per id i (1..n); r = i % 1000 picks its status. {ts(x)} is a timestamp x
# seconds after the fill's start (the newest row is "now").
ROW_SQL = """
INSERT INTO msg_list (id, app, template, openid, params, status, priority, send_at,
    attempts, dedup_key, created_at, updated_at, sent_at, errcode, error, msgid, receipt,
    receipt_at)
SELECT i,
    CASE WHEN i % 10 = 0 THEN 'shop_b' ELSE NULL END,
    CASE i % 4 WHEN 1 THEN 'vip_pay_success' WHEN 2 THEN 'order_status_v2'
               ELSE 'order_status' END,
    {openid},
    '["Coffee", 12.5, "shipped", "thanks"]',
    CASE WHEN i % 1000 < 880 THEN 'success' WHEN i % 1000 < 940 THEN 'fail'
         WHEN i % 1000 < 970 THEN 'wait' WHEN i % 1000 < 998 THEN 'cancelled'
         ELSE 'sending' END,
    0,
    CASE WHEN i % 1000 BETWEEN 955 AND 969 THEN {ts_future} ELSE {ts_created} END,
    CASE WHEN i % 1000 < 880 THEN 1 WHEN i % 1000 < 940 THEN 5 ELSE 0 END,
    {dedup},
    {ts_created}, {ts_created},
    CASE WHEN i % 1000 < 880 THEN {ts_created} ELSE NULL END,
    CASE WHEN i % 1000 < 880 OR i % 1000 >= 940 THEN NULL
         WHEN i % 5 = 0 THEN 43101 WHEN i % 5 = 1 THEN 47003 WHEN i % 5 = 2 THEN -1
         WHEN i % 5 = 3 THEN 40003 ELSE NULL END,
    CASE WHEN i % 1000 >= 880 AND i % 1000 < 940 THEN 'bench failure' ELSE NULL END,
    CASE WHEN i % 1000 < 880 THEN {msgid} ELSE NULL END,
    CASE WHEN i % 1000 < 800 THEN 'delivered' WHEN i % 1000 < 810 THEN 'failed'
         ELSE NULL END,
    CASE WHEN i % 1000 < 810 THEN {ts_created} ELSE NULL END
FROM {source}
"""


def fill(db: Any, n: int) -> float:
    """n rows, ids 1..n, the newest created now and the oldest 7 days ago."""
    d = dialect_of(db)
    t0 = time.perf_counter()
    span = 7 * DAY
    start = time.time() - span
    if d == "sqlite":
        def at(expr: str) -> str:
            return f"strftime('%Y-%m-%d %H:%M:%f', {start:.3f} + {expr}, 'unixepoch')"
        parts = {"openid": "'o' || (i % 50000)", "dedup": "'k' || i",
                 "msgid": "CAST(3000000000000000000 + i AS TEXT)",
                 "source": f"(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s "
                           f"WHERE i < {n}) SELECT i FROM s)"}
    elif d == "postgres":
        def at(expr: str) -> str:
            return f"to_timestamp({start:.3f} + ({expr}))"
        parts = {"openid": "'o' || (i % 50000)", "dedup": "'k' || i",
                 "msgid": "(3000000000000000000 + i)::text",
                 "source": f"generate_series(1, {n}) AS s(i)"}
    else:
        def at(expr: str) -> str:
            return f"FROM_UNIXTIME({start:.3f} + ({expr}))"
        parts = {"openid": "CONCAT('o', i % 50000)", "dedup": "CONCAT('k', i)",
                 "msgid": "CAST(3000000000000000000 + i AS CHAR)",
                 "source": f"(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s "
                           f"WHERE i < {n}) SELECT i FROM s) AS s"}
    created = f"i * {span / n:.6f}"
    sql = ROW_SQL.format(ts_created=at(created), ts_future=at(f"{created} + {2 * DAY}"),
                         **parts)
    if d == "mysql":  # the recursion cap: MySQL 8's name, then MariaDB's
        for name in ("cte_max_recursion_depth", "max_recursive_iterations"):
            try:
                db.execute_sql(f"SET SESSION {name} = {n + 10}")
            except Exception:  # noqa: BLE001 - the other server's variable
                pass
    if d != "sqlite":
        sql = sql.replace("%", "%%")  # the drivers format parameters with %
    with db.atomic():
        db.execute_sql(sql)
        if d == "postgres":  # ids were given: move the sequence past them
            db.execute_sql(f"SELECT setval('msg_list_id_seq', {n})")
        # a history for the newest 2,000 rows, grants for 1,000 users, one token row
        db.execute_sql(
            "INSERT INTO msg_event (msg_id, at, kind, channel, errcode, detail, daemon) "
            "SELECT id, created_at, 'claimed', 'subscribe', NULL, 'claimed', 'bench' "
            f"FROM msg_list WHERE id > {n - 2000}")
        db.execute_sql(
            "INSERT INTO msg_event (msg_id, at, kind, channel, errcode, detail, daemon) "
            "SELECT id, updated_at, 'sent', 'subscribe', errcode, status, 'bench' "
            f"FROM msg_list WHERE id > {n - 2000}")
        db.execute_sql(
            "INSERT INTO subscribe_grant (app, openid, template_id, balance, status, "
            "updated_at) SELECT 'default', openid, 'zT99mpoUCb28M02K7ohTO3h81IvBUlgt8JVRn6rkNSc',"
            " 1, 'accept', created_at FROM msg_list WHERE id > 0 AND id <= 1000")
        db.execute_sql("INSERT INTO access_token (app, token, expires_at) VALUES "
                       "('default', 'BENCH-TOKEN-NEVER-SHOWN', " + at(f"{span + 7000}") + ")")
    return time.perf_counter() - t0


def analyze(url: str) -> None:
    """What an autovacuum/ANALYZE would have done by now on a live server."""
    if url.startswith("postgres"):
        import psycopg2

        conn = psycopg2.connect(url.replace("+pool", ""))
        conn.autocommit = True
        conn.cursor().execute("VACUUM ANALYZE")
        conn.close()


def pages(n: int) -> list[tuple[str, str]]:
    mid = n // 2
    return [
        ("overview (cached)", "/"),
        ("messages, newest", "/messages"),
        ("messages, older page", f"/messages?before={mid}"),
        ("messages status=wait", "/messages?status=wait"),
        ("messages status=fail", "/messages?status=fail"),
        ("messages status=success", "/messages?status=success"),
        ("messages status=sending", "/messages?status=sending"),
        ("messages template=vip_pay_success", "/messages?template=vip_pay_success"),
        ("messages app=shop_b&status=fail", "/messages?app=shop_b&status=fail"),
        ("messages template=nonexistent", "/messages?template=nonexistent"),
        ("messages openid=o4242", "/messages?openid=o4242"),
        ("messages q=dedup_key", f"/messages?q=k{mid}"),
        ("messages q=msgid", f"/messages?q={3000000000000000000 + mid}"),
        ("one message (with history)", f"/messages/{n - 10}"),
        ("one message (old)", f"/messages/{mid}"),
        ("failures", "/failures"),
        ("templates", "/templates"),
        ("templates + preview", "/templates?preview=order_status"),
        ("grants openid=o500", "/grants?openid=o500"),
        ("daemons", "/daemons"),
    ]


def login(base: str) -> requests.Session:
    s = requests.Session()
    s.get(base + "/login", timeout=30)
    token = s.cookies.get("herald_login")
    r = s.post(base + "/login", data={"username": "bench", "password": PASSWORD,
                                      "csrf_token": token}, timeout=30, allow_redirects=False)
    if r.status_code != 303:
        raise RuntimeError(f"login failed: {r.status_code} {r.text[:200]}")
    return s


def timed(s: requests.Session, url: str) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    r = s.get(url, timeout=120)
    took = time.perf_counter() - t0
    if r.status_code != 200:
        raise RuntimeError(f"{url}: {r.status_code} {r.text[:300]}")
    if "BENCH-TOKEN-NEVER-SHOWN" in r.text:
        raise RuntimeError(f"{url} shows the access token")
    return took, r.status_code, len(r.content)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", choices=benchlib.DIALECTS, default="sqlite")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    with benchlib.workdir(args.keep) as work:
        url = (f"sqlite:///{work / 'herald.db'}" if args.db == "sqlite"
               else benchlib.server_url(args.db))
        db = fresh_db(url)
        with db.connection_context():
            fill_s = fill(db, args.rows)
        db.close()
        analyze(url)
        print(f"{args.db}: {args.rows:,} rows filled in {fill_s:.1f} s", flush=True)
        users = {"bench": {"password_hash": hash_password(PASSWORD), "role": "operator"}}
        cfg = write_config(work, database=url, web={"listen": None},
                           console={"listen": "127.0.0.1:0", "users": users})
        serve = ServeProcess(cfg, work / "serve.log", "serve").start()
        try:
            serve.wait_ready(120)
            base = serve.urls()["console"]
            s = login(base)
            results: list[dict[str, Any]] = []
            cold, _, _ = timed(s, base + "/")
            match = re.search(r"· ([0-9.]+ (?:ms|s)) to count", s.get(base + "/").text)
            results.append({"page": "overview (cold: first aggregate)", "path": "/",
                            "first_ms": round(cold * 1000, 1), "median_ms": None,
                            "aggregate": match.group(1) if match else None})
            for name, path in pages(args.rows):
                first, _, size = timed(s, base + path)
                runs = sorted(timed(s, base + path)[0] for _ in range(args.repeat))
                results.append({"page": name, "path": path, "first_ms": round(first * 1000, 1),
                                "median_ms": round(statistics.median(runs) * 1000, 1),
                                "bytes": size})
        finally:
            serve.stop()
            serve.close()
        width = max(len(r["page"]) for r in results)
        print(f"{'page':<{width}}  first ms  median ms")
        for r in results:
            med = "" if r["median_ms"] is None else f"{r['median_ms']:>9.1f}"
            extra = f"  (aggregate {r['aggregate']})" if r.get("aggregate") else ""
            print(f"{r['page']:<{width}}  {r['first_ms']:>8.1f}  {med}{extra}")
        if args.json:
            Path(args.json).write_text(json.dumps({
                "db": args.db, "rows": args.rows, "fill_s": round(fill_s, 1),
                "machine": benchlib.machine(), "pages": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
