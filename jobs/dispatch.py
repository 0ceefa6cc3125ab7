"""The dispatch job: claim due rows, render, send on a pool of threads, record.

The loop keeps the send pool full: it claims the next batch as soon as fewer rows
are ready or in flight than there are workers (plus the queue ahead, below), so a
backlog drains at the pool's full speed instead of one batch per poll, and finishes
only when a claim comes back short and nothing is left in flight. A quarter as many
sends again as there are workers wait queued in the pool, so a thread that finishes
a send starts the next one at once instead of waiting for this loop to come round
(it is busy claiming, rendering and writing for milliseconds at a time); a queued
send still checks, as it starts, that the row is ours, its lease long enough, its
app not held and the daemon not stopping. Sends to one recipient go out one after another
(WeChat answers 43108 to concurrent sends to one user). Results are written within
50 ms, all that finished meanwhile in one short transaction (db/outcomes.py).

Every row stands alone: a row that cannot be read, rendered or built ends `fail` with
its reason (the exception carries its id and template), and the others go on. A send
starts only while this daemon's lease on the row outlasts http.timeout with margin:
rows held in memory get their leases renewed in one statement, and a row whose lease
was lost (the database was away longer than the lease, and stale_retry handed it on)
is dropped, never sent. Under `on_stale: fail` each send first records that it
started, so that a crash fails only rows that may have reached WeChat.

A spent quota (45009 for the day, 45011 for the minute) holds the app's sends on
that channel for every daemon and every later run: it is stored in quota_hold
(db/holds.py) when the answer is recorded, and the table is read after a claim that
returned rows, at most every HOLDS_EVERY seconds (never per row); rows of a held app
go back to wait until the hold ends, their attempt refunded. `herald holds --lift`
ends one early.

On stop (SIGTERM) it claims nothing more, hands back rows it claimed but did not
start (attempt refunded), lets in-flight sends finish and records them. A send
waiting for its rate-limit turn stops waiting at once, and the stop is checked last,
right before the request: no send starts after the stop is asked.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from queue import Empty, SimpleQueue
from typing import TypeVar

import clock
from channels import app_problem
from channels.base import Answer, Kind
from db import holds as holds_db
from db.claim import EXPIRED, claim_batch, expire_overdue, mark_started, renew_leases
from db.decode import BadRow, Row
from db.dialects import dialect
from db.outcomes import Event, Outcome, record
from db.queue import due_count
from jobs import fallback, grant_hold
from jobs.grant_hold import NO_GRANT, NO_GRANT_CODE
from logs import redact
from policy import TOKEN_WAIT, decide, quota_wait
from runtime import Runtime
from templates import RenderError, Request, Template, render_row
from templates import spending_decide as spend
from tokens import TokenUnavailable

log = logging.getLogger("herald.dispatch")
T = TypeVar("T")

WAIT_STEP = 0.2  # seconds: longest wait for a send before the loop looks around again
# A finished result is written within FLUSH_AFTER seconds, with the others that finished
# meanwhile, in one transaction. Every write costs the loop the GIL (64 send threads
# want it too), so writing each result at once would halve the send rate; waiting
# longer would widen the window in which a crash leaves a sent row unrecorded (and so
# sent again after its lease).
FLUSH_AFTER = 0.05
FLUSH_SIZE = 500
BACKLOG_STEPS = 8  # while claims come back full, grow them up to 8 x batch_size
PROGRESS_EVERY = 10.0  # seconds between progress lines while a long drain lasts
LEASE_MARGIN = 2.0  # seconds a lease must outlast http.timeout for a send to start
RENEW_RETRY = 1.0  # seconds between renewals while the database refuses them
QUEUE_AHEAD = 0.25  # sends queued in the pool beyond its workers, as a share of them
# While sends wait queued in the pool (every worker busy), the loop lets answers gather
# this long after the first before it takes them: each turn of the loop costs the same
# whether it handles one answer or ten (and takes the GIL from the senders once), and
# the queued sends keep the workers going meanwhile (64 workers at 50 ms: 16 queued
# sends last 12 ms). With a worker free, the loop never waits: it has sends to hand over.
GATHER = 0.002
# While a run claims rows, the quota holds every daemon shares (quota_hold) are read
# at most this often: a hold another daemon stored, or a lift, is seen within seconds,
# and a run that claims nothing reads nothing.
HOLDS_EVERY = 2.0


@dataclass
class Stats:
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    expired: int = 0
    dropped: int = 0  # rows whose lease we lost before sending them

    def summary(self) -> str:
        text = (f"claimed {self.claimed}, sent {self.sent}, failed {self.failed}, "
                f"back to wait {self.retried}, expired {self.expired}")
        return text + (f", dropped {self.dropped} (lease lost)" if self.dropped else "")


@dataclass
class Job:
    row: Row
    request: Request
    app: str
    lease_until: datetime
    token: str | None = None
    token_retried: bool = False
    seq: int = 0  # the order it was handed to the pool in (stale tokens, below)
    started: float = 0.0
    lost: bool = False  # its lease went to another daemon while it was queued: not sent
    fut: Future | None = None  # the pool's future of its send, while in flight
    # the clock of the run that claimed it (run's `now`): the send thread reads it too,
    # so a run told it is another time sends, checks leases and holds at that time
    now: Callable[[], datetime] = clock.now


@dataclass(frozen=True, slots=True)
class Held:
    """Why an app's rows on one channel wait, and until when."""

    until: datetime
    why: str
    since: datetime  # when it was seen: a lift recorded at or after this ends it
    quota: bool = True  # a spent quota (shared in quota_hold); False: no access token


