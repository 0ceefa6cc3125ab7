#!/usr/bin/env python3
"""Idle cost: CPU the real daemon (`python scheduler.py run`) burns with an empty queue.

Starts the sandbox, writes a config (SQLite in a temp folder, or --dialect postgres|mysql
on HERALD_BENCH_<D>_URL; api_base the sandbox, metrics off, dispatch every 60 s), runs
`scheduler.py --config X init-db`, then `scheduler.py --config X run` in a subprocess;
once it logs that it is running and a short settle time has passed, reads its
utime+stime from /proc/<pid>/stat (all threads) and its context switches, waits, reads
them again, and reports % of one core. Target < 1%.

    python bench/idle.py                 # 60 s
    python bench/idle.py --seconds 120 --json idle.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib as bl  # noqa: E402

from tests.support import DaemonProcess, write_config  # noqa: E402

TARGET_PCT = 1.0


def context_switches(pid: int) -> int:
    """Voluntary + involuntary switches over all threads: roughly, wake-ups."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        for line in text.splitlines():
            if "ctxt_switches:" in line:
                total += int(line.split(":")[1])
    return total


def status_field(pid: int, key: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return line.split(":", 1)[1].strip()
    return ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="idle time measured")
    p.add_argument("--settle", type=float, default=5.0,
                   help="seconds after start-up before measuring (first dispatch, imports)")
    p.add_argument("--every", default="60s", help="jobs.dispatch.every")
    p.add_argument("--dialect", default="sqlite", choices=bl.DIALECTS,
                   help="the queue's engine (servers: HERALD_BENCH_<D>_URL)")
    p.add_argument("--no-wake", action="store_true", help="dispatch.wake: false (poll only)")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    py = sys.executable
    res: dict[str, Any] = {"machine": bl.machine(), "seconds": args.seconds,
                           "dispatch_every": args.every, "dialect": args.dialect,
                           "wake": not args.no_wake}
    with bl.workdir() as wd, bl.SandboxProcess(0.0, wd) as sb:
        url, db = bl.fresh_database(args.dialect, wd)
        db.close()
        cfg = write_config(wd, api_base=sb.url, appid=bl.APPID, secret=bl.SECRET, database=url,
                           jobs={"dispatch": {"every": args.every}}, log={"level": "INFO"},
                           dispatch={"wake": not args.no_wake})
        subprocess.run([py, "scheduler.py", "--config", str(cfg), "init-db"], cwd=bl.ROOT,
                       check=True, timeout=60, stdout=subprocess.DEVNULL)
        daemon = DaemonProcess(cfg, wd / "daemon.log").start()
        try:
            daemon.wait_ready(60)
            assert daemon.proc is not None  # set by start()
            pid = daemon.proc.pid
            time.sleep(args.settle)
            cpu0, cs0, t0 = bl.proc_cpu(pid), context_switches(pid), time.monotonic()
            time.sleep(args.seconds)
            cpu1, cs1, t1 = bl.proc_cpu(pid), context_switches(pid), time.monotonic()
            res.update({
                "cpu_s": round(cpu1 - cpu0, 3),
                "wall_s": round(t1 - t0, 2),
                "pct_core": round((cpu1 - cpu0) / (t1 - t0) * 100, 3),
                "wakeups_per_s": round((cs1 - cs0) / (t1 - t0), 1),
                "threads": int(status_field(pid, "Threads") or 0),
                "rss_mb": round(int(status_field(pid, "VmRSS").split()[0]) / 1024, 1),
                "tick_s": 1 / bl.CLK_TCK,
            })
        finally:
            res["exit_code"] = daemon.stop(timeout=30)
            daemon.close()
        res["log_tail"] = daemon.tail(5).splitlines()
    wake = "off" if args.no_wake else "on"
    print(f"{args.dialect} (wake {wake}): idle daemon over {res['wall_s']} s: "
          f"{res['cpu_s']} CPU s = {res['pct_core']}% of "
          f"one core (target < {TARGET_PCT}%), {res['wakeups_per_s']} context switches/s, "
          f"{res['threads']} threads, RSS {res['rss_mb']} MB, exit {res['exit_code']}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
