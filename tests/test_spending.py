"""Spending grants (docs/grants.md): newest-wins collapse, send windows, per-user caps,
on SQLite, PostgreSQL and MariaDB; their hostile inputs; the upgrade that adds
msg_list.collapse_key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from peewee import DatabaseError

from db.connection import dialect_of
from db.decode import Row
from db.models import MsgEvent, MsgList
from db.schema import VERSION, ensure_current, init_schema, split_statements, state
from jobs import dispatch
from templates import TemplateError, load_templates, spending
from templates import spending_decide as spend
from tests.bound import connect
from tests.conftest import ROOT, insert_sql

GOOD = '["Tea", 12.5, "shipped", "thanks"]'
BASE = yaml.safe_load((ROOT / "templates.yaml").read_text())["order_status"]


def write_templates(folder: Path, **extra: dict) -> Path:
    """templates.yaml with order_status (the sandbox knows its id) plus spending keys,
    and each extra template as order_status with those keys."""
    data = {"order_status": dict(BASE)}
    for name, keys in extra.items():
        data[name] = {**BASE, **keys}
    path = folder / "spend_templates.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def runtime(runtime_factory, db, sandbox, tmp_path, **templates: dict):
    return runtime_factory(db, sandbox, templates=str(write_templates(tmp_path, **templates)))


def get(db, row_id: int) -> MsgList:
    with db.connection_context():
        return MsgList.get_by_id(row_id)


def history(db, row_id: int) -> list[tuple[str, str | None]]:
    with db.connection_context():
        return [(e.kind, e.detail) for e in MsgEvent.select().where(MsgEvent.msg_id == row_id)
                .order_by(MsgEvent.id)]


def past(db, row_id: int, **ago: float) -> None:
    """Move a row's created_at and send_at back (time passing, for one row)."""
    t = datetime.now(UTC) - timedelta(**ago)
    d = dialect_of(db)
    stamp = t.replace(tzinfo=None).isoformat(sep=" ") if d != "postgres" else t
    with db.connection_context():
        db.execute_sql(f"UPDATE msg_list SET created_at = {db.param}, send_at = {db.param} "
                       f"WHERE id = {db.param}", (stamp, stamp, row_id))


# ------------------------------------------------------------------ collapse


def test_three_updates_with_one_key_send_one_message_the_newest(any_db, sandbox,
                                                               runtime_factory, tmp_path):
    rt = runtime(runtime_factory, any_db, sandbox, tmp_path,
                 order_packed={}, order_shipped={})
    # the key spans templates: paid, packed, shipped of one order
    ids = [insert_sql(any_db, template=t, openid="oA", params=GOOD, collapse_key="order:1234")
           for t in ("order_status", "order_packed", "order_shipped")]
    other = insert_sql(any_db, template="order_status", openid="oB", params=GOOD,
                       collapse_key="order:1234")  # another user: its own message
    with any_db.connection_context():
        stats = dispatch.run(rt)
    assert stats.sent == 2 and len(sandbox.accepted) == 2
    newest = get(any_db, ids[2])
    assert newest.status == "success"
    assert get(any_db, other).status == "success"
    for older in ids[:2]:
        r = get(any_db, older)
        assert (r.status, r.error, r.attempts, r.msgid) == (
            "cancelled", f"superseded by #{ids[2]}", 0, None)
        assert history(any_db, older) == [("superseded", f"superseded by #{ids[2]}")]


def test_collapse_window_turns_a_burst_into_one_message(any_db, sandbox, runtime_factory,
                                                        tmp_path):
    rt = runtime(runtime_factory, any_db, sandbox, tmp_path,
                 order_burst={"collapse_window": "60s"})
    first = insert_sql(any_db, template="order_burst", openid="oA", params=GOOD,
                       collapse_key="k")
    with any_db.connection_context():
        dispatch.run(rt)
    r = get(any_db, first)
    assert r.status == "wait" and r.error.startswith("held: collapse window")
    assert r.attempts == 0 and sandbox.accepted == []
    created = r.created_at
    assert abs((r.send_at - (created + timedelta(seconds=60))).total_seconds()) < 0.01
    second = insert_sql(any_db, template="order_burst", openid="oA", params=GOOD,
                        collapse_key="k")
    past(any_db, first, seconds=61)  # the first's window has passed, the second's not
    with any_db.connection_context():
        dispatch.run(rt)
    assert get(any_db, first).error == f"superseded by #{second}"
    assert get(any_db, second).status == "wait" and sandbox.accepted == []
    past(any_db, second, seconds=61)
    with any_db.connection_context():
        dispatch.run(rt)
    assert get(any_db, second).status == "success" and len(sandbox.accepted) == 1


