"""enqueue, render, list, show, cancel and retry on every engine, as an operator runs them."""

from __future__ import annotations

import json
import re

import pytest

import clock
from db.models import MsgList
from jobs import dispatch
from tests.conftest import insert_sql
from tests.support import write_config
from tests.verbs_support import ago, clear_side_tables, event, herald, seed

GOOD = '["Tea", 3, "shipped", "ok"]'


@pytest.fixture
def queue(any_db, any_db_url, tmp_path):
    """(database, config path) on each engine, the side tables empty."""
    clear_side_tables(any_db)
    return any_db, str(write_config(tmp_path, database=any_db_url))


def rows(db) -> list[MsgList]:
    with db.connection_context():
        return list(MsgList.select().order_by(MsgList.id))


# ----------------------------------------------------------------- enqueue


@pytest.mark.parametrize(("argv", "reason"), [
    (["no_such", "oU"], "unknown template 'no_such'"),
    (["order_statu", "oU", "--params", GOOD], "did you mean 'order_status'"),
    (["order_status", "oU", "--params", '["Tea", 3]'], "missing order_status, remark"),
    (["order_status", "oU", "--params", '["Tea", "twelve", "x", "y"]'], "amount3: 'twelve元'"),
    (["order_status", "  ", "--params", GOOD], "openid is empty"),
    (["order_status", "oU", "--params", GOOD, "--app", "shop"],
     "unknown app 'shop' (configured: default)"),
    (["order_status", "oU", "--params", GOOD, "--expire-at", "2020-01-01T00:00"], "expired"),
    (["order_status", "oU", "--params", '{"goods_name": "Tea"}'], "'goods_price' is undefined"),
    (["order_status", "oU", "--params", GOOD, "--collapse-key", "k" * 129],
     "collapse_key is 129 characters, at most 128"),
])
def test_enqueue_refuses_what_dispatch_would_fail(queue, capsys, argv, reason):
    db, cfg = queue
    ran = herald(capsys, "enqueue", *argv, "--config", cfg)
    assert ran.code == 2, ran.text
    assert "refused: " in ran.err and reason in ran.err
    assert "Traceback" not in ran.text
    assert rows(db) == []


def test_enqueue_inserts_a_good_row_with_its_options(queue, capsys):
    db, cfg = queue
    ran = herald(capsys, "--config", cfg, "enqueue", "order_status", "oU", "--params", GOOD,
                 "--priority", "3", "--send-at", "+1h", "--expire-at", "+2h",
                 "--dedup-key", "order-1", "--page", "pages/x?id=1",
                 "--collapse-key", "order:1")
    assert ran.code == 0, ran.text
    [row] = rows(db)
    assert row.priority == 3 and row.dedup_key == "order-1" and row.collapse_key == "order:1"
    # it says what it queued: the id, template, openid, app, send_at and the options
    assert re.fullmatch(rf"queued #{row.id}: template order_status, openid oU, app default, "
                        r"send_at \S+ \S+ UTC \(in (59 min|1 h)\), expire_at \S+ \S+ UTC, "
                        r"dedup_key order-1, collapse_key order:1, priority 3",
                        ran.out.strip()), ran.out
    assert 3500 < (row.send_at - clock.now()).total_seconds() <= 3600
    again = herald(capsys, "--config", cfg, "enqueue", "order_status", "oU", "--params", GOOD,
                   "--dedup-key", "order-1")
    assert again.code == 1 and "dedup_key 'order-1' is taken" in again.err
    bad = herald(capsys, "--config", cfg, "enqueue", "order_status", "oU", "--send-at", "soon")
    assert bad.code == 2 and "--send-at: 'soon' is not a time" in bad.err


# ----------------------------------------------------------------- render = dispatch


BAD_ROWS = [
    {"template": "nope"},
    {"params": '["Tea"]'},
    {"params": "not json"},
    {"params": '["Milk", "twelve", "sent", "x"]'},
    {"openid": ""},
    {"app": "shop"},
]


