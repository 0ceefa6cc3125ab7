"""One object per database engine: everything Herald does differently on SQLite,
PostgreSQL and MySQL/MariaDB lives here, behind the same methods.

A Dialect knows how to open a connection from a URL (with the session in UTC and the
reconnect rules of its driver), how a timestamp travels to its driver, how to claim due
rows and write a group of results in one statement, how to lock a row, which errors
are worth retrying (deadlocks, lock timeouts), and where its reference DDL lives. An
unknown URL scheme is an error, never a silent SQLite.

Callers get the dialect of an open database with `dialect(db)`, and of a URL with
`for_url(url)`. Nothing outside db/ names an engine: what differs is asked of the
Dialect (tests/test_seams.py holds the tree to that). The driver classes under it live
in db/drivers.py, the reading of URLs in db/urls.py.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from peewee import Database, MySQLDatabase, PostgresqlDatabase, SqliteDatabase

from db.drivers import (
    HeraldSqlite,
    ReconnectingMySQL,
    ReconnectingPooledMySQL,
    ReconnectingPooledPostgres,
    ReconnectingPostgres,
    naive_utc,
    sqlite_text,
)
from db.urls import UnsupportedDatabase, engine_of, pooled, url_params

DDL_DIR = Path(__file__).parent / "ddl"
_FIXED = re.compile(r":([a-z_]+)\b")
_REF = re.compile(r"\b(v)\.(\w+)|:([a-z_]+)\b")
# The recipient a row's share is taken from: its openid (WeChat answers 43108 to two
# sends to one openid at once), or its phone when it has none (an SMS row).
SHARE_KEY = "COALESCE(NULLIF(openid, ''), phone, '')"
Share = tuple[int, int]  # (k, n): the k-th of n dispatch processes (service/processes.py)
_EXCLUDED = re.compile(r"\bexcluded\.(\w+)")
_TRIGGERS = re.compile(r"^-- herald:timestamp-triggers (.*)\n\n", re.M)


def timestamp_triggers(columns: Sequence[str]) -> str:
    """The SQLite triggers that normalize or refuse each msg_list timestamp column
    (a name ending in ? may be NULL): all insert triggers, then all update triggers."""
    text = (DDL_DIR / "sqlite_timestamp_trigger.sql").read_text(encoding="utf-8")
    template = text[text.index("DROP TRIGGER"):] + "\n"
    out = []
    for kind, event in (("insert", "INSERT"), ("update", "UPDATE OF {col}")):
        for spec in columns:
            col = spec.rstrip("?")
            nullable = f"NEW.{col} IS NOT NULL AND " if spec.endswith("?") else ""
            out.append(template.replace("{kind}", kind).replace("{event}", event)
                       .replace("{nullable}", nullable).replace("{col}", col))
    return "".join(out)


# ------------------------------------------------------------------ the dialects


class Dialect:
    name: ClassVar[str]
    schemes: ClassVar[tuple[str, ...]]
    param: ClassVar[str] = "%s"
    # errors after which the whole transaction may simply be tried again
    retry_fragments: ClassVar[tuple[str, ...]] = ()

    # -- connections -------------------------------------------------------------
    def open(self, url: str) -> Database:
        raise NotImplementedError

    # -- schema ------------------------------------------------------------------
    @property
    def ddl_path(self) -> Path:
        return DDL_DIR / f"{self.name}.sql"

    def ddl(self) -> str:
        return self.ddl_path.read_text(encoding="utf-8")

    # -- values ------------------------------------------------------------------
    def ts(self, value: datetime) -> object:
        """An aware UTC datetime as this driver should receive it."""
        return value

    # -- errors ------------------------------------------------------------------
    def is_retryable(self, exc: BaseException) -> bool:
        """A deadlock or lock timeout: the transaction was rolled back, try it again."""
        text = str(exc).lower()
        return any(f in text for f in self.retry_fragments)

    def is_refused_value(self, exc: BaseException) -> bool:
        """The server refused a value of the statement (beyond peewee's DataError and
        IntegrityError): running the same statement again cannot help."""
        return False

    # -- claims ------------------------------------------------------------------
    # The claim's attempts+1. attempts is an application-writable column: 2^31-1 would
    # overflow INT (PostgreSQL and MySQL then refuse the whole claim UPDATE, and no row
    # at all is sent again), so the count stops just below the top of the range.
    next_attempt: ClassVar[str] = "LEAST(attempts, 2147483646) + 1"

    def pick_sql(self, columns: str = "id", share: Share | None = None) -> str:
        """The claim's SELECT of due rows (one shape on every engine): what the claim
        index serves. Parameters: now, limit. `share` (k, n): only the rows whose
        recipient hashes to k of n (dispatch.processes: each process claims its own)."""
        p = self.param
        where = ""
        if share is not None:
            k, n = share
            if not (isinstance(k, int) and isinstance(n, int) and 0 <= k < n):
                raise ValueError(f"bad dispatch share {share!r}")
            where = f" AND {self.share_of(SHARE_KEY, n)} = {k}"
        return (f"SELECT {columns} FROM msg_list WHERE status = 'wait' AND send_at <= {p}"
                f"{where} ORDER BY priority DESC, send_at, id LIMIT {p}")

    def share_of(self, key: str, n: int) -> str:
        """SQL for the share (0 to n-1) of the text expression `key`: a hash of it
        modulo n, the same for one value in every session of this engine. (MOD(), not
        %: the drivers of the servers read % as a parameter mark.)"""
        raise NotImplementedError

    def claim(self, db: Database, *, sets: str, set_params: Sequence[object],
              now: object, limit: int, returning: str, share: Share | None = None
              ) -> list[tuple]:
        """Move up to `limit` due rows to sending (inside the caller's transaction) and
        return their `returning` columns, undecoded."""
        raise NotImplementedError

    def concat(self, *parts: str) -> str:
        """SQL that joins text expressions (MySQL's || means OR)."""
        return " || ".join(parts)

    # -- grouped writes ------------------------------------------------------------
    def update_from_values(self, cursor: Any, table: str, columns: Sequence[tuple[str, str]],
                           rows: Sequence[tuple], sets: Sequence[tuple[str, str]],
                           where: str, fixed: dict[str, object]) -> int:
        """UPDATE `table` (alias t) from a list of value rows (alias v), in one go.

        columns: the value rows' (name, PostgreSQL type); sets: (column, expression)
        where expressions may use t.<col>, v.<name> and :<fixed>; where: the join and
        filter, in the same terms. Returns the number of rows changed.
        """
        raise NotImplementedError

    def insert_id(self, db: Database, table: str, columns: Sequence[str],
                  values: Sequence[object]) -> int:
        """INSERT one row; its new id (the driver's last row id; RETURNING where the
        driver has none)."""
        marks = ", ".join([self.param] * len(columns))
        cur = db.execute_sql(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                             list(values))
        return int(cur.lastrowid)

    def insert_many(self, cursor: Any, table: str, columns: Sequence[str],
                    rows: Sequence[tuple]) -> None:
        """INSERT many rows in one statement (or the driver's cheapest loop)."""
        if not rows:
            return
        marks = ", ".join([self.param] * len(columns))
        cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                           list(rows))

    def _fixed(self, sql: str, fixed: dict[str, object]) -> tuple[str, list[object]]:
        """:name placeholders -> driver placeholders, with their values in order."""
        params: list[object] = []

        def sub(m: re.Match[str]) -> str:
            params.append(fixed[m.group(1)])
            return self.param

        return _FIXED.sub(sub, sql), params

    # -- text the console's read-only SQL needs ---------------------------------------
    def marks(self, sql: str) -> str:
        """'?' placeholders -> the driver's (pymysql and psycopg2 use %s, and then need a
        literal % doubled)."""
        if self.param == "?":
            return sql
        return sql.replace("%", "%%").replace("?", self.param)

    def minute(self, column: str) -> str:
        """`column` truncated to its minute, as text 'YYYY-MM-DD HH:MM' (UTC)."""
        raise NotImplementedError

    def unindexed(self, column: str) -> str:
        """`column` written so that the planner does not pick an index on it: a filter
        checked row by row inside an id range, where the range is the cheap part."""
        return column

    # -- schema --------------------------------------------------------------------
    def stale_indexes(self, db: Database) -> list[str]:
        """Indexes an earlier build made in another shape, to drop before the DDL runs
        (it makes them again as they are now)."""
        return []

    # -- the server's own settings ----------------------------------------------------
    def setting_warnings(self, db: Database) -> list[str]:
        """What `check` should warn about in the server's settings."""
        return []

    # -- locks -------------------------------------------------------------------
    # appended to a SELECT that takes rows no other transaction holds, locking them
    skip_locked: ClassVar[str] = " FOR UPDATE SKIP LOCKED"
    # appended to a SELECT whose rows the transaction will change
    lock_rows: ClassVar[str] = " FOR UPDATE"
    # UPDATE ... RETURNING (MySQL has none: update, then read back)
    returning: ClassVar[bool] = True

    @contextmanager
    def alone(self, db: Database, key: int, name: str) -> Iterator[None]:
        """Run the block alone among every process on this database (a schema upgrade:
        daemons on several hosts may start together). `key` names the lock on
        PostgreSQL, `name` on MySQL."""
        with db.atomic():  # SQLite DDL is transactional, and IMMEDIATE excludes others
            yield

    def upsert(self, insert: str, conflict: str, sets: Sequence[tuple[str, str]]) -> str:
        """`insert` (one row) that updates the row holding the same `conflict` key
        instead; set expressions name the refused row's values excluded.<column>."""
        return (f"{insert} ON CONFLICT ({conflict}) DO UPDATE SET "
                + ", ".join(f"{c} = {e}" for c, e in sets))

    def for_update(self, query: Any) -> Any:
        """A SELECT that locks its rows until the transaction ends."""
        return query.for_update()

    def insert_ignore(self, table: str, columns: Sequence[str], conflict: str) -> str:
        """INSERT that does nothing when `conflict` (a unique column) already holds the
        value: WeChat retries a push, an application reports a grant twice."""
        raise NotImplementedError


class SQLite(Dialect):
    name = "sqlite"
    schemes = ("sqlite",)
    param = "?"
    retry_fragments = ("database is locked",)
    # SQLite keeps whatever type was written: 1.5 would claim as 2.5, which no decoder
    # reads as an attempt count (the row could never be failed, only claimed again),
    # and 2^63-1 + 1 becomes a REAL no driver binds back. Made an integer at the claim.
    next_attempt = "MIN(CAST(attempts AS INTEGER), 2147483646) + 1"

    def open(self, url: str) -> Database:
        params = url_params(url)
        path = params.pop("database")
        if path in ("", ":memory:"):
            raise UnsupportedDatabase(
                "database: an in-memory SQLite database cannot hold a queue")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = HeraldSqlite(
            path,
            # WAL lets readers (status, metrics, other programs inserting rows) work
            # beside the writer; busy_timeout rides out short lock waits instead of
            # failing at once; IMMEDIATE takes the write lock at BEGIN, so two writers
            # never deadlock upgrading a read lock.
            pragmas={"journal_mode": "wal", "busy_timeout": 10000, "synchronous": "normal"},
            timeout=10,
            lock_type="IMMEDIATE",
        )
        return db

    def ts(self, value: datetime) -> object:
        return sqlite_text(value)  # the text CURRENT_TIMESTAMP writes (db/drivers.py)

    def ddl(self) -> str:
        """sqlite.sql with its timestamp triggers written out: one template
        (ddl/sqlite_timestamp_trigger.sql), an insert and an update trigger per column."""
        return _TRIGGERS.sub(lambda m: timestamp_triggers(m.group(1).split()),
                             super().ddl())

    def claim(self, db: Database, *, sets: str, set_params: Sequence[object],
              now: object, limit: int, returning: str, share: Share | None = None
              ) -> list[tuple]:
        # SQLite has one writer: BEGIN IMMEDIATE (lock_type) already excludes others.
        sql = (f"UPDATE msg_list SET {sets} WHERE id IN ({self.pick_sql(share=share)}) "
               f"RETURNING {returning}")
        return list(db.execute_sql(sql, (*set_params, now, limit)).fetchall())

    # the transaction began IMMEDIATE and holds the database's write lock
    skip_locked = ""
    lock_rows = ""

    def for_update(self, query: Any) -> Any:
        # the transaction began IMMEDIATE and holds the database's write lock
        return query

    def share_of(self, key: str, n: int) -> str:
        # no hash built in: HeraldSqlite registers herald_share (CRC-32) on each connection
        return f"herald_share(CAST({key} AS BLOB)) % {n}"

    def minute(self, column: str) -> str:
        return f"substr({column}, 1, 16)"  # SQLite keeps Herald's UTC text form

    def stale_indexes(self, db: Database) -> list[str]:
        # v3: msg_list_claim became partial (waiting rows only). Looked at on every
        # upgrade and start, not by version: databases already marked 3 may hold the
        # full one of version 2 or of an earlier build of version 3.
        row = db.execute_sql("SELECT sql FROM sqlite_master WHERE type = 'index' "
                             "AND name = 'msg_list_claim'").fetchone()
        full = bool(row) and " WHERE " not in str(row[0]).upper().replace("\n", " ")
        return ["msg_list_claim"] if full else []

    def unindexed(self, column: str) -> str:
        # SQLite has no statistics unless someone runs ANALYZE, and then prefers any
        # index with an equality; PostgreSQL and MySQL plan from their statistics
        return f"+{column}"

    def update_from_values(self, cursor: Any, table: str, columns: Sequence[tuple[str, str]],
                           rows: Sequence[tuple], sets: Sequence[tuple[str, str]],
                           where: str, fixed: dict[str, object]) -> int:
        # One parameterised UPDATE run for each row by the driver's C loop: cheaper on
        # SQLite than one big statement to parse, and there is no round trip to save.
        names = [c for c, _ in columns]
        sql = (f"UPDATE {table} AS t SET " + ", ".join(f"{c} = {e}" for c, e in sets)
               + f" WHERE {where}")
        order: list[tuple[str, str]] = []

        def sub(m: re.Match[str]) -> str:
            order.append(("v", m.group(2)) if m.group(1) else ("f", m.group(3)))
            return "?"

        sql = _REF.sub(sub, sql)
        # each row's parameters, picked in C: the row's values followed by the fixed ones
        width = len(names)
        extra = [fixed[n] for kind, n in order if kind == "f"]
        positions, k = [], width
        for kind, n in order:
            if kind == "v":
                positions.append(names.index(n))
            else:
                positions.append(k)
                k += 1
        pick = operator.itemgetter(*positions)
        tail = tuple(extra)
        if len(positions) == 1:
            params = [(pick((*row, *tail)),) for row in rows]
        else:
            params = [pick((*row, *tail)) for row in rows]
        cursor.executemany(sql, params)
        return int(cursor.rowcount)

    def insert_ignore(self, table: str, columns: Sequence[str], conflict: str) -> str:
        marks = ", ".join("?" for _ in columns)
        return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "
                f"ON CONFLICT ({conflict}) DO NOTHING")


