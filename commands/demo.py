"""`herald demo`: Herald end to end on this machine, no WeChat account, no Tencent one.

In a scratch folder it builds a SQLite queue and a config, starts the local WeChat and
Tencent Cloud SMS sandboxes, inserts sample rows with plain SQL (as an application
would), and runs the real daemon (`run`) and web side (`serve`) wiring in this process
until every row has settled and its receipt has come back. It shows:

- deliveries and failures, each with its reason (the first release's story);
- receipts: the sandbox pushes WeChat's subscribe_msg_sent_event to the web side, signed
  and encrypted as in safe mode, and each row learns whether the phone showed it;
- the grant ledger: a user whose grants are used up is held (grants.on_missing: hold)
  until the sandbox pushes their popup accept, then delivered; an application reports a
  grant with an INSERT into push_event;
- a fallback chain: a user with no grant (43101) who does not follow the official
  account (43004) is reached by SMS, each hop a row of its own;
- spending grants (docs/grants.md): three updates of one order with one collapse_key
  become one message, the newest; a row outside its template's send window waits for
  the window to open.

It leaves `config.yaml` behind in the folder, so `herald --config demo-run/config.yaml
status` (or show, list) looks at the demo's queue afterwards.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

import clock
from commands.human import cut
from config import load_config
from db.connection import connect
from db.rows import Push, Row, every_grant, every_push, every_row
from db.schema import init_schema
from logs import setup_logging
from runtime import Runtime
from sandbox.sms import DEFAULT_SDK_APP_ID, DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY, SmsSandbox
from sandbox.wechat import Sandbox
from templates import load_templates

HERE = Path(__file__).resolve().parent.parent  # the repository: its templates.yaml
MARKER = ".herald-demo"  # the demo only ever deletes a folder it made itself
APPID, SECRET = "wxdemo0000000001", "demo-secret-not-real"
OA_APPID, OA_SECRET = "wxdemooa0000000001", "demo-oa-secret"
OA_TID = "DEMO-OA-order-status"
PUSH_TOKEN = "demoPushToken1"
AES_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"  # a demo EncodingAESKey
SMS_CALLBACK = "demo-callback-token-0001"
UNSUBSCRIBED = "o_user_who_said_no"
USED_UP = "o_grants_used_up"
LOST_ON_PHONE = "o_phone_was_off"
ORDER_TID = "zT99mpoUCb28M02K7ohTO3h81IvBUlgt8JVRn6rkNSc"
# the spending-grants templates' own id (a raw template_id row must name one template)
SPEND_TID = "DEMO-order-update-0000000000000000000000000"
ORDER = '["Flat white", 28, "shipped", "thanks for your order"]'

# The shipped templates, plus the two roads the fallback takes for order_status.
DEMO_TEMPLATES = """
  fallback: [order_status_oa, order_status_sms]

# the same news as a 统一服务消息 (official account template message, uniform_send)
order_status_oa:
  channel: uniform
  oa_appid: {oa_appid}
  template_id: {oa_tid}
  page: pages/order/detail
  params: [goods_name, goods_price, order_status, remark]
  data: {{thing2: "{{{{ goods_name }}}}", thing11: "{{{{ order_status }}}}"}}

# order updates: rows with one collapse_key wait 2 s after their insert, and only the
# newest is sent (paid, packed, shipped -> one message, one grant)
order_update:
  template_id: {order_tid}
  collapse_window: 2s
  params: [goods_name, goods_price, order_status, remark]
  data: {{thing2: "{{{{ goods_name }}}}", amount3: "{{{{ goods_price }}}}元",
         thing11: "{{{{ order_status }}}}", thing5: "{{{{ remark }}}}"}}

# a reminder sent only inside its window (in the zone of config's timezone); the demo
# picks a window that is closed now, so the row waits for it
order_reminder:
  template_id: {order_tid}
  send_window: "{quiet_window}"
  params: [goods_name, goods_price, order_status, remark]
  data: {{thing2: "{{{{ goods_name }}}}", amount3: "{{{{ goods_price }}}}元",
         thing11: "{{{{ order_status }}}}", thing5: "{{{{ remark }}}}"}}