def test_render_fails_exactly_where_dispatch_does(queue, capsys, runtime_factory, sandbox):
    db, cfg = queue
    ids = [seed(db, **cols) for cols in BAD_ROWS]
    ids.append(seed(db, expire_at=ago(60)))
    good = seed(db)
    said = {}
    for rid in ids:
        ran = herald(capsys, "render", str(rid), "--config", cfg)
        assert ran.code == 1, (rid, ran.text)
        assert ran.err.startswith("would fail: ")
        said[rid] = ran.err.removeprefix("would fail: ").strip()
    ok = herald(capsys, "render", str(good), "--config", cfg)
    assert ok.code == 0, ok.text
    assert "access_token=<token of app default>" in ok.out
    body = json.loads(ok.out[ok.out.index("{"):])
    assert body["data"]["amount3"] == {"value": "3元"}
    rt = runtime_factory(db, sandbox)
    with db.connection_context():
        dispatch.run(rt)
    final = {r.id: r for r in rows(db)}
    for rid in ids:
        assert final[rid].status == "fail"
        assert final[rid].error == said[rid], rid
    assert final[good].status == "success"
    assert rt.tokens.fetches == 1 and "access_token" not in ok.err


def test_render_ad_hoc_values_and_usage(queue, capsys):
    _, cfg = queue
    ran = herald(capsys, "render", "--config", cfg, "--template", "order_status",
                 "--params", '["Tea"]')
    assert ran.code == 1 and "missing goods_price" in ran.err
    assert herald(capsys, "render", "--config", cfg).code == 2
    assert herald(capsys, "render", "999", "--config", cfg).code == 1


# ----------------------------------------------------------------- retry and cancel


def test_retry_reports_what_it_left_and_why(queue, capsys, monkeypatch):
    monkeypatch.setattr("getpass.getuser", lambda: "ops-anna")
    db, cfg = queue
    failed = seed(db, status="fail", errcode=-1, error="gave up after 5 attempts: -1 busy",
                  attempts=5)
    sent = seed(db, status="success", msgid="123", attempts=1)
    waiting = seed(db)
    ran = herald(capsys, "retry", str(failed), str(sent), "999", str(waiting), "--config", cfg)
    assert ran.code == 1, ran.text  # some rows named by id were left
    assert f"re-drove 1 row: {failed}" in ran.out
    assert f"  {sent}: status success: it was delivered; retry re-drives failed rows only" \
        in ran.out
    assert "  999: no such row" in ran.out
    assert f"  {waiting}: status wait: it is waiting already" in ran.out
    by = {r.id: r for r in rows(db)}
    assert by[failed].status == "wait" and by[failed].attempts == 0
    assert by[failed].error is None and by[failed].errcode is None
    assert by[sent].status == "success"
    show = herald(capsys, "show", str(failed), "--config", cfg)
    assert "retry" in show.out and "re-driven by cli:ops-anna" in show.out


def test_retry_filters_dry_run_and_usage(queue, capsys):
    db, cfg = queue
    a = seed(db, status="fail", errcode=-1, error="x")
    seed(db, status="fail", errcode=43101, error="y")
    seed(db, status="fail", errcode=-1, error="z", template="vip_pay_success")
    ran = herald(capsys, "retry", "--errcode", "-1", "--template", "order_status", "--dry-run",
                 "--config", cfg)
    assert ran.code == 0 and ran.out.startswith(f"would re-drive 1 row: {a}")
    assert all(r.status == "fail" for r in rows(db))
    assert herald(capsys, "retry", "--config", cfg).code == 2
    bad = herald(capsys, "retry", "--failed-within", "soon", "--config", cfg)
    assert bad.code == 2 and "--failed-within" in bad.err
    ran = herald(capsys, "retry", "--all", "--config", cfg)
    assert ran.code == 0 and "re-drove 3 rows" in ran.out


