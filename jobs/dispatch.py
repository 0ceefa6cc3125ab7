"""The dispatch job: claim due rows, render, send on a pool of threads, record.

The loop keeps the send pool full: it claims the next batch as soon as fewer rows
are ready or in flight than there are workers, so a backlog drains at the pool's
full speed instead of one batch per poll, and finishes only when a claim comes back
short and nothing is left in flight. Rows to one openid go out one after another
(WeChat answers 43108 to concurrent sends to one user). Results are written
within 50 ms, all that finished meanwhile in one short transaction (db/outcomes.py).

On stop (SIGTERM) it claims nothing more, hands back rows it claimed but did not
start, lets in-flight sends finish and records them.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from queue import Empty, SimpleQueue

import clock
from db.claim import EXPIRED, claim_batch, expire_overdue
from db.models import MsgList
from db.outcomes import Outcome, record
from policy import TOKEN_WAIT, decide
from runtime import Runtime
from templates import RenderError, Request, render_row
from tokens import TokenUnavailable
from channels.wechat_api import Answer
from channels.wechat_errors import Kind

log = logging.getLogger("herald.dispatch")

WAIT_STEP = 0.2  # seconds: longest wait for a send before the loop looks around again
# A finished result is written within FLUSH_AFTER seconds, with the others that finished
# meanwhile, in one transaction. Every write costs the loop the GIL (64 send threads
# want it too), so writing each result at once would halve the send rate; waiting
# longer would widen the window in which a crash leaves a sent row unrecorded (and so
# sent again after its lease).
FLUSH_AFTER = 0.05
FLUSH_SIZE = 500
BACKLOG_STEPS = 8  # while claims come back full, grow them up to 8 x batch_size


@dataclass
class Stats:
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    expired: int = 0

    def summary(self) -> str:
        return (f"claimed {self.claimed}, sent {self.sent}, failed {self.failed}, "
                f"back to wait {self.retried}, expired {self.expired}")


@dataclass
class Job:
    row: MsgList
    request: Request
    app: str
    token: str = ""
    token_retried: bool = False
    started: float = 0.0


@dataclass
class _State:
    ready: deque[Job] = field(default_factory=deque)
    parked: dict[str, deque[Job]] = field(default_factory=dict)  # openid -> jobs behind a send
    busy: set[str] = field(default_factory=set)  # openids with a send in flight
    in_flight: dict[Future, Job] = field(default_factory=dict)
    # sends report here as they finish: O(1) per completion, where
    # concurrent.futures.wait() would add and remove a waiter on every future each round
    done: SimpleQueue = field(default_factory=SimpleQueue)
    outcomes: list[tuple[Outcome, str]] = field(default_factory=list)  # (outcome, template)
    app_hold: dict[str, tuple[datetime, str]] = field(default_factory=dict)  # quota/token holds
    first_unflushed: float = 0.0  # monotonic time the oldest unwritten result arrived


def _send(rt: Runtime, job: Job) -> Answer:
    """Runs on a pool thread: wait for the app's rate limit, then one HTTP call."""
    rt.limiters.acquire(job.app)
    job.started = time.monotonic()
    return rt.client.send(job.token, job.request.body)


def run(
    rt: Runtime,
    *,
    now: Callable[[], datetime] = clock.now,
    pool: ThreadPoolExecutor | None = None,
    rng: random.Random | None = None,
) -> Stats:
    """One dispatch run: drain what is due, then return."""
    cfg = rt.config
    stats = Stats()
    st = _State()
    own_pool = pool is None
    pool = pool or ThreadPoolExecutor(cfg.dispatch.workers, thread_name_prefix="send")
    rt.heartbeat.busy(True)
    try:
        _drain(rt, st, stats, pool, now, rng)
    finally:
        rt.heartbeat.busy(False)
        if own_pool:
            pool.shutdown(wait=True)
    if stats.claimed or stats.expired:
        log.info("dispatch: %s", stats.summary())
    return stats