def test_a_row_already_sending_is_not_recalled_and_the_newer_one_follows(
        any_db, sandbox, runtime_factory, tmp_path):
    rt = runtime(runtime_factory, any_db, sandbox, tmp_path)
    older = insert_sql(any_db, template="order_status", openid="oA", params=GOOD,
                       collapse_key="k", status="sending", claimed_by="other-daemon")
    newer = insert_sql(any_db, template="order_status", openid="oA", params=GOOD,
                       collapse_key="k")
    with any_db.connection_context():
        dispatch.run(rt)
    assert get(any_db, older).status == "sending"
    assert get(any_db, newer).status == "success"


def test_an_older_row_retried_after_its_newer_one_was_sent_is_superseded(
        any_db, sandbox, runtime_factory, tmp_path):
    """Newest wins also when the older row comes due later (a retry back-off)."""
    rt = runtime(runtime_factory, any_db, sandbox, tmp_path)
    older = insert_sql(any_db, template="order_status", openid="oA", params=GOOD,
                       collapse_key="k")
    newer = insert_sql(any_db, template="order_status", openid="oA", params=GOOD,
                       collapse_key="k", status="success")
    with any_db.connection_context():
        dispatch.run(rt)
    assert get(any_db, older).error == f"superseded by #{newer}"
    assert sandbox.accepted == []


def test_null_app_and_default_app_are_one_app_for_the_key(any_db, sandbox, runtime_factory,
                                                          tmp_path):
    rt = runtime(runtime_factory, any_db, sandbox, tmp_path)
    older = insert_sql(any_db, template="order_status", openid="oA", params=GOOD,
                       collapse_key="k")
    newer = insert_sql(any_db, template="order_status", openid="oA", params=GOOD,
                       collapse_key="k", app="default")
    with any_db.connection_context():
        dispatch.run(rt)
    assert get(any_db, older).status == "cancelled"
    assert get(any_db, newer).status == "success"


def test_a_superseded_row_never_falls_back(any_db, sandbox, runtime_factory, tmp_path):
    rt = runtime(runtime_factory, any_db, sandbox, tmp_path,
                 order_chain={"fallback": ["order_status"], "fallback_on": [43101, "capped"]})
    older = insert_sql(any_db, template="order_chain", openid="oA", params=GOOD,
                       collapse_key="k")
    newer = insert_sql(any_db, template="order_chain", openid="oA", params=GOOD,
                       collapse_key="k")
    with any_db.connection_context():
        dispatch.run(rt)
        hops = MsgList.select().where(MsgList.parent_id == older).count()
    assert get(any_db, older).status == "cancelled" and hops == 0
    assert get(any_db, newer).status == "success"


# ------------------------------------------------------------------ hostile keys


def test_an_over_long_collapse_key_is_refused_at_insert(any_db):
    insert_sql(any_db, template="order_status", openid="o", collapse_key="k" * 128)
    with pytest.raises(DatabaseError):
        with any_db.atomic():
            insert_sql(any_db, template="order_status", openid="o", collapse_key="k" * 129)


def test_mysql_non_strict_mode_refuses_an_over_long_key_and_keeps_a_number(
        any_db, sandbox, runtime_factory, tmp_path):
    if dialect_of(any_db) != "mysql":
        pytest.skip("MySQL's sql_mode")
    rt = runtime(runtime_factory, any_db, sandbox, tmp_path)
    with any_db.connection_context():
        any_db.execute_sql("SET SESSION sql_mode = ''")
        with pytest.raises(DatabaseError):  # not cut to fit: the CHECK refuses it
            insert_sql(any_db, template="order_status", openid="o", collapse_key="k" * 300)
        number = any_db.execute_sql(
            "INSERT INTO msg_list (template, openid, params, collapse_key) "
            f"VALUES ('order_status', 'oN', '{GOOD}', 12345)").lastrowid
        odd = any_db.execute_sql(
            "INSERT INTO msg_list (template, openid, params, collapse_key) "
            f"VALUES ('order_status', 'oX', '{GOOD}', X'FF')").lastrowid
        any_db.execute_sql("SET SESSION sql_mode = DEFAULT")
        plain = insert_sql(any_db, template="order_status", openid="oP", params=GOOD)
        dispatch.run(rt)
    assert get(any_db, number).collapse_key == "12345"
    # each row costs itself alone: none of them stops another
    assert {get(any_db, i).status for i in (number, odd, plain)} == {"success"}