class Postgres(Dialect):
    name = "postgres"
    schemes = ("postgres", "postgresql")
    # 40P01 deadlock_detected, 40001 serialization_failure, 55P03 lock_not_available
    retry_fragments = ("deadlock detected", "could not serialize access",
                       "canceling statement due to lock timeout")

    def open(self, url: str) -> Database:
        params = url_params(url)
        name = params.pop("database")
        params.setdefault("options", "-c timezone=UTC")
        params.setdefault("connect_timeout", 10)
        if pooled(url):
            params.setdefault("max_connections", 32)
            params.setdefault("stale_timeout", 300)
            return ReconnectingPooledPostgres(name, **params)
        return ReconnectingPostgres(name, **params)

    def claim(self, db: Database, *, sets: str, set_params: Sequence[object],
              now: object, limit: int, returning: str, share: Share | None = None
              ) -> list[tuple]:
        # A materialized CTE runs the locking SELECT exactly once. With
        # `id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)` the planner may rescan
        # the subquery (the inner side of a nested loop), and each rescan skips the
        # rows the previous one locked: more than n rows claimed.
        sql = (f"WITH picked AS MATERIALIZED ({self.pick_sql(share=share)} FOR UPDATE SKIP LOCKED) "
               f"UPDATE msg_list SET {sets} FROM picked WHERE msg_list.id = picked.id "
               f"RETURNING {_qualify(returning, 'msg_list')}")
        # the CTE comes first in the statement, so do its parameters
        return list(db.execute_sql(sql, (now, limit, *set_params)).fetchall())

    def insert_ignore(self, table: str, columns: Sequence[str], conflict: str) -> str:
        marks = ", ".join("%s" for _ in columns)
        return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "
                f"ON CONFLICT ({conflict}) DO NOTHING")

    def share_of(self, key: str, n: int) -> str:
        # hashtext: int4, stable for a value on one server (what hash indexes use);
        # masked to 31 bits, so the remainder is never negative
        return f"MOD(hashtext({key}) & 2147483647, {n})"

    def minute(self, column: str) -> str:
        return f"to_char(date_trunc('minute', {column}), 'YYYY-MM-DD HH24:MI')"

    @contextmanager
    def alone(self, db: Database, key: int, name: str) -> Iterator[None]:
        # PostgreSQL DDL is transactional: all of it happens or none, and no insert runs
        # between dropping and re-creating the trigger.
        with db.atomic():
            db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (key,))
            yield

    def update_from_values(self, cursor: Any, table: str, columns: Sequence[tuple[str, str]],
                           rows: Sequence[tuple], sets: Sequence[tuple[str, str]],
                           where: str, fixed: dict[str, object]) -> int:
        """One UPDATE ... FROM (VALUES ...) for the whole group: one round trip."""
        from psycopg2.extras import execute_values

        sql = (f"UPDATE {table} AS t SET " + ", ".join(f"{c} = {e}" for c, e in sets)
               + f" FROM (VALUES __ROWS__) AS v({', '.join(c for c, _ in columns)}) "
               f"WHERE {where}")
        sql, params = self._fixed(sql, fixed)
        # execute_values takes a single %s for the VALUES list and cannot mix it with
        # other parameters, so the fixed ones are bound first.
        sql = cursor.mogrify(sql.replace("%", "%%").replace("%%s", "%s"), params).decode()
        template = "(" + ", ".join(f"%s::{t}" for _, t in columns) + ")"
        execute_values(cursor, sql.replace("__ROWS__", "%s"), list(rows), template=template,
                       page_size=max(1, len(rows)))
        return int(cursor.rowcount)

    def insert_id(self, db: Database, table: str, columns: Sequence[str],
                  values: Sequence[object]) -> int:
        marks = ", ".join(["%s"] * len(columns))
        cur = db.execute_sql(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "
                             "RETURNING id", list(values))
        return int(cur.fetchone()[0])

    def insert_many(self, cursor: Any, table: str, columns: Sequence[str],
                    rows: Sequence[tuple]) -> None:
        if not rows:
            return
        from psycopg2.extras import execute_values

        execute_values(cursor, f"INSERT INTO {table} ({', '.join(columns)}) VALUES %s",
                       list(rows), page_size=max(1, len(rows)))


