"""Live daemons against a slow or crashing world, as real subprocesses.

- A slow WeChat (1 s a send, 2 workers, a batch of 40, a 10 s lease: the batch takes
  twice the lease): every row is sent exactly once, none is left sending.
- SIGKILL under on_stale: fail: a second daemon recovers; no row the sandbox never
  received ends fail, none is sent twice, every row ends success or fail.
- templates.yaml edits that must not replace the running set (empty, half-written,
  not UTF-8, a duplicate key, dropping a template waiting rows name): the daemon stays
  up, keeps delivering with the last good set and logs why.

The sandbox is a process of its own (tests/support.SandboxProcess) that records each
request as it arrives, before its latency: a request that arrived may have been
delivered even if the daemon that sent it died before the answer.
"""

from __future__ import annotations

import random
import signal
from collections import Counter
from pathlib import Path

import pytest

from db.connection import init_schema
from tests.bound import connect
from tests.conftest import ROOT, insert_sql
from tests.support import SECRET, DaemonProcess, SandboxProcess, wait_for, write_config

pytestmark = pytest.mark.slow
PARAMS = '["item {i}", 1, "shipped", "ok"]'


def openid(i: int) -> str:
    return f"o{i:03d}"


def statuses(db) -> dict[str, str]:
    with db.connection_context():
        return {o: s for o, s in db.execute_sql("SELECT openid, status FROM msg_list")}


def counts(db) -> Counter:
    return Counter(statuses(db).values())


def fill(db, n: int, start: int = 0) -> None:
    with db.connection_context():
        for i in range(start, start + n):
            insert_sql(db, template="order_status", openid=openid(i),
                       params=PARAMS.format(i=i))


def received(sb: SandboxProcess) -> Counter:
    return Counter(m["touser"] for m in sb.call("GET", "received"))


# ----------------------------------------------------------------- a slow WeChat


def test_a_slow_wechat_gets_each_row_exactly_once(tmp_path: Path):
    rows = 40
    with SandboxProcess(tmp_path, latency=1.0) as sb:
        cfg = write_config(
            tmp_path, api_base=sb.url,
            jobs={"dispatch": {"every": "1s"}, "stale_retry": {"every": "1s"}},
            dispatch={"workers": 2, "batch_size": rows, "lease": "10s"},
            http={"timeout": "3s"},
        )
        db = connect(f"sqlite:///{tmp_path / 'herald.db'}")
        init_schema(db)
        fill(db, rows)
        d = DaemonProcess(cfg, tmp_path / "daemon.log").start()
        try:
            d.wait_ready()
            # 40 sends of 1 s on 2 workers take 20 s: twice the lease
            assert wait_for(lambda: counts(db)["success"] == rows, timeout=120), (
                counts(db), d.tail())
            assert d.stop(signal.SIGTERM) == 0, d.tail()
        finally:
            d.close()
        got = received(sb)
        stats = sb.stats()
    assert got == Counter({openid(i): 1 for i in range(rows)}), got  # once each
    assert stats["accepted"] == rows and stats["duplicates"] == 0
    assert counts(db) == Counter({"success": rows})
    with db.connection_context():
        claims = dict(db.execute_sql("SELECT msg_id, COUNT(*) FROM msg_event "
                                     "WHERE kind = 'claim' GROUP BY msg_id").fetchall())
    assert set(claims.values()) == {1}, claims  # nobody took a row from the live daemon
    assert "no longer ours" not in d.text() and "lease expired" not in d.text()
    assert SECRET not in d.text()


# ----------------------------------------------------------------- SIGKILL, on_stale: fail

WORKERS = 4


def crash_setup(tmp_path: Path, sb: SandboxProcess, rows: int):
    cfg = write_config(
        tmp_path, api_base=sb.url,
        jobs={"dispatch": {"every": "1s"}, "stale_retry": {"every": "1s"}},
        dispatch={"workers": WORKERS, "batch_size": 10, "lease": "10s", "on_stale": "fail"},
        http={"timeout": "3s"},
    )
    db = connect(f"sqlite:///{tmp_path / 'herald.db'}")
    init_schema(db)
    fill(db, rows)
    return cfg, db


