"""The grant hold (jobs/grant_hold.py) as its channel declares it: the subscribe
channel spends grants, except a long-term (长期订阅) template; its 43101 tells the
ledger that none is left; other channels spend none. And the subscribe channel's
precheck: an empty openid is the reason, said before any params problem."""

from __future__ import annotations

import pytest

import clock
from channels.base import Answer, Kind
from db.dialects import dialect
from db.models import SubscribeGrant
from db.outcomes import GrantUse, upsert_grant
from jobs import dispatch, grant_hold
from templates import RenderError, render_row
from tests.channel_support import PARAMS, SUBSCRIBE_TID, load, overrides, write_templates
from tests.conftest import insert_sql, row

LONG_TERM = f"""
order_long:
  template_id: {SUBSCRIBE_TID}
  long_term: true
  params: [goods_name, goods_price, order_status, remark]
  data:
    thing2: "{{{{ goods_name }}}}"
    amount3: "{{{{ goods_price }}}}元"
    thing11: "{{{{ order_status }}}}"
    thing5: "{{{{ remark }}}}"
"""


@pytest.fixture
def path(tmp_path):
    p = write_templates(tmp_path)
    p.write_text(p.read_text(encoding="utf-8") + LONG_TERM, encoding="utf-8")
    return p


def test_which_sends_spend_a_grant_and_what_an_answer_says_of_it(path) -> None:
    t = load(path).templates
    ok = Answer(Kind.SUCCESS, 0, "accepted", msgid="1")
    spent = Answer(Kind.PERMANENT, 43101, "43101 user has not subscribed")
    other = Answer(Kind.PERMANENT, 40003, "40003 invalid openid")
    sub = t["order_status"]
    assert grant_hold.grant_use("default", "oU", sub, ok) == GrantUse(
        "default", "oU", SUBSCRIBE_TID, used=True)
    assert grant_hold.grant_use("default", "oU", sub, spent) == GrantUse(
        "default", "oU", SUBSCRIBE_TID, used=False)
    assert grant_hold.grant_use("default", "oU", sub, other) is None
    for name in ("order_long", "order_uniform", "order_oa", "order_sms", "order_hook"):
        assert grant_hold.grant_use("default", "oU", t[name], ok) is None, name
        assert grant_hold.grant_use("default", "oU", t[name], spent) is None, name


def _spent(db, openid: str) -> None:
    d = dialect(db)
    with db.atomic():
        upsert_grant(d, db.cursor(), "default", openid, SUBSCRIBE_TID, balance=0,
                     status=None, stamp=d.ts(clock.now()))


def test_a_long_term_template_is_sent_to_a_user_with_no_grant_left(
        db, sandbox, runtime_factory, path) -> None:
    rt = runtime_factory(db, sandbox, grants={"on_missing": "fail"},
                         **overrides(path))
    _spent(db, "oSpent")
    long_term = insert_sql(db, template="order_long", openid="oSpent", params=PARAMS)
    one_time = insert_sql(db, template="order_status", openid="oSpent", params=PARAMS)
    dispatch.run(rt)
    assert row(long_term).status == "success"
    assert row(one_time).status == "fail" and row(one_time).error.startswith("no grant")


def test_a_43101_answer_leaves_the_user_no_grant(db, sandbox, runtime_factory, path) -> None:
    rt = runtime_factory(db, sandbox, **overrides(path))
    sandbox.inject(43101)
    rid = insert_sql(db, template="order_status", openid="oNew", params=PARAMS)
    dispatch.run(rt)
    assert (row(rid).status, row(rid).errcode) == ("fail", 43101)
    [g] = SubscribeGrant.select().where(SubscribeGrant.openid == "oNew")
    assert (g.template_id, g.balance) == (SUBSCRIBE_TID, 0)


def test_an_empty_openid_is_the_reason_before_any_params_problem(path) -> None:
    tset = load(path)
    with pytest.raises(RenderError) as exc:
        render_row(tset, template="order_status", openid=" ", params="not json")
    assert exc.value.reason == "openid is empty"
    # a channel that needs no openid says what is wrong with the params instead
    with pytest.raises(RenderError) as exc:
        render_row(tset, template="order_hook", openid=" ", params="not json")
    assert exc.value.reason.startswith("params is not valid JSON")
