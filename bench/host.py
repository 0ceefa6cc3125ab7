#!/usr/bin/env python3
"""Host benchmark: does `dispatch.processes: N` use more than one core of a host?

One sandbox (a child process, 50 ms a send by default), and for each database, in this
order, with the sandbox's records reset between phases:

  bare #1     one process, W threads posting N sends over one pooled requests.Session
              (bench/drain.py's bare pool): what one Python process of a team's own
              does here; `--bare urllib3` makes it use the cheaper call beneath
              requests that Herald's send threads make
  herald N=1  the real `scheduler.py run`, dispatch.workers W
  herald N=2  the real `scheduler.py run` with dispatch.processes 2, W/2 workers each:
              the same number of sends in flight, on two interpreters (two GILs)
  bare #2     the bare pool again, so drift shows

Each Herald phase starts the daemon on an empty queue, waits until it (every process)
is running, then commits N rows in one transaction; its rate is the rows over the time
from the first `sent_at` to the last (server-side order, the daemon's clock), so the
start-up and the first poll (dispatch every 1 s) do not count. The sandbox's counts say
whether any row went out twice, and whether two sends to one user ever overlapped.

    python bench/host.py                          # 10,000 rows, width 256, SQLite and PostgreSQL
    python bench/host.py --db sqlite --rows 20000 --json host.json
    python bench/host.py --processes 1 2 3

Target (issue 19): 2 processes drain at least 1.5 x the bare single-process pool, in the
same run. The machine's other load is printed with the results: on a shared 2-core
machine the numbers move a lot.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib as bl  # noqa: E402
from drain import bare_pool  # noqa: E402

from db.models import MsgList  # noqa: E402
from tests.support import config_data, wait_for  # noqa: E402

READY = {1: re.compile(r"herald running as \S+:"),
         0: re.compile(r"herald running: \d+ dispatch processes")}


def _daemon(workdir: Path, url: str, sb: bl.SandboxProcess, *, width: int, processes: int,
            batch: int) -> tuple[subprocess.Popen[bytes], Path]:
    data = config_data(folder=workdir, api_base=sb.url, appid=bl.APPID, secret=bl.SECRET,
                       database=url, http={"timeout": 10},
                       jobs={"dispatch": {"every": "1s"}},
                       dispatch={"workers": width // processes, "batch_size": batch,
                                 "processes": processes})
    cfg = workdir / f"host-{processes}.yaml"
    cfg.write_text(yaml.safe_dump(data))
    log = workdir / f"host-{processes}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERALD_", "WECHAT_"))}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(bl.ROOT / "scheduler.py"), "--config",
                                 str(cfg), "run"], cwd=bl.ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    return proc, log


def herald(sb: bl.SandboxProcess, dialect: str, workdir: Path, *, rows: int, width: int,
           processes: int, batch: int) -> dict[str, Any]:
    url, db = bl.fresh_database(dialect, workdir)
    proc, log = _daemon(workdir, url, sb, width=width, processes=processes, batch=batch)
    ready = READY[1 if processes == 1 else 0]
    try:
        if not wait_for(lambda: ready.search(log.read_text()) or proc.poll() is not None,
                        120, 0.1) or proc.poll() is not None:
            raise RuntimeError(f"herald did not start:\n{log.read_text()[-3000:]}")
        sb.reset()
        with db.connection_context():
            bl.fill(db, rows)
        t0, committed = time.perf_counter(), datetime.now(UTC)

        def done() -> bool:
            with db.connection_context():
                return bl.counts(db).get("success", 0) >= rows

        if not wait_for(done, 600, 0.2):
            raise RuntimeError(f"not drained: {bl.counts(db)}\n{log.read_text()[-3000:]}")
        wall = time.perf_counter() - t0
        peak = _peak_rss_mb(proc.pid)
        with db.connection_context():
            first, last = (MsgList.select(MsgList.sent_at).where(
                MsgList.sent_at.is_null(False)).order_by(o).scalar()
                for o in (MsgList.sent_at.asc(), MsgList.sent_at.desc()))
            by = bl.counts(db)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        db.close()
    span = (last - first).total_seconds()
    stats = sb.stats()
    return {"processes": processes, "workers_each": width // processes, "rows": rows,
            "rate": round(rows / span, 1), "wall_s": round(wall, 2),
            # from the commit: with the first poll's wait (up to jobs.dispatch.every)
            "rate_from_commit": round(rows / (last - committed).total_seconds(), 1),
            "statuses": by, "accepted": stats.get("accepted"),
            "duplicates": stats.get("duplicates"), "violations": stats.get("violations"),
            "peak_rss_mb": peak,
            "exit": proc.returncode}


def _peak_rss_mb(pid: int) -> dict[int, float]:
    """pid -> VmHWM (peak RSS, MB) of the daemon and each of its children."""
    out: dict[int, float] = {}
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    for p in [pid, *map(int, kids)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    out[p] = round(int(line.split()[1]) / 1024, 1)
        except OSError:
            pass
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--width", type=int, default=256, help="sends in flight, all told")
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--batch", type=int, default=500, help="dispatch.batch_size")
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--db", nargs="+", default=["sqlite", "postgres"],
                    choices=["sqlite", "postgres", "mysql"])
    ap.add_argument("--bare", choices=("requests", "urllib3"), default="requests",
                    help="the reference pool's HTTP call (bench/drain.py --bare): requests' "
                         "session.post, or the urllib3 call Herald's send threads make")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    results: dict[str, Any] = {"machine": bl.machine(), "args": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "runs": []}
    with bl.workdir() as work:
        sb = bl.SandboxProcess(args.latency, work)
        try:
            for dialect in args.db:
                if dialect != "sqlite" and (why := bl.server_reachable(dialect)):
                    print(f"{dialect}: skipped ({why})")
                    continue
                load0 = os.getloadavg()[0]
                bare1 = bare_pool(sb, args.rows, args.width, args.bare)
                runs = [herald(sb, dialect, work, rows=args.rows, width=args.width,
                               processes=n, batch=args.batch) for n in args.processes]
                bare2 = bare_pool(sb, args.rows, args.width, args.bare)
                bare = statistics.mean([bare1["rate"], bare2["rate"]])
                for r in runs:
                    r["vs_bare"] = round(r["rate"] / bare, 3)
                entry = {"db": dialect, "stack": args.bare,
                         "bare": [bare1["rate"], bare2["rate"]],
                         "bare_cores": [bare1["client_cores"], bare2["client_cores"]],
                         "herald": runs, "load_before": round(load0, 2),
                         "load_after": round(os.getloadavg()[0], 2)}
                results["runs"].append(entry)
                print(_line(entry), flush=True)
        finally:
            sb.stop()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


def _line(e: dict[str, Any]) -> str:
    parts = [f"{e['db']}: bare ({e['stack']}) {e['bare'][0]:.0f} / {e['bare'][1]:.0f} msg/s"]
    for r in e["herald"]:
        parts.append(f"herald {r['processes']}x{r['workers_each']} {r['rate']:.0f} msg/s "
                     f"= {r['vs_bare']:.2f} x bare (accepted {r['accepted']}, duplicates "
                     f"{r['duplicates']}, 43108 overlaps {r['violations']}, peak RSS MB "
                     f"{sorted(r['peak_rss_mb'].values())})")
    parts.append(f"load avg {e['load_before']} -> {e['load_after']}")
    return "; ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