def test_sqlite_a_key_that_is_not_text_fails_that_row_alone(db, sandbox, runtime_factory,
                                                             tmp_path):
    rt = runtime(runtime_factory, db, sandbox, tmp_path)
    with db.connection_context():
        with pytest.raises(DatabaseError):  # a blob: refused by the CHECK
            db.execute_sql("INSERT INTO msg_list (template, openid, collapse_key) "
                           "VALUES ('order_status', 'o', X'FF00')")
        # text that is not UTF-8 passes the CHECK; the claim fails that row alone
        bad = db.execute_sql("INSERT INTO msg_list (template, openid, params, collapse_key) "
                             f"VALUES ('order_status', 'oB', '{GOOD}', CAST(X'FF' AS TEXT))"
                             ).lastrowid
    good = insert_sql(db, template="order_status", openid="oG", params=GOOD, collapse_key="k")
    with db.connection_context():
        dispatch.run(rt)
    r = get(db, bad)
    assert r.status == "fail" and "collapse_key" in r.error and "UTF-8" in r.error
    assert get(db, good).status == "success"


# ------------------------------------------------------------------ send windows


def _row(**kw) -> Row:
    base = dict(id=1, attempts=1, template="t", app=None, openid="o", phone=None, params="[]",
                page=None, priority=0, send_at=datetime(2026, 1, 1, tzinfo=UTC),
                expire_at=None, dedup_key=None, errcode=None, error=None, parent_id=None,
                status="sending", claimed_by="d", lease_until=None, updated_at=None,
                collapse_key=None)
    base.update(kw)
    return Row(**base)  # type: ignore[arg-type]


def _tpl(tmp_path: Path, **keys):
    return load_templates(write_templates(tmp_path, t=keys)).templates["t"]


@pytest.mark.parametrize("now, zone, opens", [
    # 21:00-09:00 in Shanghai (+08:00): 12:00 local is closed, opens 21:00 local = 13:00 UTC
    ("2026-03-01 04:00", "Asia/Shanghai", "2026-03-01 13:00"),
    # 22:30 local: open (after the start, before midnight)
    ("2026-03-01 14:30", "Asia/Shanghai", None),
    # 08:59 local the next morning: still open (across midnight)
    ("2026-03-02 00:59", "Asia/Shanghai", None),
    # 09:00 local: closed from here; opens tonight at 21:00
    ("2026-03-02 01:00", "Asia/Shanghai", "2026-03-02 13:00"),
    # New York (-05:00 in winter): 12:00 local is 17:00 UTC; opens 21:00 local = 02:00 UTC
    ("2026-01-15 17:00", "America/New_York", "2026-01-16 02:00"),
    # the day New York moves to summer time (-04:00): opens 21:00 EDT = 01:00 UTC
    ("2026-03-08 17:00", "America/New_York", "2026-03-09 01:00"),
])
def test_a_row_outside_its_window_waits_for_the_opening(tmp_path, now, zone, opens):
    tpl = _tpl(tmp_path, send_window="21:00-09:00")
    at = datetime.fromisoformat(now).replace(tzinfo=UTC)
    decision = spend.timing(_row(), tpl, at, zone)
    if opens is None:
        assert decision is None
    else:
        assert isinstance(decision, spend.Hold)
        assert decision.until == datetime.fromisoformat(opens).replace(tzinfo=UTC)
        assert "21:00-09:00" in decision.error and zone in decision.error