# (channel, app) -> its hold
Holds = dict[tuple[str, str], Held]


def _hold_app(holds: Holds, key: tuple[str, str], held: Held) -> None:
    """Hold the app, unless a longer quota hold is in force (a 45011 must not shorten a
    45009)."""
    current = holds.get(key)
    if current is None or not current.quota or current.until <= held.until:
        holds[key] = held


@dataclass
class _State:
    ready: deque[Job] = field(default_factory=deque)
    parked: dict[str, deque[Job]] = field(default_factory=dict)  # recipient -> jobs waiting
    busy: set[str] = field(default_factory=set)  # recipients with a send in flight
    in_flight: dict[Future, Job] = field(default_factory=dict)
    # sends report here as they finish (a _Report each, put by the send thread itself):
    # O(1) per completion, where concurrent.futures.wait() would add and remove a waiter
    # on every future each round, and no future's lock is taken on this thread
    done: SimpleQueue = field(default_factory=SimpleQueue)
    outcomes: list[tuple[Outcome, str]] = field(default_factory=list)  # (outcome, template)
    # (channel, app) -> until when and why its rows wait (quota spent, no token): an SMS
    # rate limit must not hold the app's WeChat rows, nor a subscribe quota its SMS
    app_hold: Holds = field(default_factory=dict)
    # quota holds this run saw and has not stored in quota_hold yet (db/holds.py)
    unpublished: Holds = field(default_factory=dict)
    holds_read: float = float("-inf")  # monotonic time quota_hold was last read
    quota_deferred: int = 0  # rows deferred by a quota hold, among the unwritten results
    renew_after: float = 0.0  # monotonic: no lease renewal before (the last one failed)
    renew_failing: bool = False
    # rows were deferred by a quota hold since quota_hold was last read: read it again
    # (if the hold was lifted meanwhile, they are put back due)
    recheck: bool = False
    # tokens a send found expired: sends queued with one go back for a fresh token
    # token -> the first `seq` that may send with it again: sends handed over before
    # (queued in the pool) skip it; after the loop took in the answer, tokens.get
    # handing out the same token again means it is fine (math.inf: none may yet)
    stale_tokens: dict[str, float] = field(default_factory=dict)
    submitted: int = 0  # sends handed to the pool so far (each job's seq)
    first_unflushed: float = 0.0  # monotonic time the oldest unwritten result arrived
    # the soonest lease of any row held (a lower bound: finished rows are not taken out,
    # which at worst renews a little early); None when nothing is held
    earliest_lease: datetime | None = None
    last_progress: float = 0.0
    now: Callable[[], datetime] = clock.now  # the run's clock (run's `now`)


class NotSent(Exception):
    """Raised on a send thread when the send must not start (lease lost or too short)."""


