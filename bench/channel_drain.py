#!/usr/bin/env python3
"""Drain benchmark for the webhook and sms channels: N rows through jobs.dispatch against
the channel's sandbox (a child process, so its CPU does not share our GIL), and the same
channel's sender driven bare from W threads as the reference.

    .venv/bin/python bench/channel_drain.py --channel webhook      # 10,000 rows, 50 ms, 64 workers
    .venv/bin/python bench/channel_drain.py --channel sms --rows 5000
    .venv/bin/python bench/channel_drain.py --channel webhook --db postgres --json out.json

Phases, in order: bare #1 (the channel's sender.send from W threads, nothing else),
herald (rows inserted, then dispatch.run until none waits), bare #2 (drift). With 50 ms
latency and 64 workers the ceiling is 64 / 0.05 = 1,280 msg/s. Nothing calls a real
Tencent host or a real receiver.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib as bl  # noqa: E402

from channels.base import ChannelKind  # noqa: E402
from config import Config, config_from_dict  # noqa: E402
from db.models import MsgList  # noqa: E402
from jobs import dispatch  # noqa: E402
from runtime import Runtime  # noqa: E402
from sandbox.sms import (  # noqa: E402
    DEFAULT_SDK_APP_ID,
    DEFAULT_SECRET_ID,
    DEFAULT_SECRET_KEY,
    DEFAULT_SIGN_NAME,
)
from templates import render_row  # noqa: E402
from tests import support  # noqa: E402

SMS_TEMPLATE = "1234567"
HOOK_SECRET = "bench-webhook-secret-0123456789abcdef"
PARAMS = '["Coffee", "shipped"]'
MAX_RUNS = 1000
TEMPLATES = """
bench_sms:
  channel: sms
  template_id: {sms}
  params: [goods, status]
  data: ["{{{{ goods }}}}", "{{{{ status }}}}"]
bench_hook:
  channel: webhook
  url: {hook_url}/herald-hook
  secret_file: hook_secret
  params: [goods, status]
  data: {{title: "订单{{{{ status }}}}", goods: "{{{{ goods }}}}"}}
"""


def start_sandbox(channel: str, workdir: Path, latency: float) -> bl.SandboxChild:
    if channel == "webhook":
        return bl.SandboxChild(workdir, "webhook", "--latency", str(latency),
                               "--secret-file", str(workdir / "hook_secret"))
    return bl.SandboxChild(workdir, "sms", "--latency", str(latency),
                           "--template", f"{SMS_TEMPLATE}:2")


def config(workdir: Path, db_url: str, sms_url: str, workers: int, batch: int) -> Config:
    data = support.config_data(
        folder=workdir, api_base="http://127.0.0.1:9", database=db_url,
        templates=str(workdir / "templates.yaml"), http={"timeout": 10},
        dispatch={"workers": workers, "batch_size": batch},
        sms={"secret_id": DEFAULT_SECRET_ID, "secret_key": DEFAULT_SECRET_KEY,
             "sdk_app_id": DEFAULT_SDK_APP_ID, "sign_name": DEFAULT_SIGN_NAME,
             "region": "ap-guangzhou", "endpoint": sms_url})
    return config_from_dict(data, base_dir=workdir, env={})


def phone(i: int) -> str:
    return f"+86138{i % 100_000_000:08d}"  # one recipient per row, as bench/drain.py


def fill(db: Any, template: str, n: int, chunk: int = 500) -> float:
    t0 = time.perf_counter()
    with db.atomic():
        for lo in range(0, n, chunk):
            now = datetime.now(UTC)
            MsgList.insert_many(
                [{"template": template, "openid": bl.openid(i), "phone": phone(i),
                  "params": PARAMS, "send_at": now, "created_at": now, "updated_at": now}
                 for i in range(lo, min(lo + chunk, n))]).execute()
    return time.perf_counter() - t0


def bare(rt: Runtime, sb: bl.SandboxChild, channel: str, template: str, n: int, workers: int
         ) -> dict[str, Any]:
    """The channel's sender alone: W threads, one shared sender, N sends."""
    sender: ChannelKind = rt.senders[channel]
    tset = rt.templates.current
    builds = [render_row(tset, template=template, openid=bl.openid(i), phone=phone(i),
                         params=PARAMS, row_id=i + 1).built for i in range(n)]
    sb.control("POST", "reset")
    kinds: dict[str, int] = {}
    lock = threading.Lock()
    it = iter(builds)

    def worker() -> None:
        while True:
            with lock:
                b = next(it, None)
            if b is None:
                return
            kind = sender.send(b, None).kind.value
            with lock:
                kinds[kind] = kinds.get(kind, 0) + 1

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    cpu0, sb0, t0 = bl.self_cpu(), sb.cpu(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"rows": n, "kinds": kinds, "wall_s": round(wall, 3), "rate": round(n / wall, 1),
            "cpu_ms_per_msg": round((bl.self_cpu() - cpu0) / n * 1000, 3),
            "sandbox_cores": round((sb.cpu() - sb0) / wall, 2)}


