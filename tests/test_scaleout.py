"""Scale-out: three daemon processes share one PostgreSQL or MySQL/MariaDB queue.

Rows go in the way an application in China writes them: through the server's own
command-line client (psql, mysql), in multi-row INSERTs, from a session in +08:00.
Each daemon is a real `scheduler.py run` process with its own config file; the WeChat
sandbox is a process of its own, so its CPU does not share the GIL of this test.

- all 3,000 rows go out exactly once, every daemon takes a share, and timestamps are
  UTC instants whatever the inserting session's zone (a row scheduled for a +08:00
  local time is not sent before that instant);
- SIGKILL of one daemon mid-drain loses nothing: the other two finish everything once
  the dead daemon's leases run out, and only rows it held 'sending' can go out twice.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from peewee import Database, fn

from db.connection import url_params
from db.models import MsgList
from tests.bound import connect
from tests.conftest import database_url
from tests.support import ROOT, DaemonProcess, SandboxProcess, clean_env, wait_for, write_config

pytestmark = pytest.mark.slow

ROWS = 3000
STATEMENT_ROWS = 1000  # rows per multi-row INSERT: a few statements, as a bulk load does
SCHEDULED = 60  # rows with an explicit send_at in +08:00 local time, a few seconds ahead
AHEAD = 8  # seconds: long enough that the insert itself cannot eat the margin
WORKERS = (4, 6, 8)  # one per daemon: unequal pools must still share the queue
LATENCY = 0.02  # seconds per send in the sandbox
DRAIN_TIMEOUT = 120.0
PLUS8 = timezone(timedelta(hours=8))
PARAMS = '["item {i}", 1, "shipped", "ok"]'

# The session zone of the inserting client. PostgreSQL: a bare '+08:00' string is a POSIX
# zone, 8 hours WEST of UTC; the INTERVAL form is the one that means UTC+8.
ZONE_SQL = {
    "postgres": "SET TIME ZONE INTERVAL '+08:00' HOUR TO MINUTE;",
    "mysql": "SET time_zone = '+08:00';",
}


def openid(i: int) -> str:
    return f"o{i:05d}"


# -- daemons ----------------------------------------------------------------------------


def make_daemons(tmp_path: Path, url: str, api_base: str) -> list[DaemonProcess]:
    daemons = []
    for i, workers in enumerate(WORKERS):
        folder = tmp_path / f"d{i}"
        folder.mkdir()
        cfg = write_config(
            folder, api_base=api_base, database=url,
            jobs={"dispatch": {"every": "1s"}, "stale_retry": {"every": "1s"}},
            dispatch={"workers": workers, "batch_size": 50, "lease": "10s"},
            http={"timeout": "3s"},  # at most a third of the lease
        )
        daemons.append(DaemonProcess(cfg, folder / "daemon.log", f"daemon{i}"))
    return daemons


def init_db(config: Path) -> None:
    res = subprocess.run([sys.executable, str(ROOT / "scheduler.py"), "--config", str(config),
                          "init-db"], cwd=ROOT, env=clean_env(), capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr


# -- inserting rows with the server's own client -----------------------------------------


def insert_script(dialect: str, *, scheduled: int, send_at_local: str) -> str:
    """SQL for the client's stdin: the +08:00 zone, then multi-row INSERTs."""
    lines = [ZONE_SQL[dialect]]
    plain = ROWS - scheduled
    for lo in range(1, plain + 1, STATEMENT_ROWS):
        hi = min(lo + STATEMENT_ROWS, plain + 1)
        values = ",\n".join(f"('order_status', '{openid(i)}', '{PARAMS.format(i=i)}')"
                            for i in range(lo, hi))
        lines.append(f"INSERT INTO msg_list (template, openid, params) VALUES\n{values};")
    if scheduled:
        # local wall-clock time in +08:00, no offset in the literal: the session zone says
        # which instant it is
        values = ",\n".join(
            f"('order_status', '{openid(i)}', '{PARAMS.format(i=i)}', '{send_at_local}')"
            for i in range(plain + 1, ROWS + 1))
        lines.append(f"INSERT INTO msg_list (template, openid, params, send_at) VALUES\n"
                     f"{values};")
    return "\n".join(lines) + "\n"


