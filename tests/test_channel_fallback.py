"""A fallback chain end to end on every dialect: a subscribe message the user has no
grant for (43101) falls back to a uniform message the user cannot get either (43004, not
following the account), which falls back to an SMS that is delivered."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import clock
from db.models import MsgList
from db.ops import Selection, retry
from jobs import dispatch
from sandbox.sms import SmsSandbox
from tests.channel_support import (
    PARAMS,
    SMS_TID,
    overrides,
    with_official_account,
    write_templates,
)
from tests.conftest import insert_sql

PHONE = "+8613800138000"


@pytest.fixture
def sms_sandbox() -> Iterator[SmsSandbox]:
    with SmsSandbox(templates={SMS_TID: 2}) as sb:
        yield sb


def drain(rt, rounds: int = 5) -> None:
    """Dispatch until nothing is due: each hop is a new row, claimed by the next run."""
    for _ in range(rounds):
        if dispatch.run(rt).claimed == 0:
            return


def test_subscribe_then_uniform_then_sms(any_db, sandbox, sms_sandbox, runtime_factory,
                                        tmp_path):
    with_official_account(sandbox)
    sandbox.unsubscribe("oChain")  # subscribe/send answers 43101
    sandbox.unfollow("oChain")  # uniform_send answers 43004
    rt = runtime_factory(any_db, sandbox, **overrides(write_templates(tmp_path),
                                                      sms_sandbox.url))
    root_id = insert_sql(any_db, template="order_status", openid="oChain", phone=PHONE,
                         params=PARAMS)
    drain(rt)
    root = MsgList.get_by_id(root_id)
    [uniform] = MsgList.select().where(MsgList.parent_id == root_id)
    [sms] = MsgList.select().where(MsgList.parent_id == uniform.id)
    assert MsgList.select().count() == 3

    assert (root.status, root.errcode) == ("fail", 43101)
    assert f"fell back to row {uniform.id} (order_uniform)" in root.error
    assert (uniform.template, uniform.status, uniform.errcode) == ("order_uniform", "fail",
                                                                   43004)
    assert f"fell back to row {sms.id} (order_sms)" in uniform.error
    assert (sms.template, sms.status, sms.errcode) == ("order_sms", "success", None)
    # each hop carries the row's recipient and params on, and its own send
    for hop in (uniform, sms):
        assert (hop.openid, hop.phone, hop.params, hop.app) == ("oChain", PHONE, PARAMS, None)
        assert hop.attempts == 1
    assert sms.msgid == sms_sandbox.accepted[0]["serial_no"]
    assert sms_sandbox.accepted[0]["session_context"] == str(sms.id)
    assert sandbox.accepted == [] and sandbox.uniform_accepted == []

    # an operator re-drives the failed root: it fails again, and finds its hop in place
    report = retry(any_db, Selection(ids=(root_id,)), now=clock.now())
    assert report.changed == [root_id]
    drain(rt)
    root = MsgList.get_by_id(root_id)
    assert root.status == "fail" and root.attempts == 1
    assert f"fallback row {uniform.id} (order_uniform) exists already" in root.error
    assert MsgList.select().count() == 3  # no second hop
    assert len(sms_sandbox.accepted) == 1  # and no second SMS


def test_a_delivered_hop_ends_the_chain(any_db, sandbox, sms_sandbox, runtime_factory,
                                       tmp_path):
    with_official_account(sandbox)
    sandbox.unsubscribe("oFan")  # no grant, but the user follows the account
    rt = runtime_factory(any_db, sandbox, **overrides(write_templates(tmp_path),
                                                      sms_sandbox.url))
    root_id = insert_sql(any_db, template="order_status", openid="oFan", phone=PHONE,
                         params=PARAMS)
    drain(rt)
    [uniform] = MsgList.select().where(MsgList.parent_id == root_id)
    assert uniform.status == "success"
    assert MsgList.select().count() == 2 and sms_sandbox.accepted == []


def test_an_error_outside_fallback_on_does_not_fall_back(any_db, sandbox, sms_sandbox,
                                                        runtime_factory, tmp_path):
    rt = runtime_factory(any_db, sandbox, **overrides(write_templates(tmp_path),
                                                      sms_sandbox.url))
    sandbox.inject(40003)  # invalid openid: not in the default [43101, 43107, no_grant]
    root_id = insert_sql(any_db, template="order_status", openid="oX", phone=PHONE,
                         params=PARAMS)
    drain(rt)
    root = MsgList.get_by_id(root_id)
    assert (root.status, root.errcode) == ("fail", 40003) and "fell back" not in root.error
    assert MsgList.select().count() == 1