def _send(rt: Runtime, job: Job, holds: Holds, stale_tokens: dict[str, float]) -> Answer:
    """Runs on a pool thread: wait for the app's rate limit, then one call. The job may
    have waited in the pool's queue: what changed meanwhile is looked at first."""
    if job.lost:
        raise NotSent("no longer ours")
    if job.token is not None and job.seq < stale_tokens.get(job.token, -1):
        raise NotSent("token went stale")  # the loop takes the fresh one and sends it
    # the wait for the rate limit ends at once when the daemon is asked to stop
    slot = rt.limiters.acquire(job.app, rt.stopping)
    try:
        now = job.now()
        held = holds.get((job.request.template.channel, job.app))
        if held and held.until > now:
            raise NotSent("app held")  # quota spent meanwhile: the loop holds it in wait
        if (job.lease_until - now).total_seconds() < rt.config.http.timeout + LEASE_MARGIN:
            raise NotSent("lease too short to start the send")
        if rt.config.dispatch.on_stale == "fail":
            # at-most-once: say the send started before it does, so a crash fails this
            # row (it may have reached WeChat) and hands back the ones that never started
            rt.db.connect(reuse_if_open=True)  # pool threads keep their connection
            if not mark_started(rt.db, job.row.id, job.row.attempts,
                                daemon_id=rt.daemon_id, now=now):
                raise NotSent("no longer ours")
        # after every wait (rate limit, database) and right before the request: a stop
        # asked meanwhile starts no send (the row is handed back with the unsent ones)
        if rt.stopping.is_set():
            raise NotSent("stopping")
        sender = rt.senders[job.request.template.channel]
        job.started = time.monotonic()
        # the rate limit counts from here, when the request really goes (ratelimit.py)
        slot.start()
    except BaseException:
        slot.cancel()  # never sent: its place in the rate limit goes back
        raise
    answer = sender.send(job.request.built, job.token)
    at = job.now()
    quota = quota_wait(answer.kind, at, rt.config.retry)
    if quota is not None:
        # the sends queued behind this one must not spend requests on a quota that is
        # gone: they see this at once, before the loop records the answer
        _hold_app(holds, (job.request.template.channel, job.app),
                  Held(quota[0], f"{quota[1]}: {answer.reason}", at))
    elif answer.kind is Kind.TOKEN and job.token:
        stale_tokens[job.token] = math.inf  # likewise: queued sends do not try it again
    return answer


@dataclass(slots=True)
class _Report:
    """What a send thread hands the loop: the job and its answer or exception, in the
    shape of a finished future (result() returns or raises)."""

    job: Job
    answer: Answer | None = None
    error: BaseException | None = None

    def result(self) -> Answer:
        if self.error is not None:
            raise self.error
        assert self.answer is not None
        return self.answer


def _send_and_report(done: SimpleQueue, rt: Runtime, job: Job, holds: Holds,
                     stale_tokens: dict[str, float]) -> Answer:
    """Runs on a pool thread: the send, then its report straight onto the loop's queue
    (no done-callback on the future, whose lock the loop would take again to read it).
    The future gets the same result, for the loop's last look on its way out."""
    try:
        answer = _send(rt, job, holds, stale_tokens)
    except BaseException as exc:
        done.put(_Report(job, error=exc))
        raise
    done.put(_Report(job, answer))
    return answer


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
    st = _State(last_progress=time.monotonic(), now=now)
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
    slots = workers + max(1, int(workers * QUEUE_AHEAD))  # sending or queued to send
    limit = claim_limit(cfg.dispatch.batch_size, cfg.dispatch.rate_limit, cfg.dispatch.lease)
    max_limit = limit if cfg.dispatch.rate_limit else limit * BACKLOG_STEPS
    more = True
    started = time.monotonic()
    try:
        stats.expired = _retrying(rt, lambda: expire_overdue(rt.db, now=now()))
        if stats.expired:
            log.info("%d waiting rows passed expire_at and ended fail (expired)", stats.expired)
        while True:
            rt.heartbeat.beat()  # the watchdog pings only while this loop moves
            stopping = rt.stopping.is_set()
            if stopping and (st.ready or st.parked):
                _release_unstarted(st)
            _keep_leases(rt, st, stats, now())
            if more and not stopping and len(st.ready) + len(st.in_flight) < slots:
                rows = _retrying(rt, functools.partial(
                    _claim, rt, now(), cfg.dispatch.lease, limit))
                # rows the claim took, superseded ones included (db/claim.py)
                more = getattr(rows, "taken", len(rows)) == limit
                if more:
                    # a backlog: claim in bigger steps (fewer claims, each a database
                    # round and a GIL hand-off) up to BACKLOG_STEPS batches at a time
                    limit = min(limit * 2, max_limit)
                stats.claimed += len(rows)
                if rows and time.monotonic() - st.holds_read >= HOLDS_EVERY:
                    _read_holds(rt, st, now())  # before any of them is sent
                _prepare_all(rt, st, rows, now())
            elif st.recheck and time.monotonic() - st.holds_read >= HOLDS_EVERY:
                _read_holds(rt, st, now())
            submitted = _submit(rt, st, pool, slots, now())
            if not st.in_flight and not st.ready and not st.parked:
                if not more or stopping:
                    break
                continue
            if not st.in_flight and not submitted:
                time.sleep(WAIT_STEP)  # rows wait for a lease renewal the database refuses
            if st.in_flight:
                step = WAIT_STEP
                if st.outcomes:  # wake in time to write them
                    step = max(0.0, st.first_unflushed + FLUSH_AFTER - time.monotonic())
                # sends queued in the pool keep every worker busy meanwhile: gather a
                # few answers per wake-up instead of one (see GATHER)
                gather = GATHER if len(st.in_flight) > workers else 0.0
                for report in _completed(st, step, gather):
                    job = report.job
                    assert job.fut is not None
                    del st.in_flight[job.fut]
                    job.fut = None
                    _finished(rt, st, job, report, now(), rng)
            if st.outcomes and (len(st.outcomes) >= FLUSH_SIZE or not st.in_flight
                                or time.monotonic() - st.first_unflushed >= FLUSH_AFTER):
                _flush(rt, st, stats, now())
            _progress(rt, st, stats, started)
    finally:
        # whatever happened above, what was sent gets recorded
        for fut, job in list(st.in_flight.items()):
            try:
                _finished(rt, st, job, fut, now(), rng, allow_resend=False)
            except Exception:  # noqa: BLE001 - recording must go on for the others
                log.exception("row %s (template %s): recording failed", job.row.id,
                              job.request.template.name)
        if st.ready or st.parked:
            _release_unstarted(st)
        _flush(rt, st, stats, now())
        if st.recheck:
            _read_holds(rt, st, now())


