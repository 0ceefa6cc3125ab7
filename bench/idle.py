#!/usr/bin/env python3
"""Idle cost: CPU the real daemon (`python scheduler.py run`) burns with an empty queue.

Starts the sandbox, writes a config (SQLite in a temp folder, api_base the sandbox,
metrics off, dispatch every 60 s), runs `scheduler.py --config X init-db`, then
`scheduler.py --config X run` in a subprocess; once it logs that it is running and a
short settle time has passed, reads its utime+stime from /proc/<pid>/stat (all threads)
and its context switches, waits, reads them again, and reports % of one core. Target < 1%.

    python bench/idle.py                 # 60 s
    python bench/idle.py --seconds 120 --json idle.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib as bl  # noqa: E402

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


def write_config(workdir: Path, api_base: str, every: str) -> Path:
    cfg = workdir / "config.yaml"
    cfg.write_text(
        f"database: sqlite:///{workdir / 'herald.db'}\n"
        f"api_base: {api_base}\n"
        f"templates: {bl.ROOT / 'templates.yaml'}\n"
        "apps:\n"
        "  default:\n"
        f"    appid: {bl.APPID}\n"
        f"    secret: {bl.SECRET}\n"
        "jobs:\n"
        f"  dispatch: {{every: {every}}}\n"
        "metrics:\n"
        "  listen: null\n"
        "log:\n"
        "  level: INFO\n",
        encoding="utf-8",
    )
    return cfg


def wait_for(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode}: "
                               f"{path.read_text(errors='replace')[-800:]}")
        if text in path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise RuntimeError(f"daemon did not log {text!r} within {timeout}s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="idle time measured")
    p.add_argument("--settle", type=float, default=5.0,
                   help="seconds after start-up before measuring (first dispatch, imports)")
    p.add_argument("--every", default="60s", help="jobs.dispatch.every")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    py = sys.executable
    res: dict[str, Any] = {"machine": bl.machine(), "seconds": args.seconds,
                           "dispatch_every": args.every}
    with bl.workdir() as wd, bl.SandboxProcess(0.0, wd) as sb:
        cfg = write_config(wd, sb.url, args.every)
        subprocess.run([py, "scheduler.py", "--config", str(cfg), "init-db"], cwd=bl.ROOT,
                       check=True, timeout=60, stdout=subprocess.DEVNULL)
        log = wd / "daemon.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([py, "scheduler.py", "--config", str(cfg), "run"],
                                    cwd=bl.ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(log, "herald running", proc, 60)
            time.sleep(args.settle)
            cpu0, cs0, t0 = bl.proc_cpu(proc.pid), context_switches(proc.pid), time.monotonic()
            time.sleep(args.seconds)
            cpu1, cs1, t1 = bl.proc_cpu(proc.pid), context_switches(proc.pid), time.monotonic()
            res.update({
                "cpu_s": round(cpu1 - cpu0, 3),
                "wall_s": round(t1 - t0, 2),
                "pct_core": round((cpu1 - cpu0) / (t1 - t0) * 100, 3),
                "wakeups_per_s": round((cs1 - cs0) / (t1 - t0), 1),
                "threads": int(status_field(proc.pid, "Threads") or 0),
                "rss_mb": round(int(status_field(proc.pid, "VmRSS").split()[0]) / 1024, 1),
                "tick_s": 1 / bl.CLK_TCK,
            })
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                res["exit_code"] = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                res["exit_code"] = "killed after 30 s"
        res["log_tail"] = log.read_text(errors="replace").splitlines()[-5:]
    print(f"idle daemon over {res['wall_s']} s: {res['cpu_s']} CPU s = {res['pct_core']}% of "
          f"one core (target < {TARGET_PCT}%), {res['wakeups_per_s']} context switches/s, "
          f"{res['threads']} threads, RSS {res['rss_mb']} MB, exit {res['exit_code']}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