def client_command(dialect: str, url: str) -> list[str]:
    if dialect == "postgres":
        return ["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"]
    p = url_params(url)
    cmd = ["mysql", "--protocol=TCP", "-h", str(p.get("host", "127.0.0.1")),
           "-P", str(p.get("port", 3306)), "-u", str(p.get("user", "root")), "--batch"]
    password = p.get("password") or p.get("passwd")
    if password:
        cmd.append(f"--password={password}")
    return [*cmd, str(p["database"])]


def insert_rows(dialect: str, url: str, *, scheduled: int = 0,
                send_at: datetime | None = None) -> None:
    local = send_at.astimezone(PLUS8).strftime("%Y-%m-%d %H:%M:%S") if send_at else ""
    sql = insert_script(dialect, scheduled=scheduled, send_at_local=local)
    res = subprocess.run(client_command(dialect, url), input=sql, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]


# -- reading the queue ----------------------------------------------------------------------


def status_counts(db: Database) -> Counter:
    with db.connection_context():
        q = MsgList.select(MsgList.status, fn.COUNT(MsgList.id)).group_by(MsgList.status)
        return Counter(dict(q.tuples()))


def success_by_daemon(db: Database) -> Counter:
    with db.connection_context():
        q = (MsgList.select(MsgList.claimed_by, fn.COUNT(MsgList.id))
             .where(MsgList.status == "success").group_by(MsgList.claimed_by))
        return Counter(dict(q.tuples()))


def sending_by_daemon(db: Database) -> Counter:
    with db.connection_context():
        q = (MsgList.select(MsgList.claimed_by, fn.COUNT(MsgList.id))
             .where(MsgList.status == "sending").group_by(MsgList.claimed_by))
        return Counter(dict(q.tuples()))


@dataclass
class Cluster:
    dialect: str
    url: str
    db: Database
    sandbox: SandboxProcess
    daemons: list[DaemonProcess]


