"""Schema version 3, the push inbox block: a database the previous release (version 2)
made upgrades in place on all three engines, from its real DDL
(tests/fixtures/schema_v2, an exact copy of that release's db/ddl), keeping the inbox:
events waiting there still apply, and the new column and table work."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from db.connection import dialect_of
from db.models import PushEvent, PushNonce, SubscribeGrant
from db.schema import VERSION, init_schema, split_statements, state
from jobs import events
from tests.bound import connect
from tests.conftest import ROOT

V2 = ROOT / "tests" / "fixtures" / "schema_v2"


def make_v2(db) -> None:
    with db.connection_context():
        for stmt in split_statements((V2 / f"{dialect_of(db)}.sql").read_text()):
            db.execute_sql(stmt)
        db.execute_sql("INSERT INTO herald_schema (version, description) VALUES (2, 'v2')")


def test_a_version_2_inbox_upgrades_and_its_events_still_apply(any_db_url) -> None:
    db = connect(any_db_url)
    make_v2(db)
    p = db.param
    with db.connection_context():
        db.execute_sql(f"INSERT INTO push_event (app, source, kind, openid, payload) VALUES "
                       f"('default', 'app', 'grant', 'oOld', {p})",
                       (json.dumps({"template_id": "T1", "result": "accept"}),))
        cols = {c.name for c in db.get_columns("push_event")}
    assert state(db).version == 2 and "next_check_at" not in cols
    assert init_schema(db) == [3] and VERSION == 3
    assert init_schema(db) == []  # twice is harmless
    with db.connection_context():
        assert "next_check_at" in {c.name for c in db.get_columns("push_event")}
        assert "push_event_due" in {i.name for i in db.get_indexes("push_event")}
        [old] = list(PushEvent.select())
        assert old.next_check_at is None and old.applied_at is None
        done = events.apply_pending(db, now=datetime.now(UTC))
        assert done.grants == 1
        assert SubscribeGrant.get(SubscribeGrant.openid == "oOld").balance == 1
        PushNonce.insert(app="plain", ts=1, nonce="n", body_hash="0" * 64).execute()
        row = db.execute_sql("SELECT description FROM herald_schema WHERE version = 3"
                             ).fetchone()
    assert row and "push_nonce" in row[0]
    db.close()