def _claim(rt: Runtime, now: datetime, lease: float, limit: int) -> list[Row | BadRow]:
    return claim_batch(rt.db, daemon_id=rt.daemon_id, now=now, lease=lease, limit=limit,
                       share=rt.share)


def claim_limit(batch_size: int, rate_limit: float | None, lease: float) -> int:
    """Rows to claim at once. Under a rate limit, claimed rows queue here at `rate` a
    second; claiming more than a quarter lease's worth would keep rows waiting in
    memory for most of their lease (renewal keeps them ours, but a daemon that dies
    then leaves more rows to recover)."""
    if not rate_limit:
        return batch_size
    return max(1, min(batch_size, int(rate_limit * lease / 4)))


def _retrying(rt: Runtime, fn: Callable[[], T]) -> T:
    """A statement that a deadlock or lock timeout rolled back is simply run again."""
    d = dialect(rt.db)
    for attempt in range(4):
        try:
            return fn()
        except Exception as exc:
            if attempt == 3 or not d.is_retryable(exc):
                raise
            log.warning("database busy (%s); trying again", redact(str(exc))[:120])
            time.sleep(0.05 * (attempt + 1) + random.random() * 0.05)
    raise AssertionError("unreachable")


# ----------------------------------------------------------------- leases


def _held(st: _State) -> list[Job]:
    return [*st.ready, *(j for q in st.parked.values() for j in q), *st.in_flight.values()]


def _keep_leases(rt: Runtime, st: _State, stats: Stats, now: datetime) -> None:
    """Renew the leases of every row held in memory before they run short, in one
    statement; forget the rows the database says are no longer ours. O(1) on the hot
    path: only the soonest lease is looked at."""
    lease = rt.config.dispatch.lease
    # renew when the soonest lease is half gone, or too short for one more send
    need = timedelta(seconds=max(lease / 2, rt.config.http.timeout + LEASE_MARGIN * 2))
    if st.earliest_lease is None or st.earliest_lease - now > need:
        return
    if time.monotonic() < st.renew_after:
        return  # the last try failed a moment ago
    held = _held(st)
    if not held:
        st.earliest_lease = None
        return
    until = now + timedelta(seconds=lease)
    try:
        ours = renew_leases(rt.db, [j.row.id for j in held], daemon_id=rt.daemon_id,
                            lease_until=until)
    except Exception as exc:  # noqa: BLE001 - the sends check their lease themselves
        st.renew_after = time.monotonic() + RENEW_RETRY
        # rows waiting here whose lease has passed are stale_retry's now; one in the
        # pool is refused by its own lease check, comes back and goes the same way
        gone = {j.row.id for j in st.ready if j.lease_until <= now} | {
            j.row.id for q in st.parked.values() for j in q if j.lease_until <= now}
        if gone:
            _drop(st, lambda j: j.row.id in gone)
            stats.dropped += len(gone)
        # said once while the database stays away, then only what changes
        if not st.renew_failing or gone:
            log.warning("renewing the leases of %d held rows failed (%s); rows whose lease "
                        "runs out are not sent (%d dropped now, left for stale_retry)",
                        len(held), redact(str(exc))[:160], len(gone))
        st.renew_failing = True
        return
    st.renew_failing = False
    lost = 0
    for job in held:
        if job.row.id in ours:
            job.lease_until = until
        else:
            lost += 1
    st.earliest_lease = until
    if lost:
        for job in st.in_flight.values():
            if job.row.id not in ours:
                job.lost = True  # queued in the pool: not sent when its turn comes
        _drop(st, lambda j: j.row.id not in ours)  # the others are forgotten here
        stats.dropped += lost
        log.warning("%d held rows are no longer ours (their lease ran out while the database "
                    "was away and another recovery took them); they are not sent by this "
                    "daemon", lost)


