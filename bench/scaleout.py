#!/usr/bin/env python3
"""Scale-out benchmark on PostgreSQL: NOTIFY wake-up latency, and drain rate with 1-3 daemons.

Every daemon is a real `scheduler.py run` process with its own config file, and the
WeChat sandbox is a child process too, as in production (one queue, several hosts).

  notify     one daemon with jobs.dispatch.every 60s on an idle queue; rows inserted one
             at a time with psycopg2, 0.5-1 s apart. sent_at - created_at per row
             (server-side timestamps, both UTC) shows the LISTEN/NOTIFY wake-up: without
             it a row waits for the next poll, up to 60 s.
  drain      1, 2, 3 daemons (each dispatch.workers W) started on an empty queue, then a
             backlog of N rows committed in one transaction (one NOTIFY wakes them all);
             rows/s from the first to the last sent_at (server timestamps).

This machine has 2 cores: the sandbox process, the daemons, PostgreSQL and this script
share them, so adding daemons adds senders but not CPU. The table shows CPU seconds per
process and how busy the whole machine was, so a flat curve can be read for what it is.

    python bench/scaleout.py --json scaleout.json
    python bench/scaleout.py --workers 16 64 --rows 6000 --latency 0.05
    python bench/scaleout.py --skip-notify --daemons 1 3

The database is `herald_scaleout` next to HERALD_TEST_POSTGRES_URL (created when missing;
--db-url overrides): the benchmark drops and refills msg_list, which must not pull the
table out from under a test run, or another benchmark, on `test` or `herald_bench`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extras

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib as bl  # noqa: E402

from db.connection import init_schema, url_params  # noqa: E402
from db.models import TABLE_NAMES  # noqa: E402
from tests.bound import connect  # noqa: E402
from tests.support import DaemonProcess, wait_for, write_config  # noqa: E402

DB_NAME = "herald_scaleout"
WAKEUP_APP = "herald-wakeup"  # application_name of db/wakeup.py's LISTEN connection
NOTIFY_POLL = 60.0  # dispatch interval in the notify phase: the bound without NOTIFY
DRAIN_POLL = 1.0


# --------------------------------------------------------------------------- database


def bench_url(explicit: str | None) -> str:
    if explicit:
        return explicit
    base = (os.environ.get("HERALD_TEST_POSTGRES_URL")
            or bl.DEFAULT_SERVER_URLS["postgres"])
    # benchlib's helper creates a database next to the base URL's; only the name differs
    bl._ensure_server_database("postgres", base, DB_NAME)
    head, _, _ = base.rpartition("/")
    return f"{head}/{DB_NAME}"


def pg_connect(url: str) -> psycopg2.extensions.connection:
    """A plain driver connection, as an application inserting rows would have."""
    params = url_params(url)
    name = params.pop("database")
    conn = psycopg2.connect(dbname=name, application_name="herald-bench", **params)
    conn.autocommit = True
    return conn


def query(url: str, sql: str, args: tuple = ()) -> list[tuple]:
    conn = pg_connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


def fresh_schema(url: str) -> None:
    """Empty msg_list and access_token, made by Herald's own init_schema (with the trigger)."""
    conn = pg_connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {', '.join(TABLE_NAMES)}")
            cur.execute("DROP FUNCTION IF EXISTS herald_notify() CASCADE")
    finally:
        conn.close()
    db = connect(url)
    init_schema(db)
    db.close()


def success_count(url: str) -> int:
    return query(url, "SELECT count(*) FROM msg_list WHERE status = 'success'")[0][0]


def listeners(url: str) -> int:
    """LISTEN connections of running daemons on this database."""
    return query(url, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                      "AND datname = current_database()", (WAKEUP_APP,))[0][0]


# --------------------------------------------------------------------------- CPU of the machine


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs from /proc/stat: what every process used,
    PostgreSQL's backends and any neighbour included."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return float(total - idle), float(total)


# --------------------------------------------------------------------------- daemons


