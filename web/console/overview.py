"""The overview's numbers, and the cache that keeps the page fast on a big table.

Counting a million rows by status x app x template reads the whole table whatever the
index (about a second on SQLite), so the aggregates are computed together into one
Snapshot and kept for SNAPSHOT_TTL seconds. When a snapshot goes stale, the request
that notices gets the stale one at once and one background thread computes the next
(stale-while-revalidate): no page waits for the aggregate except the very first.
Every number says when it was taken. A refresh waits at least SNAPSHOT_TTL and ten
times as long as the last one took, so the aggregate costs at most a tenth of a core.

What each number reads (db/ddl/*.sql):
- totals by status: the status index (an index-only count);
- the app x template grid: one pass over the table, capped at GRID_ROWS groups;
- sends per minute and receipts: the sent_at index (msg_list_sent, covering
  (sent_at, receipt)), over the last CHART_MINUTES only;
- oldest due waiting row and how many are due: the waiting rows' index;
- failures by errcode: failed rows through the status index.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from peewee import Database

from db import console as reads
from db import holds
from db.holds import Hold
from db.models import STATUSES
from db.spending import counts as spending_counts
from logs import redact
from web.console.values import Bad, count, num, ts, txt

log = logging.getLogger("herald.console")

SNAPSHOT_TTL = 10.0
GRID_ROWS = 200
CHART_MINUTES = 24 * 60
ERRCODES_SHOWN = 30


@dataclass
class GridRow:
    app: str | None
    template: str | None
    counts: dict[str, int]
    total: int


@dataclass
class Snapshot:
    at: datetime
    took: float  # seconds the aggregate took
    totals: dict[str, int]
    grid: list[GridRow]
    grid_capped: bool
    failures: list[tuple[int | Bad | None, int]]
    chart_start: datetime  # the first minute of per_minute
    per_minute: list[int]
    receipts: dict[str, int]  # delivered, failed, missing, awaiting (sent in the window)
    oldest_due: datetime | Bad | None
    due: int
    missing_after: float = 0.0
    holds: list[Hold] = field(default_factory=list)  # quota holds in force (db/holds.py)
    # rows superseded, and waiting for a send window, collapse window or cap (db/spending.py)
    spending: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.totals.values())

    @property
    def sent_in_window(self) -> int:
        return sum(self.per_minute)


def _floor_minute(dt: datetime) -> datetime:
    return dt.replace(second=0, microsecond=0)


def take(db: Database, now: datetime, *, missing_after: float) -> Snapshot:
    """Compute every overview number now (the cache decides when)."""
    started = time.monotonic()
    totals = dict.fromkeys(STATUSES, 0)
    for status, n in reads.status_totals(db):
        key = txt(status) or "?"
        totals[key] = totals.get(key, 0) + count(n)

    grid = []
    found = reads.grid(db, STATUSES, GRID_ROWS + 1)
    for app, template, *rest in found[:GRID_ROWS]:
        counts = {s: count(v) for s, v in zip(STATUSES, rest[:-1], strict=True)}
        grid.append(GridRow(txt(app), txt(template), counts, count(rest[-1])))
    grid.sort(key=lambda g: (g.app or "", g.template or ""))

    failures = [(num(code), count(n))
                for code, n in reads.failures_by_errcode(db, ERRCODES_SHOWN)]

    end = _floor_minute(now) + timedelta(minutes=1)
    start = end - timedelta(minutes=CHART_MINUTES)
    per_minute = [0] * CHART_MINUTES
    receipts = {"delivered": 0, "failed": 0, "missing": 0, "awaiting": 0}
    for stamp, receipt, n in reads.sent_per_minute(db, start):
        try:
            at = datetime.strptime(str(stamp), "%Y-%m-%d %H:%M").replace(tzinfo=start.tzinfo)
        except ValueError:
            continue  # a sent_at another program wrote in no time form
        index = int((at - start).total_seconds() // 60)
        if 0 <= index < CHART_MINUTES:
            per_minute[index] += count(n)
        kind = txt(receipt)
        if kind in ("delivered", "failed"):
            receipts[kind] += count(n)
    cutoff = now - timedelta(seconds=missing_after)
    no_receipt = reads.without_receipt(db, start)
    receipts["missing"] = count(reads.without_receipt(db, start, cutoff))
    receipts["awaiting"] = max(0, count(no_receipt) - receipts["missing"])

    oldest_due: datetime | Bad | None = None
    first = reads.oldest_due(db, now)
    if first:
        oldest_due = ts(first[0][0])
    due = reads.due(db, now)

    return Snapshot(at=now, took=time.monotonic() - started, totals=totals, grid=grid,
                    grid_capped=len(found) > GRID_ROWS, failures=failures,
                    chart_start=start, per_minute=per_minute, receipts=receipts,
                    oldest_due=oldest_due, due=count(due), missing_after=missing_after,
                    holds=holds.active(db, now), spending=spending_counts(db))


class SnapshotCache:
    """One Snapshot at a time, refreshed in the background once it is `ttl` old."""

    def __init__(self, compute: Callable[[], Snapshot], *, ttl: float = SNAPSHOT_TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.compute = compute
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._first = threading.Lock()  # the first computation, which everyone waits for
        self._value: Snapshot | None = None
        self._taken = 0.0
        self._refreshing = False
        self._generation = 0  # bumped by invalidate(): a refresh begun before is dropped

    def get(self) -> Snapshot:
        with self._lock:
            value, taken = self._value, self._taken
        if value is None:
            with self._first:
                current = self._value
                if current is None:
                    generation = self._generation
                    current = self.compute()
                    self._store(current, generation)
                return current
        # at least `ttl`, and ten times what the last count took: watching the overview
        # never costs more than a tenth of a core, however big the table
        if self.clock() - taken >= max(self.ttl, 10 * value.took):
            self._refresh_later()
        return value

    def invalidate(self) -> None:
        """An operator changed rows: the next request waits for fresh numbers."""
        with self._lock:
            self._value = None
            self._generation += 1

    def _store(self, value: Snapshot, generation: int) -> None:
        with self._lock:
            if generation == self._generation:
                self._value, self._taken = value, self.clock()

    def _refresh_later(self) -> None:
        with self._lock:
            if self._refreshing:
                return
            self._refreshing = True
        threading.Thread(target=self._refresh, name="console-overview", daemon=True).start()

    def _refresh(self) -> None:
        generation = self._generation
        try:
            self._store(self.compute(), generation)
        except Exception as exc:  # noqa: BLE001 - the stale numbers stay; the log says why
            log.warning("console: overview not refreshed: %s", redact(str(exc))[:300])
        finally:
            with self._lock:
                self._refreshing = False


__all__ = ["CHART_MINUTES", "GridRow", "Snapshot", "SnapshotCache", "take"]