def _drop(st: _State, lost: Callable[[Job], bool]) -> None:
    """Forget unsent jobs; in-flight ones finish (their write is owner-checked)."""
    st.ready = deque(j for j in st.ready if not lost(j))
    for recipient in list(st.parked):
        kept = deque(j for j in st.parked[recipient] if not lost(j))
        if kept:
            st.parked[recipient] = kept
        else:
            del st.parked[recipient]


# ----------------------------------------------------------------- preparing rows


def _prepare_all(rt: Runtime, st: _State, rows: list[Row | BadRow], now: datetime) -> None:
    jobs: list[Job] = []
    for row in rows:
        try:
            job = _prepare(rt, st, row, now)
        except Exception as exc:  # noqa: BLE001 - one row's surprise is that row's alone
            why = f"internal error preparing the row: {type(exc).__name__}: {exc}"
            _log_failed(row.id, getattr(row, "template", None), why, internal=True)
            _add(st, Outcome(row_id=row.id, claim_attempts=row.attempts, status="fail",
                             error=why, event=Event("reject", detail="internal error")),
                 getattr(row, "template", None) or "?")
            continue
        if job is not None:
            jobs.append(job)
    if jobs:
        jobs = _spend(rt, st, jobs, now)
    if jobs:
        _check_grants(rt, st, jobs, now)


def _spend(rt: Runtime, st: _State, jobs: list[Job], now: datetime) -> list[Job]:
    """Collapse windows, send windows, per-user caps (templates/spending_decide.py): the rows that
    may go now; the others wait (send_at moved, attempt refunded) or fail."""
    if not any(j.request.template.spend.any for j in jobs):
        return jobs
    asks = [spend.Ask(j.row, j.request.template, j.app, j.request.recipient) for j in jobs]
    go: list[Job] = []
    for job, decision in zip(jobs, spend.decide(rt.db, rt.templates.current, asks, now,
                                                rt.config.timezone), strict=True):
        tpl = job.request.template
        if decision is None:
            go.append(job)
        elif isinstance(decision, spend.Hold):
            _add(st, Outcome(row_id=job.row.id, claim_attempts=job.row.attempts, status="wait",
                             send_at=decision.until, refund_attempt=True, error=decision.error,
                             event=Event("hold", channel=tpl.channel, detail=decision.detail)),
                 tpl.name)
        elif decision.reason_code is None:  # expired first: no fallback, as expire_overdue
            _log_failed(job.row.id, job.row.template, decision.error)
            _add(st, Outcome(row_id=job.row.id, claim_attempts=job.row.attempts, status="fail",
                             error=decision.error, event=Event("reject", detail="expired")),
                 tpl.name)
        else:
            _fail_unsent(rt, st, job.row, tpl, decision.error, reason_code=decision.reason_code)
    return go


def _check_grants(rt: Runtime, st: _State, jobs: list[Job], now: datetime) -> None:
    """Each prepared row goes on to send, back to wait, or ends fail, as the grant hold
    (jobs/grant_hold.py) says."""
    found = grant_hold.verdicts(
        rt.db, rt.config.grants.on_missing,
        [(j.app, j.request.recipient, j.request.template, j.row) for j in jobs], now)
    for job, verdict in zip(jobs, found, strict=True):
        tpl = job.request.template
        if verdict is None:
            st.ready.append(job)
        elif verdict.hold is not None:
            _add(st, verdict.hold, tpl.name)
        else:
            _fail_unsent(rt, st, job.row, tpl, verdict.fail or NO_GRANT,
                         reason_code=NO_GRANT_CODE)


def _prepare(rt: Runtime, st: _State, row: Row | BadRow, now: datetime) -> Job | None:
    """Render a claimed row into a Job; a row that cannot be sent is decided here."""
    if isinstance(row, BadRow):
        _log_failed(row.id, row.template, f"unreadable row: {row.reason}")
        _add(st, Outcome(row_id=row.id, claim_attempts=row.attempts, status="fail",
                         error=f"unreadable row: {row.reason}",
                         event=Event("reject", detail=f"unreadable {row.column}")),
             row.template or "?")
        return None
    if row.expire_at is not None and row.expire_at <= now:
        # expire_overdue() ran at the start of the run; this row's time ran out since
        _log_failed(row.id, row.template, EXPIRED)
        _add(st, Outcome(row_id=row.id, claim_attempts=row.attempts, status="fail", error=EXPIRED,
                         event=Event("reject", detail="expired")), row.template)
        return None
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
        _fail_unsent(rt, st, row, _template_of(rt, row), exc.reason)
        return None
    app = req.app or "default"
    problem = app_problem(rt.config.apps, app, req.template)
    if problem:
        _fail_unsent(rt, st, row, req.template, problem)
        return None
    if req.truncated:
        log.info("row %s (template %s): truncated %s to its channel's length limit", row.id,
                 req.template.name, ", ".join(req.truncated),
                 extra={"row_id": row.id, "template": req.template.name})
    lease_until = row.lease_until or now
    if st.earliest_lease is None or lease_until < st.earliest_lease:
        st.earliest_lease = lease_until
    return Job(row=row, request=req, app=app, lease_until=lease_until, now=st.now)