class Daemon(DaemonProcess):
    """The shared daemon child (tests/support.py), with its own config, CPU and the log
    lines that say something went wrong."""

    @classmethod
    def make(cls, workdir: Path, name: str, *, url: str, api_base: str, workers: int,
             every: float, batch: int) -> Daemon:
        config = write_config(workdir, name=f"{name}.yaml", api_base=api_base, appid=bl.APPID,
                              secret=bl.SECRET, database=url,
                              jobs={"dispatch": {"every": f"{every:g}s"}},
                              dispatch={"workers": workers, "batch_size": batch},
                              http={"timeout": "10s"})
        return cls(config, workdir / f"{name}.log", name)

    def cpu(self) -> float:
        assert self.proc is not None
        return bl.proc_cpu(self.proc.pid)

    def problems(self) -> list[str]:
        """ERROR/WARNING lines and tracebacks."""
        return [line for line in self.text().splitlines()
                if "ERROR" in line or "WARNING" in line or "Traceback" in line]


def start_daemons(n: int, workdir: Path, prefix: str, url: str, **kw: Any) -> list[Daemon]:
    daemons = [Daemon.make(workdir, f"{prefix}-d{i}", url=url, **kw) for i in range(n)]
    try:
        for d in daemons:
            d.start()
        for d in daemons:
            d.wait_ready()
        # LISTEN is set up by a thread after start-up: wait for it, or the first NOTIFY
        # could find a daemon not yet listening and the run would measure a poll instead
        if not wait_for(lambda: listeners(url) >= n, 20):
            raise RuntimeError(f"only {listeners(url)} of {n} daemons are LISTENing")
    except BaseException:
        for d in daemons:
            d.close()
        raise
    return daemons


def stop_daemons(daemons: list[Daemon]) -> list[int]:
    codes = [d.stop() for d in daemons]
    for d in daemons:
        d.close()
    return codes


# --------------------------------------------------------------------------- (a) NOTIFY


def notify_latency(url: str, sb: bl.SandboxProcess, workdir: Path, *, rows: int,
                   workers: int, seed: int) -> dict[str, Any]:
    fresh_schema(url)
    sb.reset()
    rng = random.Random(seed)
    daemons = start_daemons(1, workdir, "notify", url, api_base=sb.url, workers=workers,
                            every=NOTIFY_POLL, batch=100)
    started = time.monotonic()  # the first dispatch runs at start; the next one 60 s later
    try:
        time.sleep(1.0)  # let the start-up dispatch run (on an empty queue) finish
        conn = pg_connect(url)
        try:
            with conn.cursor() as cur:
                for i in range(rows):
                    cur.execute("INSERT INTO msg_list (template, openid, params) "
                                "VALUES (%s, %s, %s)", (bl.TEMPLATE, bl.openid(i), bl.PARAMS))
                    if i < rows - 1:
                        time.sleep(rng.uniform(0.5, 1.0))
        finally:
            conn.close()
        window = time.monotonic() - started
        # generous: if NOTIFY failed, the 60 s poll still sends them, and that shows
        done = wait_for(lambda: success_count(url) == rows, NOTIFY_POLL + 30, step=0.2)
        problems = daemons[0].problems()
    finally:
        codes = stop_daemons(daemons)
    lat = [float(x) for (x,) in query(
        url, "SELECT EXTRACT(EPOCH FROM sent_at - created_at) FROM msg_list "
             "WHERE status = 'success' ORDER BY id")]
    lat_sorted = sorted(lat)
    return {
        "rows": rows,
        "all_sent": done,
        "sent": len(lat),
        "dispatch_every_s": NOTIFY_POLL,
        "sandbox_latency_s": sb.latency,
        "median_s": round(statistics.median(lat), 3) if lat else None,
        "p90_s": round(bl.percentile(lat_sorted, 0.9), 3) if lat else None,
        "max_s": round(max(lat), 3) if lat else None,
        "min_s": round(min(lat), 3) if lat else None,
        "latencies_s": [round(x, 3) for x in lat],
        # True: every row went in before the daemon's next 60 s poll was due, so each
        # was sent by a NOTIFY wake-up and not by polling
        "inserted_before_next_poll": window < NOTIFY_POLL,
        "exit_codes": codes,
        "daemon_problems": problems[:10],
    }


# --------------------------------------------------------------------------- (b) drain


def fill(url: str, rows: int) -> float:
    """Insert the backlog in one transaction (server defaults for every timestamp);
    returns the wall time of the commit (time.time())."""
    conn = pg_connect(url)
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            psycopg2.extras.execute_values(
                cur, "INSERT INTO msg_list (template, openid, params) VALUES %s",
                [(bl.TEMPLATE, bl.openid(i), bl.PARAMS) for i in range(rows)], page_size=1000)
        conn.commit()
        return time.time()
    finally:
        conn.close()