# and as an SMS (Tencent Cloud SendSms, template 1234567 takes two parameters)
order_status_sms:
  channel: sms
  template_id: "1234567"
  params: [goods_name, goods_price, order_status, remark]
  data: ["{{{{ goods_name }}}}", "{{{{ order_status }}}}"]
"""

# (template, openid, params, extra columns, what the row shows)
SAMPLES: list[tuple[str, str, str, dict[str, str], str]] = [
    ("order_status", "o_alice", ORDER, {}, "positional params"),
    ("vip_pay_success", "o_bob",
     '{"member_type": "Gold", "amount": "199.00", "paid_at": "2026-11-28 10:30", '
     '"tip": "valid for one year"}', {}, "params by name"),
    (ORDER_TID, "o_carol", '["Tea", 12.5, "packed", "raw template_id"]',
     {"page": "pages/order/detail?id=42"}, "raw template_id, page override"),
    ("order_status", "o_dave",
     '["An extraordinarily long product name that WeChat would refuse", 9.9, "shipped", "ok"]',
     {}, "over-long thing, truncated"),
    ("order_status", "o_erin", '["Cake", 30, "ready", "priority 10"]', {"priority": "10"},
     "priority"),
    ("order_status", "o_frank", '["Bread", 4, "baked", "send in 2 s"]',
     {"send_at": "+2"}, "scheduled 2 s ahead (ISO 8601)"),
    ("order_status", "o_grace", '["Soup", 6, "cooking", "retried after -1"]', {},
     "WeChat busy once (-1), retried"),
    ("order_status", LOST_ON_PHONE, '["Pie", 8, "shipped", "phone off"]', {},
     "accepted, receipt says not shown"),
    ("order_status", USED_UP, '["Salt", 2, "shipped", "waits for a grant"]', {},
     "grants used up: held, then sent"),
    ("order_status", UNSUBSCRIBED, '["Jam", 5, "shipped", "x"]',
     {"phone": "+8613800138000"}, "no grant (43101): fallback chain"),
    ("no_such_template", "o_heidi", "[]", {}, "unknown template"),
    ("order_status", "o_ivan", '["Milk", "twelve", "sent", "x"]', {}, "malformed amount"),
    ("order_status", "o_judy", "not json", {}, "params not JSON"),
    ("order_status", "o_kim", '["Milk", 3]', {}, "missing params"),
    ("order_status", "o_leo", '["Eggs", 2, "late", "x"]', {"expire_at": "-60"},
     "expired before sending"),
    ("order_status", "", '["Rice", 1, "x", "x"]', {}, "empty openid"),
    # spending grants: one order's three updates, one message; a row held by its window
    ("order_update", "o_nina", '["Mug", 15, "paid", "update 1"]',
     {"collapse_key": "order:1001"}, "update 1 of 3 (collapse_key)"),
    ("order_update", "o_nina", '["Mug", 15, "packed", "update 2"]',
     {"collapse_key": "order:1001"}, "update 2 of 3 (collapse_key)"),
    ("order_update", "o_nina", '["Mug", 15, "shipped", "update 3"]',
     {"collapse_key": "order:1001"}, "update 3 of 3: the one sent"),
    ("order_reminder", "o_olga", '["Mug", 15, "waiting", "come back"]', {},
     "outside its send window: waits"),
]
WINDOW_HELD = "held: send window"


def _iso(offset: float) -> str:
    """An ISO 8601 time with a +08:00 offset, as an application in China writes one."""
    t = clock.now().timestamp() + offset
    return time.strftime("%Y-%m-%dT%H:%M:%S+08:00", time.gmtime(t + 8 * 3600))


def insert_samples(db_path: Path) -> list[tuple[int, str]]:
    """Insert the sample rows with the sqlite3 module and plain SQL, as an app would."""
    con = sqlite3.connect(db_path)
    out = []
    with con:
        for template, openid, params, extra, label in SAMPLES:
            cols: dict[str, Any] = {"template": template, "openid": openid, "params": params}
            for k, v in extra.items():
                cols[k] = _iso(float(v)) if k in ("send_at", "expire_at") else v
            names = ", ".join(cols)
            marks = ", ".join("?" for _ in cols)
            cur = con.execute(f"INSERT INTO msg_list ({names}) VALUES ({marks})",
                              list(cols.values()))
            assert cur.lastrowid is not None
            out.append((cur.lastrowid, label))
        # the mini program reports a grant it got from wx.requestSubscribeMessage
        con.execute("INSERT INTO push_event (app, source, kind, openid, payload) VALUES "
                    "('default', 'app', 'grant', 'o_mallory', ?)",
                    (json.dumps({ORDER_TID: "accept", "errMsg": "requestSubscribeMessage:ok"}),))
        # an earlier grant of this user, used up (what a 43101 would have taught)
        con.execute("INSERT INTO subscribe_grant (app, openid, template_id, balance) VALUES "
                    "('default', ?, ?, 0)", (USED_UP, ORDER_TID))
    con.close()
    return out


def prepare_folder(folder: Path) -> None:
    """A fresh demo folder; refuse one the demo did not make (it deletes its content)."""
    if folder.exists() and any(folder.iterdir()) and not (folder / MARKER).exists():
        raise SystemExit(f"demo: {folder} exists and was not made by the demo; give another "
                         "--dir (the demo empties the folder it uses)")
    if folder.exists():
        for child in sorted(folder.rglob("*"), reverse=True):
            if child.is_dir():
                child.rmdir()
            else:
                child.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("made by `herald demo`; it may empty this folder\n")


def write_files(folder: Path, wechat_url: str, sms_url: str) -> Path:
    shipped = (HERE / "templates.yaml").read_text(encoding="utf-8")
    marker = "    thing5: \"{{ remark }}\"\n"
    assert shipped.rstrip().endswith(marker.strip()), "templates.yaml changed: update demo"
    extra = DEMO_TEMPLATES.format(oa_appid=OA_APPID, oa_tid=OA_TID, order_tid=SPEND_TID,
                                  quiet_window=_closed_window())
    (folder / "templates.yaml").write_text(shipped.rstrip("\n") + "\n" + extra.lstrip("\n"),
                                           encoding="utf-8")
    config = {
        "database": "sqlite:///herald.db",
        "api_base": wechat_url,  # the demo's sandbox: gone once the demo ends
        "templates": "templates.yaml",
        "apps": {"default": {"appid": APPID, "secret": SECRET,
                             "push": {"token": PUSH_TOKEN, "aes_key": AES_KEY}}},
        "sms": {"secret_id": DEFAULT_SECRET_ID, "secret_key": DEFAULT_SECRET_KEY,
                "sdk_app_id": DEFAULT_SDK_APP_ID, "sign_name": "Herald", "endpoint": sms_url,
                "callback_token": SMS_CALLBACK},
        "jobs": {"dispatch": {"every": 1}, "events": {"every": 1}},
        "retry": {"backoff": {"base": 1, "factor": 2, "max": 5, "jitter": 0}},
        "http": {"timeout": 3},
        "grants": {"on_missing": "hold"},
        "receipts": {"missing_after": "1m"},
        "web": {"listen": "127.0.0.1:0"},
        "console": {"listen": None},
        "metrics": {"listen": None},
    }
    path = folder / "config.yaml"
    path.write_text("# Left by `herald demo`: the queue it built. The sandboxes it names are "
                    "gone;\n# status, show and list still work on the queue.\n"
                    + yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
    return path


def _closed_window() -> str:
    """A send window that opens two hours from now (Asia/Shanghai, the default zone)."""
    from templates import spending

    local = clock.now().astimezone(spending.zone(spending.DEFAULT_TIMEZONE))
    opens, closes = local + timedelta(hours=2), local + timedelta(hours=3)
    return f"{opens:%H:%M}-{closes:%H:%M}"


def start_sandboxes() -> tuple[Sandbox, SmsSandbox]:
    tset = load_templates(HERE / "templates.yaml")
    wechat = Sandbox(apps={APPID: SECRET}, latency=0.02).start()
    for tpl in tset.templates.values():
        wechat.add_template(str(tpl.template_id), {i.key: i.key for i in tpl.items},
                            title=tpl.name)
    wechat.add_template(SPEND_TID, {k: k for k in ("thing2", "amount3", "thing11", "thing5")},
                        title="order_update")
    wechat.add_official_account(OA_APPID, OA_SECRET, bound_to=APPID)
    wechat.add_oa_template(OA_TID, ["thing2", "thing11"])
    wechat.unsubscribe(UNSUBSCRIBED)  # subscribe send: 43101
    wechat.unfollow(UNSUBSCRIBED)  # uniform_send: 43004 (not following the account)
    wechat.fail_delivery(LOST_ON_PHONE)  # accepted, but its sent event reports a failure
    wechat.inject(-1, times=1, openid="o_grace")
    sms = SmsSandbox(latency=0.02).start()
    return wechat, sms


def main(args: argparse.Namespace) -> int:
    from jobs import events
    from service.daemon import Daemon  # the real wiring the daemon runs with
    from web import server

    started = time.monotonic()
    setup_logging("text", "ERROR")  # the tables below tell the story
    folder = Path(args.dir).resolve()
    prepare_folder(folder)
    wechat, sms = start_sandboxes()
    listeners: list[server.Listener] = []
    applier = daemon = None
    try:
        cfg = load_config(write_files(folder, wechat.url, sms.url), env={})
        db = connect(cfg.database)
        init_schema(db)
        ids = insert_samples(folder / "herald.db")
        # the web side, as `serve` runs it: the receiver, the events applier
        ctx = server.build(cfg, db)
        applier = events.Applier(ctx, every=0.5)
        ctx.wake = applier.wake
        listeners = server.start(ctx)
        applier.start()
        receiver = listeners[0].url
        wechat.push_to(APPID, f"{receiver}/wechat/push", token=PUSH_TOKEN, aes_key=AES_KEY,
                       fmt="json", mode="safe")
        sms.callback_url = f"{receiver}/tencent/sms/status/{SMS_CALLBACK}"
        print(f"demo: queue {folder / 'herald.db'}; WeChat sandbox {wechat.url}, SMS sandbox "
              f"{sms.url}, push receiver {receiver}; {len(ids)} rows inserted with plain SQL")
        daemon = Daemon(Runtime.build(cfg, db))
        daemon.start()
        held_id = next(i for i, label in ids if label.startswith("grants used up"))
        released = _run_story(db, wechat, held_id)
        rows = _settle(db, timeout=30)
    finally:
        if daemon is not None:
            daemon.stop()
        if applier is not None:
            applier.stop()
        for listener in listeners:
            listener.stop()
        wechat.stop()
        sms.stop()
    return _report(db, ids, rows, released, folder, time.monotonic() - started)


def _rows(db: Any) -> dict[int, Row]:
    with db.connection_context():
        return {r.id: r for r in every_row(db)}


def _run_story(db: Any, wechat: Sandbox, held_id: int) -> bool:
    """Wait for the held row to be held, then push the user's popup accept."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        row = _rows(db).get(held_id)
        if row is not None and row.error and row.error.startswith("held: no grant"):
            wechat.popup(APPID, USED_UP, {ORDER_TID: "accept"})
            return True
        time.sleep(0.2)
    return False


