"""Channels side by side in one dispatch run: one channel's quota answer holds that
channel's rows only, and a fallback on no_grant."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import clock
from db.dialects import dialect
from db.models import MsgList
from db.outcomes import upsert_grant
from jobs import dispatch
from sandbox.sms import SmsSandbox
from tests.channel_support import (
    PARAMS,
    SMS_TID,
    SUBSCRIBE_TID,
    overrides,
    with_official_account,
    write_templates,
)
from tests.conftest import insert_sql, row


@pytest.fixture
def db(any_db):
    """Rows go through every dialect (servers skip unless configured)."""
    return any_db


@pytest.fixture
def sms_sandbox() -> Iterator[SmsSandbox]:
    with SmsSandbox(templates={SMS_TID: 2}) as sb:
        yield sb


def test_an_sms_rate_limit_does_not_hold_the_apps_wechat_rows(db, sandbox, sms_sandbox,
                                                             runtime_factory, tmp_path):
    rt = runtime_factory(db, sandbox, dispatch={"workers": 1},
                         **overrides(write_templates(tmp_path), sms_sandbox.url))
    sms_sandbox.inject("LimitExceeded.PhoneNumberThirtySecondLimit")
    first = insert_sql(db, template="order_sms", openid="oA", phone="+8613800138000",
                       params=PARAMS, priority=9)
    second = insert_sql(db, template="order_status", openid="oB", params=PARAMS)
    dispatch.run(rt)
    assert row(first).status == "wait" and "per-number 30-second limit" in row(first).error
    assert row(second).status == "success"  # same app, other channel: not held
    assert len(sandbox.accepted) == 1


def test_a_wechat_daily_quota_holds_that_channels_rows_only(db, sandbox, sms_sandbox,
                                                           runtime_factory, tmp_path):
    rt = runtime_factory(db, sandbox, dispatch={"workers": 1},
                         **overrides(write_templates(tmp_path), sms_sandbox.url))
    sandbox.inject(45009)
    quota = insert_sql(db, template="order_status", openid="oA", params=PARAMS, priority=9)
    held = insert_sql(db, template="order_status", openid="oB", params=PARAMS, priority=5)
    sms = insert_sql(db, template="order_sms", openid="oC", phone="+8613800138000",
                     params=PARAMS)
    dispatch.run(rt)
    assert row(quota).status == "wait" and "next quota day" in row(quota).error
    assert row(held).status == "wait" and row(held).attempts == 0  # held, not sent
    assert row(sms).status == "success"


def test_no_grant_falls_back_to_the_next_channel(db, sandbox, sms_sandbox, runtime_factory,
                                                tmp_path):
    with_official_account(sandbox)
    rt = runtime_factory(db, sandbox, grants={"on_missing": "fail"},
                         **overrides(write_templates(tmp_path), sms_sandbox.url))
    d = dialect(db)
    with db.atomic():
        upsert_grant(d, db.cursor(), "default", "oSpent", SUBSCRIBE_TID, balance=0,
                     status=None, stamp=d.ts(clock.now()))
    rid = insert_sql(db, template="order_status", openid="oSpent", params=PARAMS)
    dispatch.run(rt)
    parent = row(rid)
    [hop] = MsgList.select().where(MsgList.parent_id == rid)
    assert parent.status == "fail" and parent.error.startswith("no grant")
    assert f"fell back to row {hop.id} (order_uniform)" in parent.error
    assert sandbox.accepted == []  # the subscribe message was never sent
    dispatch.run(rt)
    assert row(hop.id).status == "success" and len(sandbox.uniform_accepted) == 1