def herald(rt: Runtime, db: Any, sb: bl.SandboxChild, template: str, n: int, workers: int
           ) -> dict[str, Any]:
    with db.connection_context():
        db.execute_sql("DELETE FROM msg_list")  # the bare phases left nothing; be sure
        fill_s = fill(db, template, n)
        sb.control("POST", "reset")
        pool = ThreadPoolExecutor(workers, thread_name_prefix="send")
        runs = 0
        cpu0, sb0, t0 = bl.self_cpu(), sb.cpu(), time.perf_counter()
        while runs < MAX_RUNS:
            dispatch.run(rt, pool=pool)
            runs += 1
            if not MsgList.select().where(MsgList.status.in_(("wait", "sending"))).count():
                break
        wall = time.perf_counter() - t0
        cpu, sb_cpu = bl.self_cpu() - cpu0, sb.cpu() - sb0
        lat = bl.latencies(db)
        status = bl.counts(db)
        pool.shutdown(wait=True)
    return {"rows": n, "fill_s": round(fill_s, 2), "dispatch_runs": runs, "status": status,
            "wall_s": round(wall, 3), "rate": round(n / wall, 1),
            "latency_p50_s": round(bl.percentile(lat, 0.5), 3),
            "latency_p99_s": round(bl.percentile(lat, 0.99), 3),
            "cpu_ms_per_msg": round(cpu / n * 1000, 3),
            "client_cores": round(cpu / wall, 2), "sandbox_cores": round(sb_cpu / wall, 2),
            "sandbox": sb.control("GET", "stats")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channel", choices=("webhook", "sms"), default="webhook")
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--latency", type=float, default=0.05, help="sandbox seconds per answer")
    p.add_argument("--workers", type=int, default=64)
    p.add_argument("--batch", type=int, default=100, help="dispatch.batch_size")
    p.add_argument("--db", choices=bl.DIALECTS, default="sqlite")
    p.add_argument("--herald-only", action="store_true", help="skip the bare sender runs")
    p.add_argument("--json", metavar="PATH", help="write the results here")
    args = p.parse_args(argv)
    template = "bench_hook" if args.channel == "webhook" else "bench_sms"
    res: dict[str, Any] = {"machine": bl.machine(), "args": vars(args),
                           "note": "sandbox in its own process on the same cores"}
    with bl.workdir() as wd:
        (wd / "hook_secret").write_text(HOOK_SECRET + "\n")
        sb = start_sandbox(args.channel, wd, args.latency)
        try:
            (wd / "templates.yaml").write_text(TEMPLATES.format(sms=SMS_TEMPLATE,
                                                                hook_url=sb.url))
            url, db = bl.fresh_database(args.db, wd)
            rt = Runtime.build(config(wd, url, sb.url, args.workers, args.batch), db)
            try:
                if not args.herald_only:
                    res["bare_1"] = bare(rt, sb, args.channel, template, args.rows,
                                         args.workers)
                res["herald"] = herald(rt, db, sb, template, args.rows, args.workers)
                if not args.herald_only:
                    res["bare_2"] = bare(rt, sb, args.channel, template, args.rows,
                                         args.workers)
            finally:
                rt.close()
                db.close()
        finally:
            sb.stop()
    ceiling = args.workers / args.latency if args.latency else float("inf")
    print(f"{args.channel}: {args.rows} rows, {args.latency * 1000:.0f} ms latency, "
          f"{args.workers} workers, batch {args.batch}, {args.db}; ceiling {ceiling:.0f} "
          f"msg/s; {os.cpu_count()} cores (shared: numbers are noisy)")
    for phase in ("bare_1", "herald", "bare_2"):
        r = res.get(phase)
        if r:
            extra = (f", p50 {r['latency_p50_s']} s, status {r['status']}, "
                     f"{r['dispatch_runs']} dispatch run(s)" if phase == "herald" else
                     f", {r['kinds']}")
            print(f"  {phase:<7} {r['rate']:8.1f} msg/s  cpu {r['cpu_ms_per_msg']} ms/msg, "
                  f"sandbox {r['sandbox_cores']} cores{extra}")
    if "bare_1" in res:
        mean = (res["bare_1"]["rate"] + res["bare_2"]["rate"]) / 2
        res["herald_over_bare"] = round(res["herald"]["rate"] / mean, 3)
        print(f"  herald / bare (mean of both): {res['herald_over_bare']}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
