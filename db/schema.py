"""Create Herald's schema, and upgrade a database an earlier release made, in place.

db/ddl/<dialect>.sql is the whole current schema (what `schema --dialect` prints and
a DBA may apply by hand); every statement in it is idempotent (IF NOT EXISTS, OR
REPLACE, DROP ... IF EXISTS before a CREATE, or an index Herald skips when it is
there). Triggers are dropped and created again on every run, so a database keeps the
current trigger bodies without a version step of their own. An upgrade therefore is: add the
columns an older msg_list lacks, fix up data the new constraints would refuse, run the
DDL, record the version in herald_schema. Version 1 is the first release's schema
(msg_list and access_token, no herald_schema table); tests/fixtures/schema_v1 keeps
its DDL so the upgrade is tested from the real thing.

`init-db` upgrades; so do `run` and `serve` at start. Two of them starting together
take turns (an advisory lock on PostgreSQL, GET_LOCK on MySQL, the write lock on
SQLite).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from peewee import Database

from db.dialects import DIALECTS, Dialect, dialect

log = logging.getLogger("herald.schema")

VERSION = 3
# What each version brought, as herald_schema.description records it. Version 3 is a
# list: each change of the release appends its phrase.
DESCRIPTIONS: dict[int, str | list[str]] = {
    1: "msg_list and access_token",
    2: "receipts, grants, history, push inbox, heartbeats; fallback and sms columns; "
       "SQLite timestamp normalisation",
    3: [
        "token refresh claims (access_token.claimed_by, claim_until)",
        "push inbox rechecks by time (push_event.next_check_at), plaintext push nonces "
        "(push_nonce)",
        "quota holds shared by every daemon (quota_hold)",
        "newest-wins collapse (msg_list.collapse_key)",
        "SQLite's claim index holds waiting rows only (msg_list_claim ... WHERE status = "
        "'wait')",
    ],
}



# Columns version 2 added to msg_list, with each dialect's type.
V2_COLUMNS: dict[str, dict[str, str]] = {
    "phone": {"sqlite": "VARCHAR(32)", "postgres": "VARCHAR(32)", "mysql": "VARCHAR(32) NULL"},
    "parent_id": {"sqlite": "BIGINT", "postgres": "BIGINT", "mysql": "BIGINT NULL"},
    "started_at": {"sqlite": "DATETIME", "postgres": "TIMESTAMPTZ",
                   "mysql": "TIMESTAMP(6) NULL DEFAULT NULL"},
    "receipt": {"sqlite": "VARCHAR(16)", "postgres": "VARCHAR(16)", "mysql": "VARCHAR(16) NULL"},
    "receipt_error": {"sqlite": "TEXT", "postgres": "TEXT", "mysql": "TEXT NULL"},
    "receipt_at": {"sqlite": "DATETIME", "postgres": "TIMESTAMPTZ",
                   "mysql": "TIMESTAMP(6) NULL DEFAULT NULL"},
}
# -- v3: token refresh claims ---------------------------------------------------------
# One daemon takes the right to fetch an app's token in a short transaction, fetches
# with no transaction open, and writes the token in another (tokens.py).
V3_TOKEN_COLUMNS: dict[str, dict[str, str]] = {
    "claimed_by": {"sqlite": "VARCHAR(128)", "postgres": "VARCHAR(128)",
                   "mysql": "VARCHAR(128) NULL"},
    "claim_until": {"sqlite": "DATETIME", "postgres": "TIMESTAMPTZ",
                    "mysql": "TIMESTAMP(6) NULL DEFAULT NULL"},
}
# -- end v3: token refresh claims -------------------------------------------------------

# Version 3, the push inbox: columns added to push_event (a table version 2 created).
V3_PUSH_EVENT_COLUMNS: dict[str, dict[str, str]] = {
    "next_check_at": {"sqlite": "DATETIME", "postgres": "TIMESTAMPTZ",
                      "mysql": "TIMESTAMP(6) NULL DEFAULT NULL"},
}

# Version 3, spending grants: msg_list.collapse_key. Added by an idempotent step that
# runs on every upgrade, not only from version 2: databases made while version 3 was
# being built (before this column) say version 3 too, and get it the same way.
V3_COLLAPSE_COLUMNS: dict[str, dict[str, str]] = {
    "collapse_key": {
        "sqlite": "VARCHAR(128) CONSTRAINT msg_list_collapse_key_check CHECK (collapse_key "
                  "IS NULL OR (typeof(collapse_key) = 'text' AND length(collapse_key) <= 128))",
        "postgres": "VARCHAR(128)",
        # wider than allowed, with a CHECK: sql_mode = '' would cut a VARCHAR(128) silently
        "mysql": "VARCHAR(255) NULL, ADD CONSTRAINT msg_list_collapse_key_check "
                 "CHECK (CHAR_LENGTH(collapse_key) <= 128)",
    },
}
# MySQL keeps msg_list's indexes inside CREATE TABLE, which an existing table skips.
V3_INDEXES = {"mysql": ("CREATE INDEX msg_list_collapse ON msg_list (collapse_key, openid, id)",)}

# MySQL keeps msg_list's indexes inside CREATE TABLE, which an existing table skips.
V2_MYSQL_INDEXES = (
    "CREATE INDEX msg_list_msgid ON msg_list (msgid)",
    "CREATE INDEX msg_list_parent ON msg_list (parent_id)",
    "CREATE INDEX msg_list_openid ON msg_list (openid, id)",
    "CREATE INDEX msg_list_sent ON msg_list (sent_at, receipt)",
)

# SQLite v1 databases may hold rows whose times are not in Herald's form (the v2
# triggers now refuse those at INSERT). Before the triggers exist, rewrite the ones
# SQLite can read and fail the waiting ones it cannot, naming the column.
_SQLITE_TS = "'%Y-%m-%d %H:%M:%f'"
# Text must start with a date: SQLite also reads '12:00' (as 2000-01-01 12:00, so a row
# meant for noon today would go at once) and 'now'. The canonical check uses IS, not =:
# datetime() of what SQLite cannot read is NULL, and `x = NULL` let '0000-00-00
# 00:00:00' or any 19 characters pass as canonical.
_SQLITE_DATE = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*"


def _sqlite_norm(col: str) -> str:
    return (f"CASE WHEN typeof({col}) IN ('integer', 'real') THEN "
            f"strftime({_SQLITE_TS}, {col}, 'unixepoch') WHEN typeof({col}) = 'text' AND "
            f"{col} GLOB '{_SQLITE_DATE}' AND "
            f"strftime({_SQLITE_TS}, {col}) = strftime({_SQLITE_TS}, {col}, '+0 seconds') "
            f"THEN strftime({_SQLITE_TS}, {col}, '+0 seconds') END")


def _sqlite_canonical(col: str) -> str:
    return (f"(typeof({col}) = 'text' AND substr({col}, 1, 19) IS "
            f"datetime(substr({col}, 1, 19), '+0 seconds') "
            f"AND (length({col}) = 19 OR (substr({col}, 20, 1) = '.' AND length({col}) "
            f"BETWEEN 21 AND 26 AND substr({col}, 21) NOT GLOB '*[^0-9]*')))")


def _sqlite_v2_fixups() -> list[str]:
    out = []
    for col in ("send_at", "expire_at", "created_at"):
        norm, ok = _sqlite_norm(col), _sqlite_canonical(col)
        out.append(f"UPDATE msg_list SET status = 'fail', error = 'msg_list.{col} is not a "
                   f"time (found by the schema upgrade): ' || quote({col}) "
                   f"WHERE status IN ('wait', 'sending') AND {col} IS NOT NULL AND NOT {ok} "
                   f"AND ({norm}) IS NULL")
        out.append(f"UPDATE msg_list SET {col} = {norm} WHERE {col} IS NOT NULL AND NOT {ok} "
                   f"AND ({norm}) IS NOT NULL")
    out.append("UPDATE msg_list SET status = 'fail', error = 'msg_list.priority is not an "
               "integer (found by the schema upgrade): ' || quote(priority) "
               "WHERE status IN ('wait', 'sending') AND typeof(priority) != 'integer'")
    out.append("UPDATE msg_list SET priority = 0 WHERE typeof(priority) != 'integer'")
    return out


def ddl_text(name: str) -> str:
    if name not in DIALECTS:
        raise ValueError(f"unknown dialect {name!r} (use {', '.join(DIALECTS)})")
    return DIALECTS[name].ddl()


def created_tables(name: str) -> list[str]:
    """The tables the engine's DDL creates, in its order (what init-db will make)."""
    return re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", ddl_text(name))