def _log_failed(row_id: int, template: str | None, reason: str, *, sent: bool = False,
                errcode: int | None = None, internal: bool = False) -> None:
    """The one line a failed row gets. The template as the row names it, quoted (it is
    the application's text: a newline in it must not start a line of its own)."""
    extra: dict[str, object] = {"row_id": row_id, "template": template}
    if errcode is not None:
        extra["errcode"] = errcode
    (log.error if internal else log.warning)(
        "row %s (template %r) failed%s: %s", row_id, template,
        "" if sent else " before sending", reason, extra=extra, exc_info=internal)


def _template_of(rt: Runtime, row: Row) -> Template | None:
    try:
        return rt.templates.current.lookup(row.template.strip())
    except RenderError:
        return None


def _render(rt: Runtime, row: Row) -> Request:
    return render_row(rt.templates.current, template=row.template, openid=row.openid,
                      params=row.params, page=row.page, app=row.app, row_id=row.id,
                      phone=row.phone)


def _fail_unsent(rt: Runtime, st: _State, row: Row, tpl: Template | None, reason: str,
                 reason_code: str | None = None) -> None:
    """The row ends fail without a send (it may fall back to its next channel)."""
    _log_failed(row.id, row.template, reason)
    outcome = Outcome(row_id=row.id, claim_attempts=row.attempts, status="fail", error=reason,
                      event=Event("reject", channel=tpl.channel if tpl else None,
                                  detail=reason))
    if tpl is not None:
        outcome = fallback.with_hop(rt, outcome, row, tpl, None, reason_code)
    _add(st, outcome, tpl.name if tpl else row.template)


def _add(st: _State, outcome: Outcome, template: str) -> None:
    if not st.outcomes:
        st.first_unflushed = time.monotonic()
    st.outcomes.append((outcome, template))


# ----------------------------------------------------------------- quota holds


def _read_holds(rt: Runtime, st: _State, now: datetime) -> None:
    """Take in the quota holds every daemon shares (quota_hold): those others stored,
    and the lifts. One small read (a row per app and channel); not per row."""
    st.holds_read = time.monotonic()
    try:
        _publish_holds(rt, st, now)
        shared = holds_db.read(rt.db)
        st.recheck = False
        for h in shared:
            key = (h.channel, h.app)
            mine = st.app_hold.get(key)
            if h.active(now):
                _hold_app(st.app_hold, key, Held(h.until, h.reason or "quota hold",
                                                 h.set_at or now))
            elif (h.lifted_at is not None and mine is not None and mine.quota
                  and mine.since <= h.lifted_at):
                _lifted(rt, st, h, now)
    except Exception as exc:  # noqa: BLE001 - without it this daemon still holds its own
        log.warning("quota holds could not be read (%s); holding only the apps this "
                    "daemon saw spent", redact(str(exc))[:160])


def _lifted(rt: Runtime, st: _State, h: holds_db.Hold, now: datetime) -> None:
    """A hold this daemon held was lifted (`herald holds --lift`): its sends go again,
    and the rows it deferred after the lift (not knowing of it) are put back due."""
    del st.app_hold[(h.channel, h.app)]
    channel = [n for t in rt.templates.current.templates.values() if t.channel == h.channel
               for n in (t.name, t.template_id) if n]
    back = holds_db.release(rt.db, h, who=rt.daemon_id, now=now, templates=channel)
    log.info("quota hold of app %s on %s lifted by %s%s", h.app, h.channel, h.lifted_by,
             f"; {back} rows it had deferred are due again" if back else "")


def _publish_holds(rt: Runtime, st: _State, now: datetime) -> None:
    """Store the quota holds this run saw, so every daemon and every later run holds
    the app too. Kept for the next try if the database is away."""
    if not st.unpublished:
        return
    new = [holds_db.New(app, channel, h.until, h.why)
           for (channel, app), h in st.unpublished.items()]
    holds_db.publish(rt.db, new, who=rt.daemon_id, now=now)
    st.unpublished.clear()
    for h in new:
        log.warning("app %s: %s quota spent; its sends on %s are held until %s (every "
                    "daemon; `herald holds --lift %s` ends it)", h.app, h.channel, h.channel,
                    f"{h.until:%Y-%m-%d %H:%M:%S} UTC", h.app)


