#!/usr/bin/env python3
"""Memory: Herald's peak RSS while draining a backlog, and that it does not grow with N.

Each size runs `bench/drain.py --herald-only` in a fresh process (so one size's heap is
not the next one's starting point) with a short sandbox latency, and reads the drain's
peak RSS (VmRSS sampled every 50 ms plus the kernel's VmHWM, reset just before the
drain so the fill does not count). Target: < 120 MB, and flat from 20k to 100k rows.

    python bench/memory.py                          # 20,000 and 100,000 rows
    python bench/memory.py --rows 20000 --rows 100000 --latency 0.005 --json mem.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib as bl  # noqa: E402

DRAIN = Path(__file__).resolve().parent / "drain.py"
TARGET_MB = 120.0


def one(rows: int, latency: float, workers: int, batch: int, dialect: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="herald-mem-") as d:
        out = Path(d) / "drain.json"
        cmd = [sys.executable, str(DRAIN), "--herald-only", "--rows", str(rows),
               "--latency", str(latency), "--workers", str(workers), "--batch", str(batch),
               "--db", dialect, "--json", str(out)]
        # bounded: 100k rows drain in about two minutes on the 2-core machine
        subprocess.run(cmd, cwd=bl.ROOT, check=True, timeout=540,
                       stdout=subprocess.DEVNULL)
        h = json.loads(out.read_text())["herald"]
    return {k: h[k] for k in ("rows", "rate", "wall_s", "cpu_s_per_1k", "rss_before_mb",
                              "peak_rss_mb", "status", "dispatch_runs")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, action="append", help="default: 20000 and 100000")
    p.add_argument("--latency", type=float, default=0.005)
    p.add_argument("--workers", type=int, default=64)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--db", choices=bl.DIALECTS, default="sqlite")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    sizes = args.rows or [20_000, 100_000]
    results: dict[str, Any] = {"machine": bl.machine(), "latency": args.latency,
                               "workers": args.workers, "batch": args.batch, "runs": []}
    print(f"{'rows':>8} {'msgs/s':>7} {'RSS before MB':>14} {'peak RSS MB':>12}  status")
    for n in sizes:
        r = one(n, args.latency, args.workers, args.batch, args.db)
        results["runs"].append(r)
        print(f"{r['rows']:>8} {r['rate']:>7.0f} {r['rss_before_mb']:>14} "
              f"{r['peak_rss_mb']:>12}  {r['status']}", flush=True)
    peaks = [r["peak_rss_mb"] for r in results["runs"]]
    results["max_peak_mb"] = max(peaks)
    results["growth_mb"] = round(peaks[-1] - peaks[0], 1)
    print(f"largest peak {max(peaks)} MB (target < {TARGET_MB:.0f}); "
          f"{sizes[-1]:,} rows vs {sizes[0]:,}: {results['growth_mb']:+} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