def split_statements(sql: str) -> list[str]:
    """Split a DDL script on ';' outside quotes, comments, $$ bodies and the
    BEGIN ... END of SQLite triggers."""
    statements: list[str] = []
    buf: list[str] = []
    i, n = 0, len(sql)
    depth = 0  # inside CREATE TRIGGER ... BEGIN ... END
    while i < n:
        if sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if sql.startswith("$$", i):
            j = sql.find("$$", i + 2)
            j = n if j < 0 else j + 2
            buf.append(sql[i:j])
            i = j
            continue
        c = sql[i]
        if c == "'":
            m = re.compile(r"'(?:[^']|'')*'").match(sql, i)
            j = m.end() if m else n
            buf.append(sql[i:j])
            i = j
            continue
        word = _BLOCK_WORD.match(sql, i)
        if word and (i == 0 or not (sql[i - 1].isalnum() or sql[i - 1] == "_")):
            # a trigger body (BEGIN ... END, with CASE ... END inside) holds ';'
            if _TRIGGER.match("".join(buf).lstrip()):
                depth += -1 if word.group(1).upper() == "END" else 1
            buf.append(word.group(0))
            i = word.end()
            continue
        if c == ";" and not depth:
            stmt = "".join(buf).strip()
            if stmt:
                statements.append(stmt)
            buf = []
        else:
            buf.append(c)
        i += 1
    stmt = "".join(buf).strip()
    if stmt:
        statements.append(stmt)
    return statements


