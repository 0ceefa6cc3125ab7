"""The reference DDL (db/ddl/<dialect>.sql) against the models and the public contract.

Applications write msg_list with plain SQL, so what matters is what the database
itself does: server defaults, the status CHECK, the dedup_key UNIQUE, UTC times.
Each test runs on SQLite, and on PostgreSQL and MySQL/MariaDB when their URLs are set.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import pytest
from peewee import (
    BigAutoField,
    BigIntegerField,
    CharField,
    Database,
    DatabaseError,
    IntegerField,
    IntegrityError,
    TextField,
)

from db.connection import ddl_text, dialect_of, init_schema, split_statements
from db.models import STATUSES, TABLES, MsgList, UTCDateTimeField
from tests.bound import connect
from tests.conftest import ROOT, database_url, insert_sql

# the columns an INSERT must give (msg_list: the only two an application must give)
REQUIRED = {"msg_list": {"template", "openid"}, "access_token": set(), "push_event": {"kind"},
            "subscribe_grant": {"app", "openid", "template_id"}, "msg_event": {"msg_id", "kind"},
            "herald_daemon": {"role", "host", "pid", "version"}, "herald_schema": set(),
            # version 3, the push inbox: written by the receiver only
            "push_nonce": {"app", "ts", "nonce", "body_hash"},
            "quota_hold": {"app", "channel", "set_by"}}


def columns(db: Database, table: str) -> dict:
    with db.connection_context():
        return {c.name: c for c in db.get_columns(table)}


def column_types(db: Database, table: str) -> dict[str, str]:
    """Column name -> declared type, lower case, with length: 'varchar(32)', 'text'..."""
    dialect = dialect_of(db)
    with db.connection_context():
        if dialect == "sqlite":
            rows = db.execute_sql(f'PRAGMA table_info("{table}")').fetchall()
            return {r[1]: r[2].lower() for r in rows}
        if dialect == "mysql":
            sql = ("SELECT column_name, column_type FROM information_schema.columns "
                   "WHERE table_schema = DATABASE() AND table_name = %s")
        else:
            sql = ("SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) "
                   "FROM pg_catalog.pg_attribute a WHERE a.attrelid = %s::regclass "
                   "AND a.attnum > 0 AND NOT a.attisdropped")
        return {name: typ.lower() for name, typ in db.execute_sql(sql, (table,)).fetchall()}


EXPECTED_TYPES = {
    # field class -> per-dialect declared type; "{n}" is the field's max_length
    "sqlite": {"id": "integer", CharField: "varchar({n})", TextField: "text",
               IntegerField: "integer", BigIntegerField: "bigint",
               UTCDateTimeField: "datetime"},
    "postgres": {"id": "bigint", CharField: "character varying({n})", TextField: "text",
                 IntegerField: "integer", BigIntegerField: "bigint",
                 UTCDateTimeField: "timestamp with time zone"},
    "mysql": {"id": "bigint(20)", CharField: "varchar({n})", TextField: "text",
              IntegerField: "int(11)", BigIntegerField: "bigint(20)",
              UTCDateTimeField: "timestamp(6)"},
}


# MySQL's collapse_key is wider than the 128 characters allowed, with a CHECK: with
# sql_mode = '' a VARCHAR(128) would cut a longer key silently (db/ddl/mysql.sql)
WIDER = {("mysql", "msg_list", "collapse_key"): "varchar(255)"}


def expected_type(dialect: str, field) -> str:
    table = EXPECTED_TYPES[dialect]
    if isinstance(field, BigAutoField):
        return table["id"]
    for cls in (UTCDateTimeField, CharField, TextField, BigIntegerField, IntegerField):
        if isinstance(field, cls):
            return table[cls].format(n=getattr(field, "max_length", ""))
    raise AssertionError(f"no expected type for {field}")


@pytest.mark.parametrize("model", TABLES, ids=lambda m: m._meta.table_name)
def test_columns_match_the_models(any_db, model):
    dialect = dialect_of(any_db)
    table = model._meta.table_name
    cols = columns(any_db, table)
    fields = model._meta.sorted_fields
    assert list(cols) == [f.column_name for f in fields]
    types = column_types(any_db, table)
    for f in fields:
        col = cols[f.column_name]
        want = WIDER.get((dialect, table, f.column_name)) or expected_type(dialect, f)
        # MySQL 8 drops display widths (bigint, int); MariaDB keeps them
        assert types[f.column_name] in (want, want.split("(")[0] if "int" in want else want), (
            f"{table}.{f.column_name}: {types[f.column_name]} != {want}")
        if f.primary_key:
            assert col.primary_key, f.column_name
            continue  # SQLite reports an INTEGER PRIMARY KEY as nullable
        assert col.null == f.null, f"{table}.{f.column_name}: nullable {col.null} != {f.null}"
        if f.null:
            assert col.default in (None, "NULL"), f"{table}.{f.column_name}: {col.default}"
        elif f.column_name not in REQUIRED[table]:
            assert col.default is not None, f"{table}.{f.column_name} has no server default"
        else:
            assert col.default is None, f"{table}.{f.column_name} must be required"


def test_insert_with_only_template_and_openid_gets_every_default(any_db):
    before = datetime.now(UTC)
    row_id = insert_sql(any_db, template="order_status", openid="oUser")
    with any_db.connection_context():
        row = MsgList.get_by_id(row_id)
    assert (row.status, row.priority, row.attempts, row.params) == ("wait", 0, 0, "[]")
    for name in ("app", "page", "expire_at", "dedup_key", "sent_at", "claimed_by",
                 "lease_until", "errcode", "error", "msgid"):
        assert getattr(row, name) is None, name
    for name in ("send_at", "created_at", "updated_at"):
        value = getattr(row, name)
        assert value.tzinfo is UTC, name
        # SQLite's CURRENT_TIMESTAMP has whole seconds; servers may lag the client a bit
        assert before - timedelta(seconds=5) <= value <= datetime.now(UTC) + timedelta(seconds=5), (
            name, value, before)
    assert row.id == row_id and row_id >= 1


def test_dedup_key_is_unique_exact_and_optional(any_db):
    insert_sql(any_db, template="t", openid="o", dedup_key="order-1")
    with pytest.raises(IntegrityError), any_db.connection_context():
        insert_sql(any_db, template="t", openid="o2", dedup_key="order-1")
    # exact comparison on every engine (MySQL's default collations would fold case)
    insert_sql(any_db, template="t", openid="o", dedup_key="ORDER-1")
    # NULL keys never collide
    insert_sql(any_db, template="t", openid="o")
    insert_sql(any_db, template="t", openid="o")
    with any_db.connection_context():
        assert MsgList.select().count() == 4


def test_status_check_rejects_unknown_status(any_db):
    for status in STATUSES:
        insert_sql(any_db, template="t", openid="o", status=status)
    # SQLite/PostgreSQL raise IntegrityError; MariaDB error 4025 comes as another
    # DatabaseError subclass depending on the driver
    with pytest.raises(DatabaseError), any_db.connection_context():
        insert_sql(any_db, template="t", openid="o", status="sent")
    rid = insert_sql(any_db, template="t", openid="o")
    with pytest.raises(DatabaseError), any_db.connection_context():
        any_db.execute_sql(f"UPDATE msg_list SET status = 'done' WHERE id = {rid}")
    with any_db.connection_context():
        assert MsgList.select().count() == len(STATUSES) + 1
        assert MsgList.get_by_id(rid).status == "wait"


def test_required_columns_are_required(any_db):
    # NOT NULL without a default: IntegrityError on SQLite/PostgreSQL, MySQL's 1364
    # ("doesn't have a default value") arrives as OperationalError
    for cols in ({"openid": "o"}, {"template": "t"}):
        with pytest.raises(DatabaseError), any_db.connection_context():
            insert_sql(any_db, **cols)
    with any_db.connection_context():
        assert MsgList.select().count() == 0


def test_init_schema_twice_is_harmless_and_keeps_rows(any_db):
    rid = insert_sql(any_db, template="t", openid="o")
    init_schema(any_db)
    init_schema(any_db)
    with any_db.connection_context():
        assert MsgList.get_by_id(rid).template == "t"
        indexes = {i.name for i in any_db.get_indexes("msg_list")}
    assert "msg_list_claim" in indexes
    if dialect_of(any_db) != "sqlite":
        assert "msg_list_lease" in indexes


@pytest.mark.postgres
def test_postgres_trigger_and_function_installed_once(tmp_path):
    db = connect(database_url("postgres", tmp_path))
    init_schema(db)
    init_schema(db)
    with db.connection_context():
        triggers = db.execute_sql(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'msg_list'::regclass "
            "AND NOT tgisinternal").fetchall()
        functions = db.execute_sql(
            "SELECT count(*) FROM pg_proc WHERE proname = 'herald_notify'").fetchone()[0]
    assert triggers == [("msg_list_notify",)] and functions == 1
    db.close()


@pytest.mark.mysql
def test_mysql_ddl_holds_with_explicit_defaults_for_timestamp_off(tmp_path):
    """Old MySQL / MariaDB defaults: a bare TIMESTAMP would turn NOT NULL with ON UPDATE."""
    db = connect(database_url("mysql", tmp_path))
    db.connect()
    db.execute_sql("SET SESSION explicit_defaults_for_timestamp = 0")
    init_schema(db)  # runs on the connection we opened, then closes it
    with db.connection_context():
        extra = dict(db.execute_sql(
            "SELECT column_name, extra FROM information_schema.columns "
            "WHERE table_schema = DATABASE() AND table_name = 'msg_list'").fetchall())
    assert not [c for c, e in extra.items() if "on update" in (e or "").lower()]
    cols = columns(db, "msg_list")
    assert all(cols[n].null for n in ("expire_at", "sent_at", "lease_until"))
    db.close()


@pytest.mark.parametrize("dialect", ["sqlite", "postgres", "mysql"])
def test_schema_verb_prints_the_ddl_file(dialect):
    res = subprocess.run([sys.executable, "scheduler.py", "schema", "--dialect", dialect],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout == ddl_text(dialect)
    written = (ROOT / "db" / "ddl" / f"{dialect}.sql").read_text(encoding="utf-8")
    if dialect != "sqlite":
        assert res.stdout == written
        return
    # SQLite's file names its timestamp columns once; the triggers are printed written out,
    # an insert and an update trigger for each, everything else as the file has it
    assert "herald:timestamp-triggers" not in res.stdout
    for column in ("send_at", "expire_at", "created_at"):
        for kind, event in (("insert", "INSERT"), ("update", f"UPDATE OF {column}")):
            assert (f"CREATE TRIGGER msg_list_{column}_{kind} AFTER {event} ON msg_list\n"
                    in res.stdout)
            assert f"'msg_list.{column} is not a time:" in res.stdout
    assert "WHEN NEW.expire_at IS NOT NULL AND NOT (" in res.stdout
    assert res.stdout.count("CREATE TRIGGER") == written.count("CREATE TRIGGER") + 6
    kept = [line for line in written.splitlines() if "herald:timestamp-triggers" not in line]
    assert all(line in res.stdout.splitlines() for line in kept)


def test_split_statements_keeps_dollar_bodies_and_strings():
    stmts = split_statements(ddl_text("postgres"))
    body = [s for s in stmts if s.startswith("CREATE OR REPLACE FUNCTION")]
    assert len(body) == 1 and "NOTIFY herald_msg_list;" in body[0] and body[0].endswith("$$")
    assert [s.split()[0] for s in stmts].count("CREATE") >= 5
    assert split_statements("SELECT 'a;b'; -- c; d\nSELECT 2;") == ["SELECT 'a;b'", "SELECT 2"]
    for dialect in ("sqlite", "mysql"):
        assert all(s and not s.startswith("--") for s in split_statements(ddl_text(dialect)))


@pytest.mark.parametrize("dialect", ["postgres", "mysql"])
def test_concurrent_init_db_runs_all_succeed(tmp_path, dialect):
    """Daemons on several hosts may run init-db at the same moment."""
    db = connect(database_url(dialect, tmp_path))
    errors: list[BaseException] = []

    def init() -> None:
        try:
            init_schema(db)  # one connection per thread
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=init) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors
    assert {"msg_list", "access_token"} <= set(db.get_tables())
    db.close()


def test_sqlite_triggers_take_every_time_herald_writes(tmp_path):
    """Herald's own form, fractions up to .999999 included (SQLite's datetime() rounds
    those up to the next second: the check must not read that as 'no time')."""
    from datetime import UTC, datetime

    from db.dialects import dialect

    db = connect(f"sqlite:///{tmp_path / 'herald.db'}")
    init_schema(db)
    d = dialect(db)
    for us in (0, 1, 499999, 500000, 999499, 999500, 999600, 999999):
        at = datetime(2026, 12, 31, 23, 59, 59, us, tzinfo=UTC)
        rid = insert_sql(db, template="t", openid="o", send_at=d.ts(at))
        with db.connection_context():
            db.execute_sql("UPDATE msg_list SET send_at = ?, expire_at = ? WHERE id = ?",
                           (d.ts(at), d.ts(at), rid))
            stored = db.execute_sql("SELECT send_at FROM msg_list WHERE id = ?",
                                    (rid,)).fetchone()[0]
        assert stored == d.ts(at), us
