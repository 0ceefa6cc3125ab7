#!/usr/bin/env python3
"""Collapse drain: a backlog where a share of the rows is superseded by a newer row with
the same collapse_key (docs/grants.md), drained by jobs/dispatch.py against the sandbox.

    python bench/collapse_drain.py                         # 2,000 rows, half collapse
    python bench/collapse_drain.py --collapse 0 --rows 2000  # the same drain, no keys
    python bench/collapse_drain.py --db postgres --json out.json

With --collapse F (0 to 0.5) the first 2*F*N rows come in pairs: both rows of a pair have
one openid and one collapse_key, so the older one is cancelled by the claim and only the
newer one is sent; the other rows have no key. Prints rows drained per second (a
superseded row is drained too), sends per second, the superseded count, and the CPU
seconds of this process per 1,000 rows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib as bl  # noqa: E402
from drain import _build  # noqa: E402

from db.models import MsgList  # noqa: E402
from jobs import dispatch  # noqa: E402

MAX_RUNS = 1000


def fill(db: Any, n: int, collapse: float, chunk: int = 500) -> float:
    """N waiting rows, due now; the first 2*collapse*N in pairs sharing openid and key."""
    paired = int(2 * collapse * n) // 2 * 2
    t0 = time.perf_counter()
    with db.atomic():
        for lo in range(0, n, chunk):
            now = datetime.now(UTC)
            rows = []
            for i in range(lo, min(lo + chunk, n)):
                keyed = i < paired
                rows.append({"template": bl.TEMPLATE,
                             "openid": bl.openid(i // 2 * 2 if keyed else i),
                             "params": bl.PARAMS, "send_at": now, "created_at": now,
                             "updated_at": now,
                             "collapse_key": f"order:{i // 2}" if keyed else None})
            MsgList.insert_many(rows).execute()
    return time.perf_counter() - t0


def drain(sb: bl.SandboxProcess, args: argparse.Namespace, wd: Path) -> dict[str, Any]:
    rt, db = _build(sb, args.db, wd, args.workers, args.batch)
    fill_s = fill(db, args.rows, args.collapse)
    pool = ThreadPoolExecutor(args.workers, thread_name_prefix="send")
    sb.reset()
    runs = 0
    with db.connection_context():
        cpu0 = bl.self_cpu()
        t0 = time.perf_counter()
        while runs < MAX_RUNS:
            dispatch.run(rt, pool=pool)
            runs += 1
            if not MsgList.select().where(MsgList.status.in_(("wait", "sending"))).count():
                break
        wall = time.perf_counter() - t0
        cpu = bl.self_cpu() - cpu0
        by_status = bl.counts(db)
    pool.shutdown(wait=True)
    rt.close()
    db.close()
    n = args.rows
    sent = by_status.get("success", 0)
    return {"rows": n, "collapse": args.collapse, "db": args.db, "fill_s": round(fill_s, 2),
            "dispatch_runs": runs, "status": by_status, "wall_s": round(wall, 3),
            "rows_per_s": round(n / wall, 1), "sends_per_s": round(sent / wall, 1),
            "superseded": by_status.get("cancelled", 0),
            "cpu_s_per_1k_rows": round(cpu / n * 1000, 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--collapse", type=float, default=0.5,
                   help="share of rows superseded by a newer row (0 to 0.5)")
    p.add_argument("--latency", type=float, default=0.05, help="sandbox seconds per send")
    p.add_argument("--workers", type=int, default=64)
    p.add_argument("--batch", type=int, default=100, help="dispatch.batch_size")
    p.add_argument("--db", choices=bl.DIALECTS, default="sqlite")
    p.add_argument("--json", metavar="PATH", help="write the results here")
    args = p.parse_args(argv)
    if not 0 <= args.collapse <= 0.5:
        p.error("--collapse: a share from 0 to 0.5")
    with bl.workdir() as wd, bl.SandboxProcess(args.latency, wd) as sb:
        res = drain(sb, args, wd)
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
