#!/usr/bin/env python3
"""Dispatch cost: what Herald itself does per message, with the HTTP call taken out.

N rows on SQLite (or --db), drained by jobs.dispatch.run with the channel's sender
replaced by a stub that answers success at once, and a pool that runs each send in
the calling thread. What is left is all Herald's own work per message: claim, render,
the send thread's checks, answers, result writes (history, grants, leases included),
on one thread, so that an instruction counter sees all of it:

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python bench/dispatch_cost.py --rows 2500

Run it at two sizes and divide the difference in instructions by the difference in
rows: the per-message cost, free of start-up; `--fill-only` the same way gives the
part of that which is the test's own insert of the rows. Without valgrind it prints the CPU
seconds of the drain per message (noisy on a shared machine; the instruction count
is not). `--profile PATH` writes a cProfile of the drain, for where the time goes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import Future
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib as bl  # noqa: E402

from channels.base import Answer, Kind  # noqa: E402
from jobs import dispatch, token_refresh  # noqa: E402
from runtime import Runtime  # noqa: E402


class InlinePool:
    """A pool that runs each send at once in the caller's thread (no GIL hand-over:
    the instruction count is Herald's work, not the scheduler's)."""

    def submit(self, fn: Any, *args: Any) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the loop, as a pool does
            fut.set_exception(exc)
        return fut

    def shutdown(self, wait: bool = True) -> None:
        pass


class StubSender:
    """Answers every send with success and a msgid, as WeChat does."""

    def __init__(self) -> None:
        self.n = 0

    def send(self, built: Any, token: str | None) -> Answer:
        self.n += 1
        return Answer(Kind.SUCCESS, 0, "ok", msgid=str(2_000_000_000_000_000_000 + self.n))

    def close(self) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--workers", type=int, default=64)
    p.add_argument("--db", choices=bl.DIALECTS, default="sqlite")
    p.add_argument("--profile", metavar="PATH")
    p.add_argument("--fill-only", action="store_true",
                   help="insert the rows and stop: the count to subtract (the rows' insert)")
    args = p.parse_args(argv)
    # what the loop does by the clock, not per message (a progress line every 10 s, the
    # shared holds read every 2 s), happens more often the slower the run: under an
    # instruction counter, many times more. Once per run here, so the count is per message.
    dispatch.PROGRESS_EVERY = float("inf")
    dispatch.HOLDS_EVERY = float("inf")
    with bl.workdir() as wd, bl.SandboxProcess(0.0, wd) as sb:
        url, db = bl.fresh_database(args.db, wd)
        cfg = bl.make_config(url, sb.url, wd, workers=args.workers, batch_size=args.batch)
        rt = Runtime.build(cfg, db)
        with db.connection_context():
            token_refresh.run(rt)
        sender = StubSender()
        rt.senders["subscribe"] = sender  # type: ignore[assignment]
        bl.fill(db, args.rows)
        if args.fill_only:
            rt.close()
            db.close()
            print(f"{args.rows} rows: filled only")
            return 0
        with db.connection_context():
            t0 = time.process_time()
            if args.profile:
                import cProfile
                prof = cProfile.Profile()
                stats = prof.runcall(dispatch.run, rt, pool=InlinePool())  # type: ignore[arg-type]
                prof.dump_stats(args.profile)
            else:
                stats = dispatch.run(rt, pool=InlinePool())  # type: ignore[arg-type]
            cpu = time.process_time() - t0
            counts = bl.counts(db)
        rt.close()
        db.close()
    print(f"{args.rows} rows: {stats.summary()}; status {counts}; sends {sender.n}; "
          f"{cpu / max(args.rows, 1) * 1e6:.0f} us CPU per message")
    return 0 if counts.get("success") == args.rows else 1


if __name__ == "__main__":
    sys.exit(main())