class MySQL(Dialect):
    name = "mysql"
    schemes = ("mysql",)
    # 1213 deadlock, 1205 lock wait timeout
    retry_fragments = ("1213", "deadlock found", "1205", "lock wait timeout")

    # 1048 NULL into NOT NULL, 1264/1690 out of range, 1265 truncated, 1292 incorrect
    # datetime (a TIMESTAMP past 2038), 1366 incorrect string, 1406 too long: PyMySQL
    # raises some of these as OperationalError, like a lost connection
    refused_codes: ClassVar[frozenset[int]] = frozenset(
        {1048, 1264, 1265, 1292, 1366, 1406, 1690})

    def is_refused_value(self, exc: BaseException) -> bool:
        code = exc.args[0] if exc.args else None
        return isinstance(code, int) and code in self.refused_codes

    def open(self, url: str) -> Database:
        params = url_params(url)
        name = params.pop("database")
        params.setdefault("init_command", "SET time_zone = '+00:00'")
        params.setdefault("charset", "utf8mb4")
        params.setdefault("connect_timeout", 10)
        if pooled(url):
            params.setdefault("max_connections", 32)
            params.setdefault("stale_timeout", 300)
            return ReconnectingPooledMySQL(name, **params)
        return ReconnectingMySQL(name, **params)

    def ts(self, value: datetime) -> object:
        # TIMESTAMP(6) converts from the session zone, which Herald sets to UTC
        return naive_utc(value)

    def claim(self, db: Database, *, sets: str, set_params: Sequence[object],
              now: object, limit: int, returning: str, share: Share | None = None
              ) -> list[tuple]:
        """SELECT ... FOR UPDATE SKIP LOCKED, UPDATE by id, read back: one transaction.

        No UPDATE ... RETURNING on MySQL. READ COMMITTED: InnoDB then takes no gap
        locks (an application's INSERT never waits for a claim) and drops the locks on
        rows it read but did not match (a high-priority row scheduled for later), so
        only the claimed rows stay locked.
        """
        cur = db.execute_sql(self.pick_sql(share=share) + " FOR UPDATE SKIP LOCKED", (now, limit))
        ids = [r[0] for r in cur.fetchall()]
        if not ids:
            return []
        marks = ", ".join(["%s"] * len(ids))
        db.execute_sql(f"UPDATE msg_list SET {sets} WHERE id IN ({marks})", (*set_params, *ids))
        return list(db.execute_sql(
            f"SELECT {returning} FROM msg_list WHERE id IN ({marks})", ids).fetchall())

    def insert_ignore(self, table: str, columns: Sequence[str], conflict: str) -> str:
        # not INSERT IGNORE: that would also turn a bad value into a warning
        marks = ", ".join("%s" for _ in columns)
        first = conflict.split(",")[0].strip()
        return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "
                f"ON DUPLICATE KEY UPDATE {first} = {first}")

    def concat(self, *parts: str) -> str:
        return f"CONCAT({', '.join(parts)})"

    def share_of(self, key: str, n: int) -> str:
        return f"MOD(CRC32({key}), {n})"

    def minute(self, column: str) -> str:
        return f"DATE_FORMAT({column}, '%Y-%m-%d %H:%i')"

    returning = False

    @contextmanager
    def alone(self, db: Database, key: int, name: str) -> Iterator[None]:
        # MySQL commits each DDL statement itself; a named lock keeps two upgrades apart
        db.execute_sql("SELECT GET_LOCK(%s, 60)", (name,))
        try:
            yield
        finally:
            db.execute_sql("SELECT RELEASE_LOCK(%s)", (name,))

    def upsert(self, insert: str, conflict: str, sets: Sequence[tuple[str, str]]) -> str:
        values = [(c, _EXCLUDED.sub(r"VALUES(\1)", e)) for c, e in sets]
        return f"{insert} ON DUPLICATE KEY UPDATE " + ", ".join(f"{c} = {e}" for c, e in values)

    def setting_warnings(self, db: Database) -> list[str]:
        mode = str(db.execute_sql("SELECT @@GLOBAL.sql_mode").fetchone()[0] or "")
        if "STRICT_TRANS_TABLES" in mode or "STRICT_ALL_TABLES" in mode:
            return []
        return [f"the server's sql_mode is {mode!r}, not strict: MySQL "
                "then stores a bad time as 0000-00-00 instead of refusing the INSERT; set "
                "sql_mode to include STRICT_TRANS_TABLES (the default)"]

    def update_from_values(self, cursor: Any, table: str, columns: Sequence[tuple[str, str]],
                           rows: Sequence[tuple], sets: Sequence[tuple[str, str]],
                           where: str, fixed: dict[str, object]) -> int:
        """One UPDATE joined to a derived table of the group's values (MySQL's
        executemany would be a round trip per row)."""
        names = [c for c, _ in columns]
        first = "SELECT " + ", ".join(f"%s AS {c}" for c in names)
        rest = "SELECT " + ", ".join(["%s"] * len(names))
        derived = " UNION ALL ".join([first] + [rest] * (len(rows) - 1))
        tail, params = self._fixed(
            "SET " + ", ".join(f"t.{c} = {e}" for c, e in sets) + f" WHERE {where}", fixed)
        sql = f"UPDATE {table} AS t JOIN ({derived}) AS v ON TRUE {tail}"
        cursor.execute(sql, [value for row in rows for value in row] + params)
        return int(cursor.rowcount)


def _qualify(columns: str, table: str) -> str:
    return ", ".join(f"{table}.{c.strip()}" for c in columns.split(","))


DIALECTS: dict[str, Dialect] = {d.name: d for d in (SQLite(), Postgres(), MySQL())}
NAMES = tuple(DIALECTS)


def for_url(url: str) -> Dialect:
    """The dialect a database URL names; UnsupportedDatabase for any other scheme."""
    return DIALECTS[engine_of(url)]


def dialect(db: Database) -> Dialect:
    """The dialect of an open database."""
    if isinstance(db, PostgresqlDatabase):
        return DIALECTS["postgres"]
    if isinstance(db, MySQLDatabase):
        return DIALECTS["mysql"]
    if isinstance(db, SqliteDatabase):
        return DIALECTS["sqlite"]
    raise UnsupportedDatabase(f"not a database Herald supports: {type(db).__name__}")


__all__ = ["DIALECTS", "NAMES", "Dialect", "MySQL", "Postgres", "SQLite",
           "UnsupportedDatabase", "dialect", "for_url", "url_params"]