def drain_rate(url: str, sb: bl.SandboxProcess, workdir: Path, *, daemons_n: int,
               workers: int, rows: int, batch: int, timeout: float) -> dict[str, Any]:
    fresh_schema(url)
    sb.reset()
    # another program busy on this 2-core machine skews the numbers: say so in the result
    load_before = os.getloadavg()[0]
    daemons = start_daemons(daemons_n, workdir, f"drain{daemons_n}x{workers}", url,
                            api_base=sb.url, workers=workers, every=DRAIN_POLL, batch=batch)
    try:
        time.sleep(1.0)  # the start-up dispatch runs find nothing; let them finish
        cpu0 = [d.cpu() for d in daemons]
        sb_cpu0 = sb.cpu()
        busy0, total0 = machine_busy()
        committed = fill(url, rows)
        done = wait_for(lambda: success_count(url) == rows, timeout, step=0.2)
        cpu1 = [d.cpu() for d in daemons]
        sb_cpu1 = sb.cpu()
        busy1, total1 = machine_busy()
        problems = [line for d in daemons for line in d.problems()]
        ids = {d.daemon_id: d.name for d in daemons}
    finally:
        codes = stop_daemons(daemons)
    first, last, n_sent, max_attempts = query(
        url, "SELECT EXTRACT(EPOCH FROM min(sent_at)), EXTRACT(EPOCH FROM max(sent_at)), "
             "count(*), max(attempts) FROM msg_list WHERE status = 'success'")[0]
    shares = dict(query(url, "SELECT claimed_by, count(*) FROM msg_list "
                             "WHERE status = 'success' GROUP BY claimed_by"))
    stats = sb.stats()
    span = float(last) - float(first) if n_sent > 1 else float("nan")
    return {
        "daemons": daemons_n,
        "workers": workers,
        "batch_size": batch,
        "rows": rows,
        "all_sent": done,
        "sent": n_sent,
        "first_to_last_sent_s": round(span, 3),
        "rows_per_s": round(n_sent / span, 1) if span > 0 else None,
        # what the sandbox latency alone would allow: every worker always busy
        "ceiling_rows_per_s": round(daemons_n * workers / sb.latency, 1),
        "commit_to_first_sent_s": round(float(first) - committed, 3) if n_sent else None,
        "commit_to_last_sent_s": round(float(last) - committed, 3) if n_sent else None,
        "shares": {ids.get(k, str(k)): v for k, v in shares.items()},
        "max_attempts": max_attempts,
        "sandbox_accepted": stats["accepted"],
        "sandbox_duplicates": stats["duplicates"],
        "sandbox_violations": stats["violations"],
        "daemon_cpu_s": [round(b - a, 2) for a, b in zip(cpu0, cpu1, strict=True)],
        "sandbox_cpu_s": round(sb_cpu1 - sb_cpu0, 2),
        # share of all cores busy during the drain (every process on the machine)
        "machine_busy_pct": round(100 * (busy1 - busy0) / max(1.0, total1 - total0), 1),
        "load_1min_before": round(load_before, 2),
        "exit_codes": codes,
        "daemon_problems": problems[:10],
    }


# --------------------------------------------------------------------------- report


def print_notify(res: dict[str, Any]) -> None:
    print(f"\n(a) insert-to-send latency with LISTEN/NOTIFY: 1 daemon, dispatch every "
          f"{res['dispatch_every_s']:.0f}s, sandbox {res['sandbox_latency_s'] * 1000:.0f} ms "
          f"per send, {res['rows']} single-row inserts 0.5-1 s apart")
    print(f"    sent {res['sent']}/{res['rows']}; sent_at - created_at: median "
          f"{res['median_s']} s, p90 {res['p90_s']} s, max {res['max_s']} s, min "
          f"{res['min_s']} s")
    print(f"    without NOTIFY a row waits for the next poll: up to "
          f"{res['dispatch_every_s']:.0f} s (all rows inserted before the next poll: "
          f"{res['inserted_before_next_poll']})")


