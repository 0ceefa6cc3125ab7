"""`holds`: the quota holds every daemon honours, and `holds --lift` to end one early.

A hold is set when WeChat answers that an app's quota on a channel is spent (45009:
until the quota day resets, 45011: until the next minute); every daemon on the
database then holds that app's sends on that channel (db/holds.py). Lifting one (when
WeChat raised the quota, or the answer was wrong) records who did, and the waiting
rows the hold had deferred become due at once.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

import clock
from commands import human
from commands.common import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, actor, err, load, open_queue, out
from commands.render import templates_of
from db import holds
from db.holds import Hold


def as_json(h: Hold, now: datetime) -> dict[str, Any]:
    return {"app": h.app, "channel": h.channel, "until": human.iso(h.until),
            "active": h.active(now), "reason": h.reason, "set_by": h.set_by,
            "set_at": human.iso(h.set_at), "lifted_by": h.lifted_by,
            "lifted_at": human.iso(h.lifted_at)}


def line(h: Hold, now: datetime) -> str:
    """One hold for a terminal (status shows the same lines)."""
    text = (f"  app {h.app} on {h.channel}: held until {human.when(h.until, now)}, "
            f"set by {h.set_by or '?'}")
    if h.lifted_at is not None:
        text += f"; lifted by {h.lifted_by or '?'} {human.relative(h.lifted_at, now)}"
    elif h.until <= now:
        text += "; ended"
    return text + (f": {h.reason}" if h.reason else "")


def cmd_holds(args: argparse.Namespace) -> int:
    if args.channel and not args.lift:
        err("holds: --channel goes with --lift APP")
        return EXIT_USAGE
    cfg = load(args, credentials=False)
    db = open_queue(cfg, current=True)
    now = clock.now()
    if args.lift:
        # the rows a lift makes due: the app's rows on that channel (a template names
        # its channel in templates.yaml), or all of the app's when no channel is named
        names = None
        if args.channel:
            tset = templates_of(cfg)
            names = [n for t in tset.templates.values() if t.channel == args.channel
                     for n in (t.name, t.template_id) if n]
        with db.connection_context():
            done = holds.lift(db, args.lift, args.channel, who=actor(), now=now,
                              templates=names)
        where = f" on {args.channel}" if args.channel else ""
        if not done.holds:
            err(f"holds: app {args.lift} has no quota hold in force{where}")
            return EXIT_RUNTIME
        for h in done.holds:
            out(f"lifted the hold of app {h.app} on {h.channel} (it held until "
                f"{human.stamp(h.until)})")
        out(f"{done.released} waiting rows it had deferred are due now")
        return EXIT_OK
    with db.connection_context():
        found = holds.read(db)
    shown = found if args.all else [h for h in found if h.active(now)]
    if args.json:
        print(json.dumps([as_json(h, now) for h in shown], ensure_ascii=False, indent=2))
        return EXIT_OK
    if not shown:
        out("no quota hold in force" if not args.all else "no quota hold recorded")
        return EXIT_OK
    out("quota holds in force:" if not args.all else "quota holds:")
    for h in shown:
        out(line(h, now))
    return EXIT_OK


__all__ = ["as_json", "cmd_holds", "line"]