def test_cancel_waiting_rows_only(queue, capsys, monkeypatch):
    monkeypatch.setattr("getpass.getuser", lambda: "ops-anna")
    db, cfg = queue
    w1 = seed(db, openid="oA")
    w2 = seed(db, openid="oA", send_at=ago(-86400))
    sending = seed(db, openid="oA", status="sending", claimed_by="h:1:x")
    done = seed(db, openid="oB", status="success")
    ran = herald(capsys, "cancel", str(w1), str(done), "404", "--config", cfg)
    assert ran.code == 1
    assert f"cancelled 1 row: {w1}" in ran.out
    assert f"  {done}: status success: it was delivered already" in ran.out
    assert "  404: no such row" in ran.out
    ran = herald(capsys, "cancel", "--openid", "oA", "--config", cfg)
    assert ran.code == 0, ran.text
    assert f"cancelled 1 row: {w2}" in ran.out
    assert "left 1 matching row that is being sent now" in ran.out
    by = {r.id: r for r in rows(db)}
    assert by[w1].status == by[w2].status == "cancelled"
    assert by[sending].status == "sending" and by[done].status == "success"
    assert "cancelled by cli:ops-anna" in (by[w1].error or "")
    assert herald(capsys, "cancel", "--config", cfg).code == 2
    dry = herald(capsys, "cancel", "--template", "order_status", "--dry-run", "--config", cfg)
    assert dry.out.startswith("would cancel 0 rows")


# ----------------------------------------------------------------- list


def test_list_newest_first_with_filters_and_keyset_paging(queue, capsys):
    db, cfg = queue
    ids = [seed(db, openid=f"o{i}", template="order_status" if i % 2 else "vip_pay_success",
                status="fail" if i == 3 else "wait", error="boom" if i == 3 else None)
           for i in range(6)]
    ran = herald(capsys, "list", "--config", cfg, "--limit", "4")
    shown = [int(line.split()[0]) for line in ran.out.splitlines()[1:5]]
    assert shown == ids[::-1][:4]
    assert f"--before-id {ids[2]}" in ran.out
    ran = herald(capsys, "list", "--config", cfg, "--before-id", str(ids[2]), "--json")
    assert [r["id"] for r in json.loads(ran.out)] == [ids[1], ids[0]]
    ran = herald(capsys, "list", "--config", cfg, "--status", "fail", "--json")
    [only] = json.loads(ran.out)
    assert only["id"] == ids[3] and only["error"] == "boom"
    ran = herald(capsys, "list", "--config", cfg, "--template", "vip_pay_success",
                 "--openid", "o4", "--app", "default", "--since", "1h", "--json")
    assert [r["id"] for r in json.loads(ran.out)] == [ids[4]]
    assert herald(capsys, "list", "--config", cfg, "--since", "2020-01-01").code == 0
    none = herald(capsys, "list", "--config", cfg, "--openid", "nobody")
    assert none.out.strip() == "no rows match"
    assert herald(capsys, "list", "--config", cfg, "--limit", "0").code == 2


def test_list_marks_cut_text_with_an_ellipsis(queue, capsys):
    """A template, openid or error too long for its column ends in "…", at a word's end
    when one is near; text that fits is shown whole."""
    db, cfg = queue
    error = "amount3: 'twelve元' is not a valid amount (one optional currency sign, up to " \
            "ten digits and two decimals)"
    rid = insert_sql(db, template="an_uncommonly_long_template_name", openid="o" * 30,
                     params="[]", status="fail", error=error)
    short = insert_sql(db, template="order_status", openid="oShort", params="[]",
                       status="fail", error="boom")
    ran = herald(capsys, "list", "--config", cfg)
    line = next(x for x in ran.out.splitlines() if x.split()[0] == str(rid))
    assert "an_uncommonly_long_te… " in line and "o" * 17 + "… " in line
    assert line.endswith("amount3: 'twelve元' is not a valid amount (one optional currency…")
    other = next(x for x in ran.out.splitlines() if x.split()[0] == str(short))
    assert "…" not in other and other.endswith("boom")