def settle(tmp_path: Path, cfg: Path, db, rows: int) -> None:
    """A second daemon recovers what the first left and finishes the queue."""
    b = DaemonProcess(cfg, tmp_path / "b.log", "b").start()
    try:
        done = lambda: counts(db)["success"] + counts(db)["fail"] == rows  # noqa: E731
        assert wait_for(done, timeout=120), (counts(db), b.tail())
        assert b.stop(signal.SIGTERM) == 0, b.tail()
    finally:
        b.close()


def tally(db, got: Counter, rows: int) -> dict[str, int]:
    final = statuses(db)
    assert len(final) == rows
    failed = [o for o, s in final.items() if s == "fail"]
    return {
        "rows": rows,
        "received": sum(1 for o in final if got[o]),
        "success": sum(1 for s in final.values() if s == "success"),
        "failed": len(failed),
        "lost": sum(1 for o, s in final.items() if not got[o] and s != "success"),
        "duplicated": sum(1 for o in final if got[o] > 1),
        "failed_never_received": sum(1 for o in failed if not got[o]),
        "success_never_received": sum(1 for o, s in final.items()
                                      if s == "success" and not got[o]),
        "unfinished": sum(1 for s in final.values() if s not in ("success", "fail")),
    }


def test_sigkill_while_wechat_holds_every_send_fails_only_those(tmp_path: Path):
    """Killed while each worker's request sits at WeChat: exactly those rows may have
    been delivered and end fail; rows claimed but never sent go out again, once."""
    rows = 40
    held = [openid(i) for i in range(20, 20 + WORKERS)]
    with SandboxProcess(tmp_path, latency=0.2) as sb:
        cfg, db = crash_setup(tmp_path, sb, rows)
        for o in held:
            sb.call("POST", "hold", {"openid": o})
        a = DaemonProcess(cfg, tmp_path / "a.log", "a").start()
        try:
            a.wait_ready()
            assert wait_for(lambda: all(received(sb)[o] for o in held), timeout=60), (
                received(sb), a.tail())
            # and the answers before them are written (results go out within 50 ms)
            assert wait_for(lambda: counts(db)["success"] == 20, timeout=30), counts(db)
            at_kill = counts(db)
            a.stop(signal.SIGKILL)
        finally:
            a.close()
        sb.call("POST", "release", {})  # WeChat delivers what it had; nobody hears of it
        assert at_kill["sending"] >= WORKERS, at_kill
        settle(tmp_path, cfg, db, rows)
        got = received(sb)
    t = tally(db, got, rows)
    print(f"\nSIGKILL at held sends: {t}")
    assert SECRET not in (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
    final = statuses(db)
    assert sorted(o for o, s in final.items() if s == "fail") == held
    assert t["duplicated"] == 0 and t["failed_never_received"] == 0 and t["lost"] == 0
    assert t["unfinished"] == 0 and t["success_never_received"] == 0
    assert t["received"] == rows


@pytest.mark.parametrize("trial", range(2))
def test_sigkill_at_a_random_moment_under_on_stale_fail(tmp_path: Path, trial: int):
    """The kill lands wherever it lands. At-most-once: nothing twice, nothing left
    unfinished. A row ends fail only if its send had started, which the sandbox can
    have missed only for a send killed between writing started_at and writing its
    request (a few instructions: at most one per worker)."""
    rows = 60
    kill_after = random.Random(trial).randint(8, 40)
    with SandboxProcess(tmp_path, latency=0.5) as sb:
        cfg, db = crash_setup(tmp_path, sb, rows)
        a = DaemonProcess(cfg, tmp_path / "a.log", "a").start()
        try:
            a.wait_ready()
            assert wait_for(lambda: sum(received(sb).values()) >= kill_after, timeout=60)
            at_kill = counts(db)
            a.stop(signal.SIGKILL)
        finally:
            a.close()
        settle(tmp_path, cfg, db, rows)
        got = received(sb)
    t = tally(db, got, rows)
    print(f"\nSIGKILL after {kill_after} received (held sending: {at_kill['sending']}): {t}")
    assert t["duplicated"] == 0 and t["unfinished"] == 0 and t["success_never_received"] == 0
    assert t["failed_never_received"] <= WORKERS
    assert t["failed"] <= at_kill["sending"]  # only rows the dead daemon held


# ----------------------------------------------------------------- template reloads

GOOD_TEMPLATES = (ROOT / "templates.yaml").read_text(encoding="utf-8")


def test_broken_template_edits_never_replace_the_running_set(tmp_path: Path, sandbox):
    tpl = tmp_path / "templates.yaml"
    tpl.write_text(GOOD_TEMPLATES, encoding="utf-8")
    cfg = write_config(tmp_path, api_base=sandbox.url, templates=str(tpl),
                       jobs={"dispatch": {"every": "1s"}})
    db = connect(f"sqlite:///{tmp_path / 'herald.db'}")
    init_schema(db)
    # a row scheduled for later names vip_pay_success: a file without it must be refused
    with db.connection_context():
        insert_sql(db, template="vip_pay_success", openid="oLater",
                   params='["Gold", 199, "2026-11-28 10:30", "hi"]',
                   send_at="2099-01-01 00:00:00")
    d = DaemonProcess(cfg, tmp_path / "daemon.log").start()
    n = 0

    def deliver_one() -> None:
        nonlocal n
        n += 1
        with db.connection_context():
            insert_sql(db, template="order_status", openid=f"oEdit{n}",
                       params='["Tea", 3, "shipped", "ok"]')
        assert wait_for(lambda: statuses(db).get(f"oEdit{n}") == "success", timeout=30), (
            statuses(db), d.tail())

    def refused(content: bytes, why: str) -> None:
        # SIGHUP refuses the whole reload ("config not reloaded ... templates"), the file
        # watch the templates alone ("templates not reloaded"): either says why
        before = d.text().count("config not reloaded")
        tpl.write_bytes(content)
        assert d.proc is not None  # set by start()
        d.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: d.text().count("config not reloaded") > before,
                        timeout=30), d.tail()
        text = d.text()
        said = text[text.rindex("config not reloaded"):][:800]  # the line and its list
        assert why in said, said
        assert d.alive(), d.tail()
        deliver_one()  # the last good set still delivers

    half = GOOD_TEMPLATES.encode()
    # a writer stopped: inside a quoted value, or after a template's first lines
    mid_value = half.index(b'thing2: "{{ goods_name') + 12
    mid_template = half.index(b"order_status:") + 40
    dropped = GOOD_TEMPLATES[GOOD_TEMPLATES.index("# \"Order status"):]  # no vip_pay_success
    try:
        d.wait_ready()
        deliver_one()
        refused(b"", "no templates")
        refused(half[:mid_value], "not valid YAML")
        refused(half[:mid_template], "order_status.data: required")
        refused(GOOD_TEMPLATES.encode("utf-16"), "not UTF-8")
        refused(b"\xff\xfe" + half, "not UTF-8")
        refused(half + b"\norder_status:\n  template_id: x\n  data: {thing2: a}\n",
                "duplicate key 'order_status'")
        refused(dropped.encode(), "drops templates that waiting rows still name: "
                                  "vip_pay_success (1 rows)")
        # and a good edit is taken
        before = d.text().count("config reloaded")
        tpl.write_text(GOOD_TEMPLATES + "\nnew_notice:\n  template_id: "
                       "zT99mpoUCb28M02K7ohTO3h81IvBUlgt8JVRn6rkNSc\n  params: [a, b, c, d]\n"
                       "  data: {thing2: '{{ a }}', amount3: '{{ b }}元', thing11: '{{ c }}',"
                       " thing5: '{{ d }}'}\n", encoding="utf-8")
        assert d.proc is not None
        d.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: d.text().count("config reloaded") > before, timeout=30)
        with db.connection_context():
            insert_sql(db, template="new_notice", openid="oNew",
                       params='["Tea", 3, "shipped", "ok"]')
        assert wait_for(lambda: statuses(db).get("oNew") == "success", timeout=30), d.tail()
        assert d.stop(signal.SIGTERM) == 0, d.tail()
    finally:
        d.close()
    assert "Traceback" not in d.text() and SECRET not in d.text()