def print_drain(results: list[dict[str, Any]], latency: float) -> None:
    print(f"\n(b) draining a backlog, sandbox {latency * 1000:.0f} ms per send "
          "(subprocess); rows/s from first to last sent_at")
    head = (f"{'daemons':>7} {'workers':>7} {'rows':>6} {'seconds':>8} {'rows/s':>8} "
            f"{'ceiling':>8} {'wake s':>7} {'shares':<20} {'dup':>4} {'daemon CPU s':<18} "
            f"{'sbx CPU':>7} {'busy%':>6} {'load':>5}")
    print(head)
    print("-" * len(head))
    for r in results:
        shares = "/".join(str(v) for v in sorted(r["shares"].values(), reverse=True))
        cpu = "/".join(f"{c:.1f}" for c in r["daemon_cpu_s"])
        print(f"{r['daemons']:>7} {r['workers']:>7} {r['rows']:>6} "
              f"{r['first_to_last_sent_s']:>8.2f} {r['rows_per_s'] or 0:>8.1f} "
              f"{r['ceiling_rows_per_s']:>8.0f} {r['commit_to_first_sent_s'] or 0:>7.2f} "
              f"{shares:<20} {r['sandbox_duplicates']:>4} {cpu:<18} "
              f"{r['sandbox_cpu_s']:>7.1f} {r['machine_busy_pct']:>6.1f} "
              f"{r['load_1min_before']:>5.2f}")
    print("ceiling = daemons x workers / latency. busy% = all CPUs of the machine during "
          "the drain (daemons, sandbox, PostgreSQL, anything else running); load = 1-min "
          "load average before the run.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db-url", help=f"PostgreSQL URL (default: {DB_NAME} next to "
                                    "HERALD_TEST_POSTGRES_URL)")
    p.add_argument("--rows", type=int, default=6000, help="backlog per drain run")
    p.add_argument("--latency", type=float, default=0.05, help="sandbox seconds per send")
    p.add_argument("--workers", type=int, nargs="+", default=[16, 64],
                   help="dispatch.workers per daemon, one drain series each")
    p.add_argument("--daemons", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--batch", type=int, default=100, help="dispatch.batch_size")
    p.add_argument("--notify-rows", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per drain run")
    p.add_argument("--skip-notify", action="store_true")
    p.add_argument("--skip-drain", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the work folder (daemon logs)")
    p.add_argument("--json", metavar="PATH", help="write the results here")
    args = p.parse_args(argv)

    url = bench_url(args.db_url)
    res: dict[str, Any] = {
        "machine": bl.machine(),
        "database": re.sub(r"//[^@/]*@", "//", url),  # no credentials in a report
        "sandbox_latency_s": args.latency,
        "notes": [
            f"{os.cpu_count()} cores shared by the sandbox subprocess, every daemon, "
            "PostgreSQL and this script: more daemons add senders, not CPU.",
            "sent_at and created_at are server-side UTC timestamps on one host.",
        ],
    }
    print(f"machine: {res['machine']['nproc']} cores, {res['machine']['cpu']}; "
          f"database {res['database']}")
    with bl.workdir(keep=args.keep) as wd, bl.SandboxProcess(args.latency, wd) as sb:
        if args.keep:
            print(f"work folder (daemon logs): {wd}")
        if not args.skip_notify:
            res["notify"] = notify_latency(url, sb, wd, rows=args.notify_rows, workers=16,
                                           seed=args.seed)
            print_notify(res["notify"])
        if not args.skip_drain:
            drains = []
            for workers in args.workers:
                for n in args.daemons:
                    r = drain_rate(url, sb, wd, daemons_n=n, workers=workers, rows=args.rows,
                                   batch=args.batch, timeout=args.timeout)
                    drains.append(r)
                    print(f"  {n} daemon(s) x {workers} workers: {r['rows_per_s']} rows/s "
                          f"({r['sent']}/{r['rows']} sent)", flush=True)
            res["drain"] = drains
            print_drain(drains, args.latency)
    problems = [*res.get("notify", {}).get("daemon_problems", []),
                *[line for r in res.get("drain", []) for line in r["daemon_problems"]]]
    if problems:
        print("\ndaemon log problems:\n  " + "\n  ".join(problems[:20]))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
        print(f"\nresults written to {args.json}")
    ok = (res.get("notify", {}).get("all_sent", True)
          and all(r["all_sent"] for r in res.get("drain", [])))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