# ----------------------------------------------------------------- show


def test_show_tells_the_story_columns_history_receipt_and_chain(queue, capsys):
    db, cfg = queue
    now = clock.now()
    root = seed(db, status="fail", attempts=1, errcode=43101,
                error="43101 user refused; fell back to order_status_sms", updated_at=ago(50))
    hop = seed(db, status="success", attempts=2, parent_id=root, msgid="1988810812324364292",
               sent_at=ago(30), receipt="delivered", receipt_at=ago(20),
               template="vip_pay_success")
    last = seed(db, status="wait", parent_id=hop, send_at=ago(-600),
                error="will retry: -1 WeChat system busy")
    event(db, hop, "claim", ago(40, now), "attempt 1, lease until 10:00:00", daemon="h:1:a")
    event(db, hop, "attempt", ago(39, now), "120 ms: -1 WeChat system busy", errcode=-1,
          channel="subscribe", daemon="h:1:a")
    event(db, hop, "attempt", ago(31, now), "80 ms: ok (msgid 1988810812324364292)",
          errcode=0, channel="subscribe", daemon="h:1:a")
    event(db, hop, "receipt", ago(20, now), "delivered")
    ran = herald(capsys, "show", str(hop), "--config", cfg)
    assert ran.code == 0, ran.text
    out = ran.out
    assert out.startswith(f"row {hop}: success\n  delivered to WeChat ")
    assert "after 2 attempts, msgid 1988810812324364292; the user's device confirmed it" in out
    for column in ("priority", "dedup_key", "claimed_by", "lease_until", "receipt_at"):
        assert f"  {column} " in out
    assert "receipt: delivered" in out
    chain = out[out.index("fallback chain:"):out.index("history:")]
    assert chain.split("\n")[1:4] == [f"  #{root} order_status (fail)",
                                      f"  #{hop} vip_pay_success (success)  <- this row",
                                      f"  #{last} order_status (wait)"]
    history = out[out.index("history:"):].splitlines()[1:]
    assert [h.split()[3] for h in history] == ["claim", "attempt", "attempt", "receipt"]
    assert "errcode -1" in history[1] and "[h:1:a]" in history[1]
    assert "errcode=None" not in out and "None" not in history[3]
    ran = herald(capsys, "show", str(last), "--config", cfg, "--json")
    data = json.loads(ran.out)
    assert data["row"]["status"] == "wait" and data["chain"][0]["id"] == root
    assert "the last failed and it is retried" in data["story"] and "in 9 min" in data["story"]
    missing = herald(capsys, "show", "99999", "--config", cfg)
    assert missing.code == 1 and "no row with id 99999" in missing.err


@pytest.mark.parametrize(("cols", "story"), [
    ({}, "waiting and due since"),
    ({"send_at": "+7200"}, "scheduled for "),
    ({"send_at": "+60", "error": "deferred to the next minute: 45011 quota"}, "held until"),
    ({"status": "sending", "claimed_by": "h:1:x", "lease_until": "-30"},
     "being sent by h:1:x, but its lease ran out 30 s ago"),
    ({"status": "cancelled", "error": "cancelled by cli"}, "cancelled "),
    ({"status": "fail", "error": "expired: expire_at passed", "attempts": 0},
     "after 0 attempts: expired"),
])
def test_show_says_what_happened_in_words(queue, capsys, cols, story):
    db, cfg = queue
    # "+60" / "-30": seconds from now
    cols = {k: ago(-float(v)) if isinstance(v, str) and v[:1] in "+-" else v
            for k, v in cols.items()}
    rid = seed(db, **cols)
    ran = herald(capsys, "show", str(rid), "--config", cfg)
    assert ran.code == 0, ran.text
    assert story in ran.out.splitlines()[1], ran.out