@pytest.fixture(params=["postgres", "mysql"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """A fresh schema (made by init-db), the sandbox, and three ready daemons."""
    dialect = request.param
    url = database_url(dialect, tmp_path)  # drops Herald's tables; skips without a URL
    sandbox = SandboxProcess(tmp_path, latency=LATENCY)
    daemons = make_daemons(tmp_path, url, sandbox.url)
    db = connect(url)
    try:
        init_db(daemons[0].config)
        for d in daemons:
            d.start()
        for d in daemons:
            d.wait_ready()
        yield Cluster(dialect, url, db, sandbox, daemons)
    finally:
        for d in daemons:
            d.close()
        sandbox.stop()
        db.close()


def drain(c: Cluster, total: int = ROWS) -> bool:
    return wait_for(lambda: status_counts(c.db)["success"] == total, DRAIN_TIMEOUT, step=0.25)


def stop_all(daemons: list[DaemonProcess]) -> None:
    for d in daemons:  # all at once: they stop side by side
        d.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    for d in daemons:
        assert d.proc.wait(timeout=30) == 0, d.tail()  # type: ignore[union-attr]


def assert_clean_logs(daemons: list[DaemonProcess]) -> None:
    for d in daemons:
        text = d.text()
        assert "Traceback" not in text and " failed: " not in text, d.tail(60)


# -- the tests --------------------------------------------------------------------------------


def test_three_daemons_share_one_queue_and_send_each_row_once(cluster: Cluster) -> None:
    c = cluster
    t_before = datetime.now(UTC)
    # whole seconds: the +08:00 literal then names this exact instant
    send_at = (t_before + timedelta(seconds=AHEAD)).replace(microsecond=0)
    insert_rows(c.dialect, c.url, scheduled=SCHEDULED, send_at=send_at)
    t_after = datetime.now(UTC)
    scheduled_ids = {openid(i) for i in range(ROWS - SCHEDULED + 1, ROWS + 1)}

    # Until the scheduled instant, the sandbox must not have accepted any scheduled row.
    # A sample only proves something if its answer came back before that instant.
    checked_at: list[datetime] = []
    while datetime.now(UTC) < send_at:
        stats = c.sandbox.stats()
        answered = datetime.now(UTC)
        if answered < send_at:
            early = scheduled_ids & set(stats["by_openid"])
            assert not early, f"sent before their send_at {send_at}: {sorted(early)[:5]}"
            checked_at.append(answered)
        time.sleep(0.2)
    assert checked_at and (send_at - checked_at[-1]).total_seconds() < 2, checked_at[-3:]

    assert drain(c), (status_counts(c.db), [d.tail() for d in c.daemons])
    stats = c.sandbox.stats()
    stop_all(c.daemons)

    # exactly once: 3,000 distinct recipients, each accepted once
    assert stats["accepted"] == ROWS, stats["accepted"]
    assert stats["duplicates"] == 0
    assert set(stats["by_openid"]) == {openid(i) for i in range(1, ROWS + 1)}
    assert set(stats["by_openid"].values()) == {1}
    assert stats["violations"] == 0

    # every daemon took a share
    shares = success_by_daemon(c.db)
    ids = {d.daemon_id for d in c.daemons}
    assert set(shares) == ids, (shares, ids)
    assert all(shares[i] > 0 for i in ids), shares

    with c.db.connection_context():
        rows = list(MsgList.select())
    assert len(rows) == ROWS and all(r.attempts == 1 for r in rows)
    # created_at is the UTC instant of the insert, not the +08:00 wall clock read as UTC
    slack = timedelta(seconds=60)
    for r in rows:
        assert t_before - slack <= r.created_at <= t_after + slack, r.created_at
        assert r.sent_at is not None and r.sent_at >= r.created_at
    scheduled = [r for r in rows if r.openid in scheduled_ids]
    assert len(scheduled) == SCHEDULED
    for r in scheduled:
        assert r.send_at == send_at, (r.send_at, send_at)  # +08:00 local read as its instant
        assert r.sent_at >= send_at, (r.sent_at, send_at)
    assert_clean_logs(c.daemons)
    print(f"\nscale-out {c.dialect}: {ROWS} rows, shares "
          f"{sorted(shares.values(), reverse=True)}, scheduled rows sent "
          f"{min(r.sent_at for r in scheduled) - send_at} after their send_at at the earliest")


def test_sigkill_one_of_three_daemons_and_the_others_finish(cluster: Cluster) -> None:
    c = cluster
    insert_rows(c.dialect, c.url)
    assert wait_for(lambda: status_counts(c.db)["success"] >= ROWS // 3, 60, step=0.05), \
        status_counts(c.db)
    # kill the daemon holding the most rows right now, so the kill lands mid-batch
    holding = sending_by_daemon(c.db)
    by_id = {d.daemon_id: d for d in c.daemons}
    victim_id = max(by_id, key=lambda i: holding.get(i, 0))
    victim = by_id[victim_id]
    victim.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    victim.proc.wait(timeout=10)  # type: ignore[union-attr]
    survivors = [d for d in c.daemons if d is not victim]

    # what the dead daemon held, counted now: nothing it can write any more
    with c.db.connection_context():
        held = [r.id for r in MsgList.select(MsgList.id).where(
            (MsgList.status == "sending") & (MsgList.claimed_by == victim_id))]
    at_kill = status_counts(c.db)
    assert held, f"the kill hit no batch: {holding}, {at_kill}"

    assert drain(c), (status_counts(c.db), [d.tail() for d in survivors])
    stats = c.sandbox.stats()
    stop_all(survivors)

    per_user = stats["by_openid"]
    assert set(per_user) == {openid(i) for i in range(1, ROWS + 1)}  # nothing lost
    duplicates = sum(n - 1 for n in per_user.values())
    assert duplicates == stats["duplicates"]
    # only a send in flight (or sent, not yet recorded) at the kill can go out twice
    assert duplicates <= len(held), (duplicates, len(held))
    assert stats["violations"] == 0

    with c.db.connection_context():
        recovered = list(MsgList.select().where(MsgList.id.in_(held)))
    survivor_ids = {d.daemon_id for d in survivors}
    for r in recovered:
        # taken back by stale_retry after the lease, then sent by a survivor
        assert r.status == "success" and r.claimed_by in survivor_ids, (r.id, r.claimed_by)
        assert r.attempts >= 2, (r.id, r.attempts)
    shares = success_by_daemon(c.db)
    assert all(shares[d.daemon_id] > 0 for d in c.daemons), shares
    assert_clean_logs(survivors)
    print(f"\nSIGKILL {c.dialect}: {at_kill['success']} sent before the kill, "
          f"{len(held)} rows held 'sending' by the killed daemon, {duplicates} duplicates, "
          f"{stats['accepted']} accepted for {ROWS} rows; shares "
          f"{sorted(shares.values(), reverse=True)}")