def _drain(rt: Runtime, st: _State, stats: Stats, pool: ThreadPoolExecutor,
           now: Callable[[], datetime], rng: random.Random | None) -> None:
    cfg = rt.config
    workers = cfg.dispatch.workers
    limit = claim_limit(cfg.dispatch.batch_size, cfg.dispatch.rate_limit, cfg.dispatch.lease)
    max_limit = limit if cfg.dispatch.rate_limit else limit * BACKLOG_STEPS
    more = True
    try:
        stats.expired = expire_overdue(rt.db, now=now())
        if stats.expired:
            log.info("%d waiting rows passed expire_at and ended fail (expired)", stats.expired)
        while True:
            rt.heartbeat.beat()  # the watchdog pings only while this loop moves
            stopping = rt.stopping.is_set()
            if stopping and (st.ready or st.parked):
                _release_unstarted(st)
            if more and not stopping and len(st.ready) + len(st.in_flight) < workers:
                rows = claim_batch(rt.db, daemon_id=rt.daemon_id, now=now(),
                                   lease=cfg.dispatch.lease, limit=limit)
                more = len(rows) == limit
                if more:
                    # a backlog: claim in bigger steps (fewer claims, each a database
                    # round and a GIL hand-off) up to BACKLOG_STEPS batches at a time
                    limit = min(limit * 2, max_limit)
                stats.claimed += len(rows)
                for row in rows:
                    _prepare(rt, st, row, now())
            _submit(rt, st, pool, workers, now())
            if not st.in_flight and not st.ready and not st.parked:
                if not more or stopping:
                    break
                continue
            if st.in_flight:
                step = WAIT_STEP
                if st.outcomes:  # wake in time to write them
                    step = max(0.0, st.first_unflushed + FLUSH_AFTER - time.monotonic())
                for fut in _completed(st, step):
                    _finished(rt, st, st.in_flight.pop(fut), fut, now(), rng)
            if st.outcomes and (len(st.outcomes) >= FLUSH_SIZE or not st.in_flight
                                or time.monotonic() - st.first_unflushed >= FLUSH_AFTER):
                _flush(rt, st, stats, now())
    finally:
        # whatever happened above, what was sent gets recorded
        for fut, job in list(st.in_flight.items()):
            try:
                _finished(rt, st, job, fut, now(), rng, allow_resend=False)
            except Exception:  # noqa: BLE001 - recording must go on for the others
                log.exception("row %s: recording failed", job.row.id)
        if st.ready or st.parked:
            _release_unstarted(st)
        _flush(rt, st, stats, now())


def claim_limit(batch_size: int, rate_limit: float | None, lease: float) -> int:
    """Rows to claim at once. Under a rate limit, claimed rows queue here at `rate` a
    second; claiming more than a quarter lease's worth would let leases run out on
    rows still queued, and stale_retry would hand them to another daemon: a duplicate."""
    if not rate_limit:
        return batch_size
    return max(1, min(batch_size, int(rate_limit * lease / 4)))


def _prepare(rt: Runtime, st: _State, row: MsgList, now: datetime) -> None:
    """Render a claimed row into a Job; a row that cannot be sent is decided here."""
    base = {"row_id": row.id, "claim_attempts": row.attempts}
    if row.expire_at is not None and row.expire_at <= now:
        # expire_overdue() ran at the start of the run; this row's time ran out since
        _add(st, Outcome(status="fail", error=EXPIRED, **base), row.template)
        return
    try:
        try:
            req = _render(rt, row)
        except RenderError as exc:
            # a template added a moment ago: the file may have changed since the last
            # look (every 2 s); look now rather than fail the row
            if not (exc.unknown_template and rt.templates.reload_if_changed()):
                raise
            req = _render(rt, row)
    except RenderError as exc:
        log.warning("row %s (template %r) fails: %s", row.id, row.template, exc.reason,
                    extra={"row_id": row.id, "template": row.template})
        _add(st, Outcome(status="fail", error=exc.reason, **base), row.template)
        return
    app = req.app or "default"
    if app not in rt.config.apps:
        configured = ", ".join(rt.config.apps)
        _add(st, Outcome(status="fail", error=f"unknown app {app!r} (configured: {configured})",
                         **base), row.template)
        return
    if req.truncated:
        log.info("row %s (template %s): truncated %s to WeChat's length limit", row.id,
                 req.template.name, ", ".join(req.truncated),
                 extra={"row_id": row.id, "template": req.template.name})
    st.ready.append(Job(row=row, request=req, app=app))


def _render(rt: Runtime, row: MsgList) -> Request:
    return render_row(rt.templates.current, template=row.template, openid=row.openid,
                      params=row.params, page=row.page, app=row.app, row_id=row.id)


def _hold(st: _State, job: Job, hold: tuple[datetime, str]) -> None:
    """Back to wait without sending, the attempt refunded (quota or token trouble)."""
    until, why = hold
    _add(st, Outcome(row_id=job.row.id, claim_attempts=job.row.attempts, status="wait",
                     send_at=until, error=why, refund_attempt=True), job.request.template.name)


def _add(st: _State, outcome: Outcome, template: str) -> None:
    if not st.outcomes:
        st.first_unflushed = time.monotonic()
    st.outcomes.append((outcome, template))