def test_a_day_window_waits_to_the_next_morning(tmp_path):
    tpl = _tpl(tmp_path, send_window="09:00-21:00")
    at = datetime(2026, 3, 1, 14, 0, tzinfo=UTC)  # 22:00 in Shanghai
    decision = spend.timing(_row(), tpl, at, "Asia/Shanghai")
    assert isinstance(decision, spend.Hold)
    assert decision.until == datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # 09:00 tomorrow


def test_expire_at_before_the_window_opens_fails_the_row_expired(tmp_path):
    tpl = _tpl(tmp_path, send_window="21:00-09:00")
    at = datetime(2026, 3, 1, 4, 0, tzinfo=UTC)
    decision = spend.timing(_row(expire_at=at + timedelta(hours=2)), tpl, at, "Asia/Shanghai")
    assert isinstance(decision, spend.Fail) and decision.error.startswith("expired")
    assert decision.reason_code is None
    later = spend.timing(_row(expire_at=at + timedelta(hours=10)), tpl, at, "Asia/Shanghai")
    assert isinstance(later, spend.Hold)


def test_dispatch_moves_a_row_outside_its_window_to_the_opening(any_db, sandbox,
                                                                runtime_factory, tmp_path):
    now = datetime.now(UTC)
    local = now.astimezone(spending.zone("Europe/Berlin"))
    start = (local + timedelta(hours=2)).strftime("%H:%M")
    end = (local + timedelta(hours=4)).strftime("%H:%M")
    rt = runtime_factory(any_db, sandbox, timezone="Europe/Berlin",
                         templates=str(write_templates(
                             tmp_path, order_night={"send_window": f"{start}-{end}"})))
    rid = insert_sql(any_db, template="order_night", openid="oA", params=GOOD)
    with any_db.connection_context():
        dispatch.run(rt)
    r = get(any_db, rid)
    want = spending.parse_window(f"{start}-{end}").next_opening(
        datetime.now(UTC), spending.zone("Europe/Berlin"))
    assert r.status == "wait" and r.attempts == 0 and sandbox.accepted == []
    assert abs((r.send_at - want).total_seconds()) < 1
    assert r.error.startswith("held: send window") and "Europe/Berlin" in r.error
    assert [k for k, _ in history(any_db, rid)] == ["claim", "hold"]


# ------------------------------------------------------------------ per-user caps