# ----------------------------------------------------------------- sending


def _hold(st: _State, job: Job, hold: Held) -> None:
    """Back to wait without sending, the attempt refunded (quota or token trouble)."""
    until, why = hold.until, hold.why
    if hold.quota:
        st.quota_deferred += 1
    _add(st, Outcome(row_id=job.row.id, claim_attempts=job.row.attempts, status="wait",
                     send_at=until, error=why, refund_attempt=True,
                     event=Event("hold", channel=job.request.template.channel, detail=why)),
         job.request.template.name)


def _submit(rt: Runtime, st: _State, pool: ThreadPoolExecutor, slots: int,
            now: datetime) -> int:
    """Hand sends to the pool while it has slots (workers and the queue ahead); returns
    how many were handed over."""
    deferred: list[Job] = []
    submitted = 0
    while st.ready and len(st.in_flight) < slots:
        job = st.ready.popleft()
        if (job.lease_until - now).total_seconds() < rt.config.http.timeout + LEASE_MARGIN:
            deferred.append(job)  # its lease is renewed first (next turn of the loop)
            continue
        hold_key = (job.request.template.channel, job.app)
        held = st.app_hold.get(hold_key)
        token_app = job.request.built.token_app
        if not (held and held.until > now) and token_app:
            try:
                # the token is taken at submit time (a cache lookup), so rows already
                # waiting pick up a refreshed token instead of failing with the old one
                job.token = rt.tokens.get(token_app, now)
            except TokenUnavailable as exc:
                held = st.app_hold[hold_key] = Held(now + timedelta(seconds=TOKEN_WAIT),
                                                    f"no access token: {exc.reason}", now,
                                                    quota=False)
        if held and held.until > now:
            _hold(st, job, held)  # quota spent or no token: back to wait, attempt refunded
            _unpark(st, job.request.recipient)
            continue
        recipient = job.request.recipient
        if recipient in st.busy:
            st.parked.setdefault(recipient, deque()).append(job)
            continue
        st.busy.add(recipient)
        st.submitted += 1
        job.seq = st.submitted
        job.fut = pool.submit(_send_and_report, st.done, rt, job, st.app_hold,
                              st.stale_tokens)
        st.in_flight[job.fut] = job
        submitted += 1
    if deferred:
        st.ready.extendleft(reversed(deferred))
    return submitted


def _completed(st: _State, timeout: float, gather: float = 0.0) -> list[_Report]:
    """Sends that finished: wait up to `timeout` for the first, then `gather` seconds
    more for others, then take all there are."""
    try:
        out = [st.done.get(timeout=timeout)]
    except Empty:
        return []
    if gather:
        time.sleep(gather)
    while True:
        try:
            out.append(st.done.get_nowait())
        except Empty:
            return out


def _finished(rt: Runtime, st: _State, job: Job, fut: Future | _Report, now: datetime,
              rng: random.Random | None, allow_resend: bool = True) -> None:
    recipient = job.request.recipient
    tpl = job.request.template
    try:
        answer: Answer = fut.result()
    except NotSent as exc:
        # never sent: back in line (its lease is renewed first), or dropped if lost
        st.busy.discard(recipient)
        if str(exc) == "no longer ours":
            log.warning("row %s (template %s): no longer ours before its send started; not "
                        "sent", job.row.id, tpl.name, extra={"row_id": job.row.id})
        else:
            st.ready.appendleft(job)
        _unpark(st, recipient)
        return
    except Exception as exc:  # noqa: BLE001 - a bug in one send must not stop the batch
        log.exception("row %s (template %s): send raised", job.row.id, tpl.name)
        answer = Answer(Kind.TRANSIENT, None, f"internal error while sending: {exc!r}"[:200])
    if answer.kind is Kind.TOKEN and job.token:
        # sends handed over from here on may use this token (tokens.get handing out the
        # same token again means it was fine); those already queued with it still skip
        # it, whenever their thread gets to look (the loop may take this answer in first)
        st.stale_tokens[job.token] = st.submitted + 1
    took = time.monotonic() - job.started if job.started else 0.0
    if job.started:
        rt.metrics.send_duration(took)
    if (answer.kind is Kind.TOKEN and not job.token_retried and allow_resend
            and job.request.built.token_app and job.token):
        # our token went stale: expire it (only if still the stored one), fetch, resend once
        rt.tokens.expire(job.request.built.token_app, job.token, now)
        job.token_retried = True
        log.info("row %s: %s; resending once with a fresh token", job.row.id, answer.reason)
        st.busy.discard(recipient)
        st.ready.appendleft(job)
        return
    detail = f"{took * 1000:.0f} ms: {answer.reason}"
    if answer.msgid:
        detail += f" (msgid {answer.msgid})"
    outcome = decide(row_id=job.row.id, attempts=job.row.attempts, answer=answer, now=now,
                     retry=rt.config.retry, rng=rng,
                     event=Event("attempt", channel=tpl.channel, errcode=answer.errcode,
                                 detail=detail),
                     grant=grant_hold.grant_use(job.app, job.request.recipient,
                                                          tpl, answer))
    if answer.kind in (Kind.QUOTA_DAY, Kind.QUOTA_MINUTE):
        # the app's quota is spent: hold its other rows instead of burning requests, and
        # tell every other daemon (stored at the next write, db/holds.py)
        held = Held(outcome.send_at or now, outcome.error or answer.reason, now)
        _hold_app(st.app_hold, (tpl.channel, job.app), held)
        _hold_app(st.unpublished, (tpl.channel, job.app), held)
        st.quota_deferred += 1
    if outcome.status == "fail":
        outcome = fallback.with_hop(rt, outcome, job.row, tpl, answer.errcode, answer.code)
        _log_failed(job.row.id, job.row.template, outcome.error or answer.reason, sent=True,
                    errcode=answer.errcode)
    elif outcome.status == "wait":
        log.debug("row %s (template %s) will retry at %s: %s", job.row.id, tpl.name,
                  outcome.send_at, outcome.error, extra={"row_id": job.row.id})
    _add(st, outcome, tpl.name)
    st.busy.discard(recipient)
    _unpark(st, recipient)


