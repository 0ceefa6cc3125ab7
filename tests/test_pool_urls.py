"""postgresql+pool:// and mysql+pool:// (db/dialects.py): they connect, claim, record,
and carry a dispatch run with on_stale: fail (send threads mark rows started on
connections of their own) through the sandbox."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from playhouse.pool import PooledDatabase

import clock
from db.claim import claim_batch
from db.connection import init_schema
from db.outcomes import Outcome, record
from jobs import dispatch
from tests.bound import connect
from tests.conftest import database_url, insert_sql, row

GOOD = '["Tea", 3, "shipped", "ok"]'


def pooled(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}+pool://{rest}"


@pytest.fixture(params=["postgres", "mysql"])
def pool_db(request: pytest.FixtureRequest, tmp_path: Path):
    url = pooled(database_url(request.param, tmp_path))
    db = connect(url)
    init_schema(db)
    yield url, db
    db.close_all()


def test_a_pool_url_opens_a_pool_and_claims_and_records(pool_db):
    url, db = pool_db
    assert isinstance(db, PooledDatabase), type(db)
    ids = [insert_sql(db, template="order_status", openid=f"o{i}", params=GOOD)
           for i in range(3)]
    t = clock.now() + timedelta(seconds=1)
    claimed = claim_batch(db, daemon_id="pooled", now=t, lease=60, limit=5)
    assert sorted(r.id for r in claimed) == ids
    outcomes = [Outcome(r.id, r.attempts, "success", 0, None, str(10**18 + r.id))
                for r in claimed]
    assert record(db, outcomes, daemon_id="pooled", now=t) == 3
    assert [row(i).msgid for i in ids] == [str(10**18 + i) for i in ids]
    db.close()  # back to the pool, not closed
    assert db._in_use == {} and len(db._connections) >= 1  # noqa: SLF001 - the pool's own
    assert row(ids[0]).status == "success"  # and a pooled connection serves the next


def test_a_dispatch_run_on_a_pool(pool_db, sandbox, runtime_factory):
    url, db = pool_db
    rt = runtime_factory(db, sandbox, db_url=url, dispatch={"on_stale": "fail", "workers": 4})
    ids = [insert_sql(db, template="order_status", openid=f"o{i}", params=GOOD)
           for i in range(12)]
    stats = dispatch.run(rt)
    assert stats.sent == 12
    assert {row(i).status for i in ids} == {"success"}
    assert sandbox.accepted_count() == 12