def _utc(at: datetime) -> datetime:
    """A stamp read back from any engine as an aware UTC datetime."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _sent(db, openid: str, template: str, ago: timedelta) -> int:
    at = datetime.now(UTC) - ago
    d = dialect_of(db)
    stamp = at if d == "postgres" else at.replace(tzinfo=None).isoformat(sep=" ")
    return insert_sql(db, template=template, openid=openid, params=GOOD, status="success",
                      sent_at=stamp, attempts=1)


def test_a_cap_of_two_a_day_lets_two_through_and_holds_the_third(any_db, sandbox,
                                                                 runtime_factory, tmp_path):
    rt = runtime(runtime_factory, any_db, sandbox, tmp_path,
                 order_capped={"per_user": {"max": 2, "per": "1d"}})
    ids = [insert_sql(any_db, template="order_capped", openid="oA", params=GOOD)
           for _ in range(3)]
    with any_db.connection_context():
        dispatch.run(rt)
    assert [get(any_db, i).status for i in ids] == ["success", "success", "wait"]
    third = get(any_db, ids[2])
    assert third.error.startswith("held: capped") and third.attempts == 0
    # behind this run's own sends, which might still fail: it looks again in a minute
    held_at = datetime.now(UTC)
    assert abs((_utc(third.send_at) - (held_at + spend.CAP_RECHECK)).total_seconds()) < 5
    # a minute on, both were delivered: it waits until the first leaves the window
    later = held_at + spend.CAP_RECHECK + timedelta(seconds=5)
    with any_db.connection_context():
        dispatch.run(rt, now=lambda: later)
    third = get(any_db, ids[2])
    first_sent = _utc(get(any_db, ids[0]).sent_at)
    assert third.status == "wait" and third.attempts == 0
    assert abs((_utc(third.send_at) - (first_sent + timedelta(days=1))).total_seconds()) < 5


def test_a_row_capped_behind_sends_that_then_fail_goes_at_the_next_look(
        any_db, sandbox, runtime_factory, tmp_path):
    """The cap counts this run's own sends before they are answered; when they fail, the
    row held behind them is not kept waiting for a whole window."""
    rt = runtime(runtime_factory, any_db, sandbox, tmp_path,
                 order_capped={"per_user": {"max": 2, "per": "1d"}})
    sandbox.inject(40003, times=2, openid="oA")  # invalid openid: the first two fail
    ids = [insert_sql(any_db, template="order_capped", openid="oA", params=GOOD)
           for _ in range(3)]
    with any_db.connection_context():
        dispatch.run(rt)
    assert [get(any_db, i).status for i in ids] == ["fail", "fail", "wait"]
    later = datetime.now(UTC) + spend.CAP_RECHECK + timedelta(seconds=5)
    with any_db.connection_context():
        dispatch.run(rt, now=lambda: later)
    assert get(any_db, ids[2]).status == "success"


def test_a_capped_row_waits_until_the_oldest_counted_send_leaves_the_window(
        any_db, sandbox, runtime_factory, tmp_path):
    rt = runtime(runtime_factory, any_db, sandbox, tmp_path,
                 order_capped={"per_user": {"max": 2, "per": "1d"}})
    oldest = _sent(any_db, "oA", "order_capped", timedelta(hours=20))
    _sent(any_db, "oA", "order_capped", timedelta(hours=10))
    _sent(any_db, "oA", "order_capped", timedelta(hours=30))  # outside the window
    _sent(any_db, "oB", "order_capped", timedelta(hours=1))  # another user
    rid = insert_sql(any_db, template="order_capped", openid="oA", params=GOOD)
    other = insert_sql(any_db, template="order_capped", openid="oB", params=GOOD)
    with any_db.connection_context():
        dispatch.run(rt)
    r = get(any_db, rid)
    assert r.status == "wait"
    assert r.send_at == get(any_db, oldest).sent_at + timedelta(days=1)
    assert get(any_db, other).status == "success"


def test_on_cap_fail_fails_the_row_and_a_chain_naming_capped_falls_back(
        any_db, sandbox, runtime_factory, tmp_path):
    rt = runtime(runtime_factory, any_db, sandbox, tmp_path,
                 order_strict={"per_user": {"max": 1, "per": "1h"}, "on_cap": "fail",
                               "cap_group": "orders"},
                 order_strict2={"per_user": {"max": 1, "per": "1h"}, "on_cap": "fail",
                                "cap_group": "orders", "fallback": ["order_status"],
                                "fallback_on": ["capped"]})
    _sent(any_db, "oA", "order_strict", timedelta(minutes=5))
    plain = insert_sql(any_db, template="order_strict", openid="oA", params=GOOD)
    chained = insert_sql(any_db, template="order_strict2", openid="oA", params=GOOD)
    with any_db.connection_context():
        dispatch.run(rt)
        hop = MsgList.select().where(MsgList.parent_id == chained).first()
        plain_hops = MsgList.select().where(MsgList.parent_id == plain).count()
    assert get(any_db, plain).status == "fail"
    assert get(any_db, plain).error.startswith("capped: ")
    assert get(any_db, chained).status == "fail" and plain_hops == 0
    assert hop is not None and hop.template == "order_status"


def test_across_daemons_a_send_in_flight_elsewhere_counts_against_the_cap(any_db, tmp_path):
    """Another daemon's row in `sending` counts (it may be delivered this instant): the
    row waits a short while and looks again, never over the cap."""
    tset = load_templates(write_templates(tmp_path, t={"per_user": {"max": 1, "per": "1d"}}))
    elsewhere = insert_sql(any_db, template="t", openid="oA", status="sending",
                           claimed_by="daemon-b")
    mine = insert_sql(any_db, template="t", openid="oA")
    now = datetime.now(UTC)
    ask = spend.Ask(_row(id=mine, template="t"), tset.templates["t"], "default", "oA")
    with any_db.connection_context():
        [decision] = spend.decide(any_db, tset, [ask], now, "Asia/Shanghai")
        assert isinstance(decision, spend.Hold) and decision.until == now + spend.CAP_RECHECK
        # once daemon b's send failed, the row goes
        MsgList.update(status="fail").where(MsgList.id == elsewhere).execute()
        assert spend.decide(any_db, tset, [ask], now, "Asia/Shanghai") == [None]


# ------------------------------------------------------------------ check


@pytest.mark.parametrize("keys, message", [
    ({"collapse_window": "2h"}, "at most 1h"),
    ({"collapse_window": "soon"}, "not a duration"),
    ({"send_window": "21:00-25:00"}, "is not a window"),
    ({"send_window": 2100}, "quote it"),
    ({"send_window": "09:00-09:00"}, "same minute"),
    ({"per_user": {"max": 0, "per": "1d"}}, "from 1 to"),
    ({"per_user": {"max": 2}}, "exactly max and per"),
    ({"per_user": {"max": 2, "per": "forever"}}, "not a duration"),
    ({"per_user": {"max": 2, "per": "1d"}, "on_cap": "drop"}, "wait or fail"),
    ({"cap_group": "orders"}, "needs per_user"),
    ({"per_user": {"max": 2, "per": "1d"}, "cap_group": "Bad Name"}, "not a group name"),
])
def test_check_names_each_bad_spending_key(tmp_path, keys, message):
    with pytest.raises(TemplateError) as info:
        load_templates(write_templates(tmp_path, t=keys))
    assert message in str(info.value)


def test_check_refuses_a_group_with_two_caps(tmp_path):
    with pytest.raises(TemplateError, match="same per_user"):
        load_templates(write_templates(
            tmp_path, a={"per_user": {"max": 2, "per": "1d"}, "cap_group": "g"},
            b={"per_user": {"max": 3, "per": "1d"}, "cap_group": "g"}))


@pytest.mark.parametrize("name", ["Mars/Olympus", "../etc/passwd", "", 8])
def test_a_bad_timezone_is_a_config_error(tmp_path, name):
    from config import ConfigError, config_from_dict
    from tests.support import config_data

    with pytest.raises(ConfigError, match="timezone"):
        config_from_dict(config_data(folder=tmp_path, timezone=name), base_dir=tmp_path,
                         env={})


# ------------------------------------------------------------------ upgrades

FIXTURES = ROOT / "tests" / "fixtures"


def _make(db, folder: str, versions: tuple[int, ...]) -> None:
    with db.connection_context():
        for stmt in split_statements((FIXTURES / folder / f"{dialect_of(db)}.sql").read_text()):
            db.execute_sql(stmt)
        for version in versions:
            db.execute_sql(f"INSERT INTO herald_schema (version, description) VALUES "
                           f"({version}, 'v{version}')")


@pytest.mark.parametrize("folder, versions", [
    ("schema_v2", (1, 2)),  # the previous release
    ("schema_v3_early", (1, 2, 3)),  # version 3 as built before collapse_key joined it
])
def test_upgrade_adds_collapse_key_and_the_collapse_works(any_db_url, sandbox, runtime_factory,
                                                         tmp_path, folder, versions):
    db = connect(any_db_url)
    _make(db, folder, versions)
    rid = insert_sql(db, template="order_status", openid="o1", params=GOOD)
    before = state(db)
    assert not before.up_to_date
    if folder == "schema_v3_early":
        assert before.missing == ("collapse_key",) and "collapse_key" in before.describe()
        assert "collapse_key" in ensure_current(db)
    else:
        init_schema(db)
    assert state(db).up_to_date and init_schema(db) == []  # and again: harmless
    with db.connection_context():
        desc = db.execute_sql("SELECT description FROM herald_schema WHERE version = 3"
                              ).fetchone()[0]
    assert "collapse" in desc and VERSION == 3
    older = insert_sql(db, template="order_status", openid="o2", params=GOOD, collapse_key="k")
    newer = insert_sql(db, template="order_status", openid="o2", params=GOOD, collapse_key="k")
    with pytest.raises(DatabaseError):
        with db.atomic():
            insert_sql(db, template="order_status", openid="o", collapse_key="k" * 129)
    rt = runtime_factory(db, sandbox, db_url=any_db_url)
    with db.connection_context():
        dispatch.run(rt)
    assert get(db, rid).status == "success" and get(db, newer).status == "success"
    assert get(db, older).error == f"superseded by #{newer}"


# ------------------------------------------------------------------ status and metrics


def test_status_and_metrics_count_superseded_and_held_rows(any_db, sandbox, runtime_factory,
                                                           tmp_path):
    from commands.status import gather, lines
    from metrics import TruthCollector

    now = datetime.now(UTC)
    local = now.astimezone(spending.zone("Asia/Shanghai"))
    closed = f"{(local + timedelta(hours=2)):%H:%M}-{(local + timedelta(hours=3)):%H:%M}"
    rt = runtime(runtime_factory, any_db, sandbox, tmp_path,
                 order_night={"send_window": closed},
                 order_capped={"per_user": {"max": 1, "per": "1d"}})
    for _ in range(3):
        insert_sql(any_db, template="order_status", openid="oA", params=GOOD, collapse_key="k")
    insert_sql(any_db, template="order_night", openid="oB", params=GOOD)
    insert_sql(any_db, template="order_capped", openid="oC", params=GOOD)
    insert_sql(any_db, template="order_capped", openid="oC", params=GOOD)
    with any_db.connection_context():
        dispatch.run(rt)
        report = gather(any_db, rt.config, datetime.now(UTC))
        families = {m.name: m for m in TruthCollector(any_db, missing_after=3600).collect()}
    assert report["superseded"] == 2
    assert (report["open"]["held_window"], report["open"]["held_cap"]) == (1, 1)
    assert report["open"]["held_grant"] == 0
    text = "\n".join(lines(report, datetime.now(UTC)))
    assert "2 superseded by a newer row" in text and "1 waiting for a send window" in text
    assert families["herald_rows_superseded"].samples[0].value == 2
    held = {s.labels["reason"]: s.value for s in families["herald_rows_spending_held"].samples}
    assert held == {"send_window": 1, "collapse_window": 0, "capped": 1}


def test_render_says_what_would_hold_a_row(tmp_path):
    import subprocess
    import sys

    from tests.support import clean_env, write_config

    tpl = write_templates(tmp_path, order_capped={"per_user": {"max": 1, "per": "1d"}},
                          order_closed={"send_window": "00:00-00:01"})
    cfg = write_config(tmp_path, templates=str(tpl), timezone="UTC")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "scheduler.py"), "--config",
                               str(cfg), *args], cwd=ROOT, env=clean_env(),
                              capture_output=True, text=True, timeout=60)

    assert cli("init-db").returncode == 0
    db = connect(f"sqlite:///{tmp_path / 'herald.db'}")
    older = insert_sql(db, template="order_status", openid="oA", params=GOOD, collapse_key="k")
    newer = insert_sql(db, template="order_status", openid="oA", params=GOOD, collapse_key="k")
    _sent(db, "oC", "order_capped", timedelta(hours=1))
    capped = insert_sql(db, template="order_capped", openid="oC", params=GOOD)
    res = cli("render", str(older))
    assert res.returncode == 0 and f"superseded by #{newer}" in res.stdout
    assert "note:" not in cli("render", str(newer)).stdout
    res = cli("render", str(capped))
    assert "would wait until" in res.stdout and "held: capped" in res.stdout
    res = cli("render", "--template", "order_closed", "--openid", "o", "--params", GOOD)
    if datetime.now(UTC).strftime("%H:%M") != "00:00":
        assert "would wait until the window opens" in res.stdout


def test_console_overview_shows_the_spending_counts(db):
    import re

    from web.console.overview import take
    from web.console.render import Renderer

    for _ in range(3):
        insert_sql(db, template="order_status", openid="oA", collapse_key="k",
                   status="cancelled", error="superseded by #9")
    insert_sql(db, template="order_status", openid="oB", error="held: send window 21:00-09:00")
    insert_sql(db, template="order_status", openid="oB", error="held: no grant (reject)")
    with db.connection_context():
        snap = take(db, datetime.now(UTC), missing_after=1800)
    assert snap.spending == {"superseded": 3, "send_window": 1, "collapse_window": 0,
                             "capped": 0}
    text = Renderer().page("overview.html", snap=snap, chart="", statuses=list(snap.totals),
                           user="u", role="viewer", operator=False, csrf="", flash=[],
                           path="/", title="Overview")
    found = dict(re.findall(r'data-count="(\w+)">([^<]*)<', text))
    assert (found["superseded"], found["send_window"], found["capped"]) == ("3", "1", "0")


def test_a_backlog_where_half_the_rows_collapse_drains_in_one_run(any_db, sandbox,
                                                                  runtime_factory, tmp_path):
    """A claim that took a full batch says a backlog is there, even when the collapse
    cancelled half of it (else the rest would wait for the next poll)."""
    rt = runtime_factory(any_db, sandbox, dispatch={"batch_size": 10})
    for i in range(40):
        insert_sql(any_db, template="order_status", openid=f"o{i // 2}", params=GOOD,
                   collapse_key=f"order:{i // 2}")
    with any_db.connection_context():
        stats = dispatch.run(rt)
        left = MsgList.select().where(MsgList.status.in_(("wait", "sending"))).count()
        cancelled = MsgList.select().where(MsgList.status == "cancelled").count()
    assert (left, cancelled, stats.sent, len(sandbox.accepted)) == (0, 20, 20, 20)


def test_two_daemons_at_once_never_send_over_a_cap(any_db, any_db_url, sandbox,
                                                   runtime_factory, tmp_path):
    """Two daemons on one database claim rows of one user at the same moment: the cap of
    one holds across them (each counts the other's row in flight)."""
    import threading

    path = str(write_templates(tmp_path, order_once={"per_user": {"max": 1, "per": "1d"}}))
    daemons = [runtime_factory(any_db, sandbox, templates=path, db_url=any_db_url,
                               dispatch={"batch_size": 1})
               for _ in range(2)]
    for i, rt in enumerate(daemons):
        rt.daemon_id = f"daemon-{i}"
    for _ in range(6):
        insert_sql(any_db, template="order_once", openid="oA", params=GOOD)
    go = threading.Barrier(2)
    errors: list[BaseException] = []

    def daemon(rt) -> None:
        try:
            go.wait(timeout=10)
            with rt.db.connection_context():
                for _ in range(3):
                    dispatch.run(rt)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    if dialect_of(any_db) != "sqlite":
        # each daemon its own connection pool, as two processes would have
        for rt in daemons:
            rt.db = connect(any_db_url)
    threads = [threading.Thread(target=daemon, args=(rt,)) for rt in daemons]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    with any_db.connection_context():
        sent = MsgList.select().where(MsgList.status == "success").count()
        held = MsgList.select().where(MsgList.error.startswith("held: capped")).count()
    # never over the cap; when both decided at the same moment, both may wait (each saw
    # the other's row in flight) and look again after CAP_RECHECK
    assert sent <= 1 and len(sandbox.accepted) == sent and held == 6 - sent


def test_with_grant_holds_a_capped_user_without_a_grant_is_held_for_the_grant_alone(
        any_db, sandbox, runtime_factory, tmp_path):
    """grants.on_missing: hold and a cap together: a row the ledger holds is not a send,
    so it spends nothing of the cap, and the other user's rows go."""
    tid = BASE["template_id"]
    rt = runtime_factory(any_db, sandbox, grants={"on_missing": "hold"},
                         templates=str(write_templates(
                             tmp_path, order_capped={"per_user": {"max": 1, "per": "1d"}})))
    insert_sql(any_db, template="order_capped", openid="oBroke", params=GOOD)
    ok = insert_sql(any_db, template="order_capped", openid="oFine", params=GOOD)
    with any_db.connection_context():
        any_db.execute_sql(
            "INSERT INTO subscribe_grant (app, openid, template_id, balance) VALUES "
            f"('default', 'oBroke', {any_db.param}, 0)", (tid,))
        dispatch.run(rt)
        broke = MsgList.get(MsgList.openid == "oBroke")
    assert broke.status == "wait" and broke.error.startswith("held: no grant")
    assert get(any_db, ok).status == "success"
    # the grant arrives: the held row goes, and the cap (nothing sent to it yet) lets it
    with any_db.connection_context():
        any_db.execute_sql("UPDATE subscribe_grant SET balance = 1")
        MsgList.update(send_at=datetime.now(UTC) - timedelta(seconds=1)).where(
            MsgList.id == broke.id).execute()
        dispatch.run(rt)
    assert get(any_db, broke.id).status == "success"
