"""`python scheduler.py demo`: Herald end to end on this machine, no WeChat account.

Builds a SQLite queue in a scratch folder, starts the local WeChat sandbox, inserts
sample rows with plain SQL (as an application would), runs the real daemon wiring
with a one-second poll until every row has settled, and prints the rows.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import time
from pathlib import Path

import clock
from config import config_from_dict
from db.connection import connect, init_schema
from db.models import MsgList
from logs import setup_logging
from runtime import Runtime
from sandbox.wechat import Sandbox
from templates import load_templates

HERE = Path(__file__).resolve().parent
APPID, SECRET = "wxdemo0000000001", "demo-secret-not-real"
UNSUBSCRIBED = "o_user_who_said_no"

# (template, openid, params, extra columns, what the row shows)
SAMPLES: list[tuple[str, str, str, dict[str, str], str]] = [
    ("order_status", "o_alice", '["Flat white", 28, "shipped", "thanks for your order"]', {},
     "positional params"),
    ("vip_pay_success", "o_bob",
     '{"member_type": "Gold", "amount": "199.00", "paid_at": "2026-11-28 10:30", '
     '"tip": "valid for one year"}', {}, "params by name"),
    ("zT99mpoUCb28M02K7ohTO3h81IvBUlgt8JVRn6rkNSc", "o_carol",
     '["Tea", 12.5, "packed", "raw template_id"]', {"page": "pages/order/detail?id=42"},
     "raw template_id, page override"),
    ("order_status", "o_dave",
     '["An extraordinarily long product name that WeChat would refuse", 9.9, "shipped", "ok"]',
     {}, "over-long thing, truncated"),
    ("order_status", "o_erin", '["Cake", 30, "ready", "priority 10"]', {"priority": "10"},
     "priority"),
    ("order_status", "o_frank", '["Bread", 4, "baked", "send in 2 s"]',
     {"send_at": "+2"}, "scheduled 2 s ahead"),
    ("order_status", "o_grace", '["Soup", 6, "cooking", "retried after -1"]', {},
     "WeChat busy once (-1), retried"),
    ("no_such_template", "o_heidi", "[]", {}, "unknown template"),
    ("order_status", "o_ivan", '["Milk", "twelve", "sent", "x"]', {}, "malformed amount"),
    ("order_status", "o_judy", "not json", {}, "params not JSON"),
    ("order_status", "o_kim", '["Milk", 3]', {}, "missing params"),
    ("order_status", UNSUBSCRIBED, '["Jam", 5, "shipped", "x"]', {},
     "user has not subscribed (43101)"),
    ("order_status", "o_leo", '["Eggs", 2, "late", "x"]', {"expire_at": "-60"},
     "expired before sending"),
    ("order_status", "", '["Rice", 1, "x", "x"]', {}, "empty openid"),
]


def _sqlite_time(offset: float) -> str:
    t = clock.now().timestamp() + offset
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def insert_samples(db_path: Path) -> list[tuple[int, str]]:
    """Insert the sample rows with the sqlite3 module and plain SQL, as an app would."""
    con = sqlite3.connect(db_path)
    out = []
    with con:
        for template, openid, params, extra, label in SAMPLES:
            cols = {"template": template, "openid": openid, "params": params}
            for k, v in extra.items():
                cols[k] = _sqlite_time(float(v)) if k in ("send_at", "expire_at") else v
            names = ", ".join(cols)
            marks = ", ".join("?" for _ in cols)
            cur = con.execute(f"INSERT INTO msg_list ({names}) VALUES ({marks})",
                              list(cols.values()))
            out.append((cur.lastrowid, label))
    con.close()
    return out


def main(args: argparse.Namespace) -> int:
    from scheduler import Daemon  # the real wiring the daemon runs with

    started = time.monotonic()
    setup_logging("text", "ERROR")  # the table below tells the story
    work = Path(args.dir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    tset = load_templates(HERE / "templates.yaml")
    keys = {t.template_id: list(t.data) for t in tset.templates.values()}
    sandbox = Sandbox(apps={APPID: SECRET}, templates=keys, latency=0.02).start()
    try:
        sandbox.unsubscribe(UNSUBSCRIBED)
        sandbox.inject(-1, times=1, openid="o_grace")
        cfg = config_from_dict(
            {
                "database": f"sqlite:///{work / 'herald.db'}",
                "api_base": sandbox.url,
                "templates": str(HERE / "templates.yaml"),
                "apps": {"default": {"appid": APPID, "secret": SECRET}},
                "jobs": {"dispatch": {"every": 1}},
                "retry": {"backoff": {"base": 1, "factor": 2, "max": 5, "jitter": 0}},
                "metrics": {"listen": None},
            },
            base_dir=work, env={},
        )
        db = connect(cfg.database)
        init_schema(db)
        ids = insert_samples(work / "herald.db")
        print(f"demo: queue {work / 'herald.db'}, sandbox {sandbox.url}, "
              f"{len(ids)} rows inserted with plain SQL")
        daemon = Daemon(Runtime.build(cfg, db))
        daemon.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with db.connection_context():
                open_rows = MsgList.select().where(MsgList.status.in_(["wait", "sending"])).count()
            if not open_rows:
                break
            time.sleep(0.3)
        daemon.stop()
        with db.connection_context():
            rows = {r.id: r for r in MsgList.select().order_by(MsgList.id)}
        print()
        print(f"{'id':>3}  {'status':<8} {'tries':>5}  {'what':<32} result")
        for row_id, label in ids:
            r = rows[row_id]
            result = f"msgid {r.msgid}" if r.status == "success" else (r.error or "")
            print(f"{row_id:>3}  {r.status:<8} {r.attempts:>5}  {label:<32} {result[:90]}")
        ok = sum(1 for r in rows.values() if r.status == "success")
        print()
        print(f"{ok} delivered, {len(rows) - ok} failed with a reason, "
              f"{len(sandbox.accepted)} accepted by the sandbox, "
              f"in {time.monotonic() - started:.1f}s")
        unsettled = [r.id for r in rows.values() if r.status in ("wait", "sending")]
        if unsettled:
            print(f"rows not settled: {unsettled}")
            return 1
        return 0
    finally:
        sandbox.stop()