# ----------------------------------------------------------------- the rest


def _unpark(st: _State, recipient: str) -> None:
    """The next row for this recipient may go now."""
    if recipient in st.busy:
        return
    queue = st.parked.get(recipient)
    if queue:
        st.ready.appendleft(queue.popleft())
        if not queue:
            del st.parked[recipient]


def _release_unstarted(st: _State) -> None:
    """Rows claimed but never sent go back to wait as they were (stop or error)."""
    jobs = list(st.ready) + [j for q in st.parked.values() for j in q]
    st.ready.clear()
    st.parked.clear()
    for job in jobs:
        _add(st, Outcome(row_id=job.row.id, claim_attempts=job.row.attempts, status="wait",
                         send_at=job.row.send_at, error=job.row.error, errcode=job.row.errcode,
                         refund_attempt=True,
                         event=Event("handback", detail="claimed but not sent (stopping)")),
             job.request.template.name)
    if jobs:
        log.info("handing back %d claimed rows not yet sent", len(jobs))


def _flush(rt: Runtime, st: _State, stats: Stats, now: datetime) -> None:
    if not st.outcomes:
        return
    if st.unpublished:
        try:
            _publish_holds(rt, st, now)
        except Exception as exc:  # noqa: BLE001 - the results go first; tried again later
            log.warning("quota holds not stored (%s); trying again", redact(str(exc))[:160])
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
            log.warning("writing %d results failed (%s); retrying", len(outcomes),
                        redact(str(exc))[:200])
            time.sleep(0.5 * (attempt + 1))
    st.outcomes = []
    if st.quota_deferred:
        st.recheck, st.quota_deferred = True, 0
    # counted per (template, status, errcode): one metrics call for many alike rows
    alike = Counter((template, o.status, o.errcode) for o, template in batch)
    for (template, status, errcode), n in alike.items():
        if status == "success":
            stats.sent += n
        elif status == "fail":
            stats.failed += n
        else:
            stats.retried += n
        rt.metrics.finished(template, status, errcode, n)
    if len(outcomes) != written:
        log.warning("%d results not written: those rows are no longer ours (lease ran out and "
                    "another daemon took them)", len(outcomes) - written)


def _progress(rt: Runtime, st: _State, stats: Stats, started: float) -> None:
    """A line every PROGRESS_EVERY seconds while a long drain lasts."""
    t = time.monotonic()
    if t - st.last_progress < PROGRESS_EVERY:
        return
    st.last_progress = t
    held = len(st.ready) + len(st.in_flight) + sum(len(q) for q in st.parked.values())
    rate = (stats.sent + stats.failed) / max(t - started, 1e-9)
    try:
        left = f"{due_count(rt.db, st.now()):,} due left"
    except Exception:  # noqa: BLE001 - a progress line must not stop the drain
        left = "due rows unknown"
    log.info("dispatch progress: sent %d, failed %d, back to wait %d, %.0f msg/s, %d held "
             "in memory, %s", stats.sent, stats.failed, stats.retried, rate, held, left)
