#!/usr/bin/env python3
"""Latency: how soon the real daemon sends a row inserted by another program, and a row
scheduled ahead once it falls due, with `jobs.dispatch.every: 60s` (the poll alone
would give a median of about 30 s).

For each engine: a fresh database, the sandbox (no added latency), `scheduler.py run`
in a subprocess; once it is up, ANOTHER process (this script with --insert) inserts rows
one at a time, each in its own transaction, at a steady rate:

- `insert` rows, due at once: insert -> sent is sent_at - created_at;
- `due` rows, each with send_at a few seconds after its insert: due -> sent is
  sent_at - send_at.

The inserter writes created_at and send_at itself (microseconds: SQLite's
CURRENT_TIMESTAMP has whole seconds). sent_at is written by the daemon within 50 ms of
WeChat's answer. Target: median < 0.5 s, p99 < 1 s on every engine.

    python bench/latency.py                        # sqlite, postgres, mysql
    python bench/latency.py --dialects sqlite --rows 100 --rate 5 --json lat.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib as bl  # noqa: E402

from db.dialects import dialect  # noqa: E402
from db.models import MsgList  # noqa: E402
from tests.bound import connect  # noqa: E402
from tests.support import DaemonProcess, wait_for, write_config  # noqa: E402

TARGET_P50, TARGET_P99 = 0.5, 1.0


def insert_rows(url: str, rows: int, rate: float, ahead: float) -> None:
    """The other program: `rows` rows due now, then `rows` rows due `ahead` s after their
    insert, one per transaction, `rate` a second."""
    db = connect(url)
    d = dialect(db)
    p = d.param
    sql = (f"INSERT INTO msg_list (template, openid, params, send_at, created_at, updated_at) "
           f"VALUES ({p}, {p}, {p}, {p}, {p}, {p})")
    step = 1.0 / rate
    next_at = time.monotonic()
    with db.connection_context():
        for kind, delay in (("Ins", 0.0), ("Due", ahead)):
            for i in range(rows):
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at += step
                now = datetime.now(UTC)
                due = now + timedelta(seconds=delay)
                with db.atomic():
                    db.execute_sql(sql, (bl.TEMPLATE, f"o{kind}{i:08d}", bl.PARAMS, d.ts(due),
                                         d.ts(now), d.ts(now)))
    db.close()


def summary(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    return {"n": len(s), "p50": round(bl.percentile(s, 0.5), 3),
            "p99": round(bl.percentile(s, 0.99), 3), "max": round(s[-1], 3) if s else 0.0}


def run_dialect(name: str, args: argparse.Namespace) -> dict[str, Any]:
    with bl.workdir() as wd, bl.SandboxProcess(0.0, wd) as sb:
        url, db = bl.fresh_database(name, wd)
        db.close()
        cfg = write_config(wd, api_base=sb.url, appid=bl.APPID, secret=bl.SECRET,
                           database=url, jobs={"dispatch": {"every": args.every}},
                           dispatch={"wake": not args.no_wake}, log={"level": "INFO"})
        daemon = DaemonProcess(cfg, wd / "daemon.log").start()
        res: dict[str, Any] = {"dialect": name}
        try:
            daemon.wait_ready(60)
            assert daemon.proc is not None
            time.sleep(args.settle)  # the first dispatch run at start is over
            cpu0 = bl.proc_cpu(daemon.proc.pid)
            t0 = time.monotonic()
            inserter = subprocess.run(
                [sys.executable, __file__, "--insert", url, "--rows", str(args.rows),
                 "--rate", str(args.rate), "--ahead", str(args.ahead)],
                cwd=bl.ROOT, timeout=3600, check=True)
            res["inserter_exit"] = inserter.returncode
            total = 2 * args.rows
            db = connect(url)
            with db.connection_context():
                done = wait_for(lambda: MsgList.select().where(
                    MsgList.status == "success").count() >= total, timeout=args.timeout,
                    step=0.2)
                rows = list(MsgList.select(MsgList.openid, MsgList.created_at,
                                           MsgList.send_at, MsgList.sent_at).tuples())
                res["counts"] = bl.counts(db)
            db.close()
            res["daemon_cpu_pct"] = round((bl.proc_cpu(daemon.proc.pid) - cpu0)
                                          / (time.monotonic() - t0) * 100, 2)
            res["all_sent"] = done
            ins = [(s - c).total_seconds() for o, c, _d, s in rows if o.startswith("oIns") and s]
            due = [(s - d).total_seconds() for o, _c, d, s in rows if o.startswith("oDue") and s]
            res["insert_to_sent"] = summary(ins)
            res["due_to_sent"] = summary(due)
            res["sandbox_accepted"] = sb.stats().get("accepted")
        finally:
            res["exit_code"] = daemon.stop(timeout=30)
            daemon.close()
        return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dialects", default=",".join(bl.DIALECTS))
    p.add_argument("--rows", type=int, default=60, help="rows of each kind")
    p.add_argument("--rate", type=float, default=4.0, help="inserts per second")
    p.add_argument("--ahead", type=float, default=3.0, help="seconds a due row is scheduled ahead")
    p.add_argument("--every", default="60s", help="jobs.dispatch.every")
    p.add_argument("--settle", type=float, default=3.0)
    p.add_argument("--timeout", type=float, default=180.0, help="wait for the last send")
    p.add_argument("--no-wake", action="store_true", help="dispatch.wake: false (the poll alone)")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--insert", metavar="URL", help=argparse.SUPPRESS)  # the inserter child
    args = p.parse_args(argv)
    if args.insert:
        insert_rows(args.insert, args.rows, args.rate, args.ahead)
        return 0
    out: dict[str, Any] = {"machine": bl.machine(), "every": args.every, "rows": args.rows,
                           "rate": args.rate, "ahead": args.ahead, "results": []}
    for name in args.dialects.split(","):
        if name != "sqlite" and (why := bl.server_reachable(name)):
            print(f"{name}: skipped ({why})")
            continue
        res = run_dialect(name, args)
        out["results"].append(res)
        i, d = res["insert_to_sent"], res["due_to_sent"]
        ok = all(x["p50"] < TARGET_P50 and x["p99"] < TARGET_P99 for x in (i, d))
        print(f"{name:8} insert->sent p50 {i['p50']:.3f} s p99 {i['p99']:.3f} s max "
              f"{i['max']:.3f} (n={i['n']}); due->sent p50 {d['p50']:.3f} s p99 "
              f"{d['p99']:.3f} s max {d['max']:.3f} (n={d['n']}); daemon CPU "
              f"{res['daemon_cpu_pct']}%; all sent {res['all_sent']}; "
              f"{'OK' if ok else 'MISSED'} (target p50 < {TARGET_P50}, p99 < {TARGET_P99})")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
