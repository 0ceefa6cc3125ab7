"""A claim parses each distinct timestamp once for all its rows (db/decode.py): every
row must still get its own send_at and expire_at, and the claim's lease_until."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from db.claim import claim_batch
from db.decode import Row
from tests.conftest import insert_sql


def test_each_claimed_row_keeps_its_own_times(any_db) -> None:
    base = datetime(2020, 1, 1, 12, 0, tzinfo=UTC)
    wanted = {}
    with any_db.connection_context():
        for i in range(6):
            send_at = base + timedelta(minutes=i % 3)  # three rows share each send_at
            expire_at = datetime(2037, 1, 1, tzinfo=UTC) + timedelta(hours=i)  # MySQL: < 2038
            rid = insert_sql(any_db, template="order_status", openid=f"o{i}",
                             send_at=send_at.strftime("%Y-%m-%d %H:%M:%S"),
                             expire_at=expire_at.strftime("%Y-%m-%d %H:%M:%S"))
            wanted[rid] = (send_at, expire_at)
    now = datetime.now(UTC).replace(microsecond=0)
    with any_db.connection_context():
        claimed = claim_batch(any_db, daemon_id="d", now=now, lease=60, limit=10)
    rows = [r for r in claimed if isinstance(r, Row)]
    assert len(rows) == len(claimed) == 6
    assert {r.id: (r.send_at, r.expire_at) for r in rows} == wanted
    assert {r.lease_until for r in rows} == {now + timedelta(seconds=60)}