def _submit(rt: Runtime, st: _State, pool: ThreadPoolExecutor, workers: int,
            now: datetime) -> None:
    while st.ready and len(st.in_flight) < workers:
        job = st.ready.popleft()
        held = st.app_hold.get(job.app)
        if not (held and held[0] > now):
            try:
                # the token is taken at submit time (a cache lookup), so rows already
                # waiting pick up a refreshed token instead of failing with the old one
                job.token = rt.tokens.get(job.app, now)
            except TokenUnavailable as exc:
                held = st.app_hold[job.app] = (now + timedelta(seconds=TOKEN_WAIT),
                                               f"no access token: {exc.reason}")
        if held and held[0] > now:
            _hold(st, job, held)  # quota spent or no token: back to wait, attempt refunded
            _unpark(st, job.request.body["touser"])
            continue
        openid = job.request.body["touser"]
        if openid in st.busy:
            st.parked.setdefault(openid, deque()).append(job)
            continue
        st.busy.add(openid)
        fut = pool.submit(_send, rt, job)
        st.in_flight[fut] = job
        fut.add_done_callback(st.done.put)


def _completed(st: _State, timeout: float) -> list[Future]:
    """Sends that finished: wait up to `timeout` for the first, then take all there are."""
    try:
        out = [st.done.get(timeout=timeout)]
    except Empty:
        return []
    while True:
        try:
            out.append(st.done.get_nowait())
        except Empty:
            return out


def _finished(rt: Runtime, st: _State, job: Job, fut: Future, now: datetime,
              rng: random.Random | None, allow_resend: bool = True) -> None:
    openid = job.request.body["touser"]
    try:
        answer: Answer = fut.result()
    except Exception as exc:  # noqa: BLE001 - a bug in one send must not stop the batch
        log.exception("row %s: send raised", job.row.id)
        answer = Answer(Kind.TRANSIENT, None, f"internal error while sending: {exc!r}"[:200])
    if job.started:
        rt.metrics.send_duration(time.monotonic() - job.started)
    if answer.kind is Kind.TOKEN and not job.token_retried and allow_resend:
        # our token went stale: expire it (only if still the stored one), fetch, resend once
        rt.tokens.expire(job.app, job.token, now)
        job.token_retried = True
        log.info("row %s: %s; resending once with a fresh token", job.row.id, answer.reason)
        st.busy.discard(openid)
        st.ready.appendleft(job)
        return
    outcome = decide(row_id=job.row.id, attempts=job.row.attempts, answer=answer, now=now,
                     retry=rt.config.retry, rng=rng)
    if answer.kind in (Kind.QUOTA_DAY, Kind.QUOTA_MINUTE):
        # the app's quota is spent: hold its other rows instead of burning requests
        st.app_hold[job.app] = (outcome.send_at, outcome.error or answer.reason)
    _add(st, outcome, job.request.template.name)
    if outcome.status == "fail":
        log.warning("row %s (template %s) failed: %s", job.row.id, job.request.template.name,
                    outcome.error, extra={"row_id": job.row.id, "errcode": answer.errcode,
                                          "template": job.request.template.name})
    st.busy.discard(openid)
    _unpark(st, openid)


def _unpark(st: _State, openid: str) -> None:
    """The next row for this openid may go now."""
    if openid in st.busy:
        return
    queue = st.parked.get(openid)
    if queue:
        st.ready.appendleft(queue.popleft())
        if not queue:
            del st.parked[openid]


def _release_unstarted(st: _State) -> None:
    """Rows claimed but never sent go back to wait as they were (stop or error)."""
    jobs = list(st.ready) + [j for q in st.parked.values() for j in q]
    st.ready.clear()
    st.parked.clear()
    for job in jobs:
        _add(st, Outcome(row_id=job.row.id, claim_attempts=job.row.attempts, status="wait",
                         send_at=job.row.send_at, error=job.row.error, errcode=job.row.errcode,
                         refund_attempt=True), job.request.template.name)
    if jobs:
        log.info("handing back %d claimed rows not yet sent", len(jobs))


def _flush(rt: Runtime, st: _State, stats: Stats, now: datetime) -> None:
    if not st.outcomes:
        return
    batch = st.outcomes
    outcomes = [o for o, _ in batch]
    # a busy or briefly unreachable database must not lose results: try a few times
    for attempt in range(5):
        try:
            written = record(rt.db, outcomes, daemon_id=rt.daemon_id, now=now)
            break
        except Exception as exc:  # noqa: BLE001
            if attempt == 4:
                raise
            log.warning("writing %d results failed (%s); retrying", len(outcomes), exc)
            time.sleep(0.5 * (attempt + 1))
    st.outcomes = []
    for o, template in batch:
        if o.status == "success":
            stats.sent += 1
        elif o.status == "fail":
            stats.failed += 1
        else:
            stats.retried += 1
        rt.metrics.finished(template, o.status, o.errcode)
    if len(outcomes) != written:
        log.warning("%d results not written: those rows are no longer ours (lease ran out and "
                    "another daemon took them)", len(outcomes) - written)