def _settle(db: Any, timeout: float) -> dict[int, Row]:
    """Until nothing waits or is being sent and every delivery has its receipt."""
    deadline = time.monotonic() + timeout
    rows = _rows(db)
    while time.monotonic() < deadline:
        rows = _rows(db)
        open_rows = [r for r in rows.values() if r.status in ("wait", "sending")
                     and not (r.error or "").startswith(WINDOW_HELD)]
        awaiting = [r for r in rows.values() if r.status == "success" and r.receipt is None
                    and r.template != "order_status_oa"]  # uniform sends get no receipt
        if not open_rows and not awaiting:
            break
        time.sleep(0.3)
    return rows


def _report(db: Any, ids: list[tuple[int, str]], rows: dict[int, Row], released: bool,
            folder: Path, took: float) -> int:
    print()
    print(f"{'id':>3}  {'status':<9} {'tries':>5}  {'what':<34} {'receipt':<10} result")
    for row_id, label in ids:
        r = rows[row_id]
        result = f"msgid {r.msgid}" if r.status == "success" else (r.error or "")
        if "; fell back to " in result:  # keep the hop in view: code, then the note
            result = f"errcode {r.errcode}, {result.rsplit('; ', 1)[1]}"
        receipt = r.receipt or "-"
        print(f"{row_id:>3}  {r.status:<9} {r.attempts:>5}  {label:<34} {receipt:<10} "
              f"{cut(result, 80)}")
    hops = [r for r in rows.values() if r.parent_id is not None]
    if hops:
        print()
        print("fallback chain (each hop its own row):")
        for r in hops:
            what = (f"delivered, SerialNo {r.msgid}, receipt {r.receipt or '-'}"
                    if r.status == "success" else (r.error or r.status))
            print(f"  #{r.parent_id} -> #{r.id} {r.template}: {r.status}: {cut(what, 80)}")
    with db.connection_context():
        grants = every_grant(db)
        pushes = every_push(db)
    print()
    print("grant ledger (subscribe_grant):")
    for g in grants:
        print(f"  {g.openid:<22} {cut(g.template_id, 13):<13}  balance {g.balance}, {g.status}")
    latency = _push_to_row(rows, pushes)
    ok = sum(1 for r in rows.values() if r.status == "success")
    failed = sum(1 for r in rows.values() if r.status == "fail")
    received = sum(1 for p in pushes if p.source in ("wechat", "sms"))
    print()
    print("spending grants (docs/grants.md):")
    keyed = [r for r in rows.values() if r.collapse_key == "order:1001"]
    sent = [r for r in keyed if r.status == "success"]
    shown = ", ".join(f"#{r.id} {r.status}" + (f" ({r.error})" if r.error else "")
                      for r in keyed)
    print(f"  collapse_key order:1001: {len(keyed)} updates -> {len(sent)} message ({shown})")
    held = [r for r in rows.values() if (r.error or "").startswith(WINDOW_HELD)]
    for r in held:
        print(f"  #{r.id} {r.template}: {r.error}")
    print()
    print(f"{ok} delivered, {failed} failed with a reason, {len(keyed) - len(sent)} superseded, "
          f"{len(held)} waiting for a send window; {received} pushes received "
          f"(receipts and grants), push -> row median {latency}; held row released by a "
          f"pushed accept: {'yes' if released else 'no'}; in {took:.1f}s")
    chain = next(i for i, label in ids if "fallback chain" in label)
    print(f"the queue stays in {folder}: try  .venv/bin/herald --config "
          f"{_shown(folder)}/config.yaml status   (or show {chain}, list --status fail)")
    unsettled = [r.id for r in rows.values() if r.status in ("wait", "sending")
                 and not (r.error or "").startswith(WINDOW_HELD)]
    if unsettled or not released or len(sent) != 1 or len(held) != 1:
        print(f"rows not settled: {unsettled}" if unsettled else "the held row was not held")
        return 1
    return 0


def _push_to_row(rows: dict[int, Row], pushes: list[Push]) -> str:
    """From a receipt's arrival at the receiver to the row holding it."""
    by_msgid = {r.msgid: r for r in rows.values() if r.msgid and r.receipt_at}
    gaps = []
    for p in pushes:
        try:
            data = json.loads(p.payload)
        except ValueError:
            continue
        msgids = [i.get("msgid") for i in data.get("items", []) if isinstance(i, dict)]
        msgids.append(data.get("sid"))
        for m in msgids:
            r = by_msgid.get(m)
            if r is not None and p.applied_at is not None and r.receipt_at is not None:
                gaps.append((p.applied_at - p.received_at).total_seconds())
    return f"{statistics.median(gaps) * 1000:.0f} ms" if gaps else "n/a"


def _shown(folder: Path) -> str:
    try:
        return str(folder.relative_to(Path.cwd()))
    except ValueError:
        return str(folder)