_BLOCK_WORD = re.compile(r"(BEGIN|CASE|END)\b", re.I)
_TRIGGER = re.compile(r"CREATE\s+TRIGGER\b", re.I)
_CREATE_INDEX = re.compile(
    r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+(IF\s+NOT\s+EXISTS\s+)?(\w+)\s+ON\s+(\w+)", re.I)

# what version 2 needs beyond its columns, per engine: SQLite's rows another program
# wrote in a form that does not compare as a time, MySQL's indexes
V2_FIXUPS: dict[str, tuple[str, ...]] = {"sqlite": tuple(_sqlite_v2_fixups()),
                                         "mysql": V2_MYSQL_INDEXES}
INIT_LOCK_KEY = 0x4845_5241_4C44  # "HERALD": the advisory lock of upgrades


@dataclass(frozen=True)
class SchemaState:
    version: int | None  # None: no Herald tables at all
    current: int = VERSION
    # columns of the current version the database lacks although it records that
    # version (made by a build from before the column joined the version)
    missing: tuple[str, ...] = ()

    @property
    def up_to_date(self) -> bool:
        return self.version == self.current and not self.missing

    def describe(self) -> str:
        if self.version is None:
            return "no Herald tables (run init-db)"
        if self.missing and self.version == self.current:
            return (f"schema version {self.version} without {', '.join(self.missing)} (run "
                    "init-db, or start run/serve: they add it in place)")
        if self.version < self.current:
            return (f"schema version {self.version}, this release needs {self.current} "
                    "(run init-db, or start run/serve: they upgrade in place)")
        if self.version > self.current:
            return (f"schema version {self.version} is newer than this release's "
                    f"{self.current}: upgrade Herald")
        return f"schema version {self.version} (current)"


def state(db: Database) -> SchemaState:
    """Which schema version the database holds."""
    with db.connection_context():
        tables = set(db.get_tables())
        if "msg_list" not in tables:
            return SchemaState(None)
        if "herald_schema" not in tables:
            return SchemaState(1)
        row = db.execute_sql("SELECT MAX(version) FROM herald_schema").fetchone()
        version = int(row[0]) if row and row[0] is not None else 1
        missing: tuple[str, ...] = ()
        if version == VERSION:
            have = {c.name for c in db.get_columns("msg_list")}
            missing = tuple(c for c in V3_COLLAPSE_COLUMNS if c not in have)
        return SchemaState(version, missing=missing)


class SchemaError(RuntimeError):
    """The schema is missing or old and could not be brought up to date."""


def ensure_current(db: Database) -> str:
    """At the start of run and serve: create the schema on a fresh database (e.g.
    systemd's new state directory, so the SQLite file belongs to the service's user),
    upgrade an older one in place, refuse a newer one. Returns what it did, for the log.
    """
    before = state(db)
    if before.up_to_date and not _stale_indexes(db):
        return ""
    if before.missing and before.version == VERSION:
        try:
            init_schema(db)
        except Exception as exc:
            from logs import redact

            raise SchemaError(f"the schema could not be completed ({redact(str(exc))}): run "
                              "`init-db` with an account that may alter tables") from None
        return f"added {', '.join(before.missing)} to schema version {VERSION}"
    if before.version is not None and before.version > VERSION:
        raise SchemaError(before.describe())
    try:
        init_schema(db)
    except Exception as exc:
        from logs import redact

        what = ("created" if before.version is None
                else f"upgraded from version {before.version}")
        raise SchemaError(f"the schema could not be {what} ({redact(str(exc))}): "
                          "run `init-db` with an account that may create and alter tables"
                          ) from None
    if before.version == VERSION:
        return "replaced SQLite's claim index by the partial one (waiting rows only)"
    return (f"created the schema (version {VERSION})" if before.version is None
            else f"upgraded the schema from version {before.version} to {VERSION}")


def init_schema(db: Database) -> list[int]:
    """Create the schema, or upgrade an older one in place. Idempotent; keeps every row.

    Returns the versions applied (empty when the database was current).
    """
    d = dialect(db)
    with db.connection_context(), d.alone(db, INIT_LOCK_KEY, "herald_schema"):
        before = state(db).version
        if before is not None and before > VERSION:
            raise RuntimeError(SchemaState(before).describe())
        if before is not None and before < 2:
            _add_columns(db, d, V2_COLUMNS)
            _run(db, d, V2_FIXUPS.get(d.name, ()))
        if before is not None and before < 3:
            _add_columns(db, d, V3_TOKEN_COLUMNS, table="access_token")  # v3: token claims
        if before is not None and before < 3 and "push_event" in db.get_tables():
            # version 3, the push inbox: the DDL's index needs the column first
            _add_columns(db, d, V3_PUSH_EVENT_COLUMNS, table="push_event")
        if before is not None:
            # version 3, spending grants: from v2, and from a v3 made before the column
            _add_columns(db, d, V3_COLLAPSE_COLUMNS)
            _run(db, d, V3_INDEXES.get(d.name, ()))
        if before == VERSION:
            # the description names every change of the version, the late ones too
            db.execute_sql(f"UPDATE herald_schema SET description = {d.param} "
                           f"WHERE version = {d.param}", (describe(VERSION), VERSION))
        for index in d.stale_indexes(db):  # the DDL makes them again, as they are now
            db.execute_sql(f"DROP INDEX {index}")
        _run(db, d, split_statements(d.ddl()))
        applied = [VERSION] if before is None else list(range(before + 1, VERSION + 1))
        for version in applied:
            db.execute_sql(d.insert_ignore("herald_schema", ("version", "description"),
                                           "version"), (version, describe(version)))
        if applied and before is not None:
            log.info("schema upgraded from version %d to %d", before, VERSION)
        return applied


def _stale_indexes(db: Database) -> list[str]:
    with db.connection_context():
        return dialect(db).stale_indexes(db)


def describe(version: int) -> str:
    """What a schema version brought, as recorded in herald_schema."""
    text = DESCRIPTIONS[version]
    return text if isinstance(text, str) else "; ".join(text)


def _add_columns(db: Database, d: Dialect, columns: dict[str, dict[str, str]], *,
                 table: str = "msg_list") -> None:
    have = {c.name for c in db.get_columns(table)}
    for name, types in columns.items():
        if name not in have:
            db.execute_sql(f"ALTER TABLE {table} ADD COLUMN {name} {types[d.name]}")


def _run(db: Database, d: Dialect, statements: tuple[str, ...] | list[str]) -> None:
    indexes: dict[str, set[str]] = {}
    for stmt in statements:
        m = _CREATE_INDEX.match(stmt)
        if m and not m.group(1):  # MySQL has no CREATE INDEX IF NOT EXISTS
            index, table = m.group(2), m.group(3)
            if table not in indexes:
                indexes[table] = {i.name for i in db.get_indexes(table)}
            if index in indexes[table]:
                continue
        db.execute_sql(stmt)


__all__ = ["SchemaError", "SchemaState", "VERSION", "created_tables", "ddl_text",
           "ensure_current", "init_schema", "split_statements", "state"]
