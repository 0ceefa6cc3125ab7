"""peewee models for msg_list and access_token.

The DDL lives in db/ddl/<dialect>.sql (what `init-db` runs and `schema` prints);
these models are how Herald reads and writes the rows. tests/test_schema.py checks
that the two agree.
"""

from __future__ import annotations

from datetime import UTC, datetime

from peewee import (
    BigAutoField,
    CharField,
    DatabaseProxy,
    Field,
    IntegerField,
    Model,
    MySQLDatabase,
    PostgresqlDatabase,
    TextField,
)

# Bound at start-up by db.connection.bind(); one database per process.
database = DatabaseProxy()

STATUSES = ("wait", "sending", "success", "fail", "cancelled")
FINISHED = ("success", "fail", "cancelled")


class UTCDateTimeField(Field):
    """A UTC instant. Python side: aware datetime in UTC. Database side:

    - SQLite: text 'YYYY-MM-DD HH:MM:SS[.ffffff]', the form CURRENT_TIMESTAMP writes,
      so rows inserted by other programs compare correctly as text;
    - PostgreSQL: timestamptz (the session runs in UTC);
    - MySQL/MariaDB: TIMESTAMP(6), converted by the server from the session zone,
      which Herald sets to UTC.
    """

    field_type = "DATETIME"

    def db_value(self, value: datetime | None) -> object:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"{self.name}: expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)  # naive means UTC everywhere in Herald
        value = value.astimezone(UTC)
        db = self.model._meta.database
        if isinstance(db, DatabaseProxy):
            db = db.obj
        if isinstance(db, PostgresqlDatabase):
            return value
        naive = value.replace(tzinfo=None)
        if isinstance(db, MySQLDatabase):
            return naive
        return naive.isoformat(sep=" ")

    def python_value(self, value: object) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            dt = value
        else:
            text = value.decode() if isinstance(value, bytes) else str(value)
            dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        if dt.tzinfo is None:
            return dt.replace(tzinfo=UTC)
        return dt.astimezone(UTC)


class BaseModel(Model):
    class Meta:
        database = database
        legacy_table_names = False


class MsgList(BaseModel):
    id = BigAutoField()
    app = CharField(max_length=32, null=True)
    template = CharField(max_length=128)
    openid = CharField(max_length=128)
    params = TextField(default="[]")
    page = TextField(null=True)
    status = CharField(max_length=16, default="wait")
    priority = IntegerField(default=0)
    send_at = UTCDateTimeField()
    expire_at = UTCDateTimeField(null=True)
    attempts = IntegerField(default=0)
    dedup_key = CharField(max_length=191, null=True, unique=True)
    created_at = UTCDateTimeField()
    updated_at = UTCDateTimeField()
    sent_at = UTCDateTimeField(null=True)
    claimed_by = CharField(max_length=128, null=True)
    lease_until = UTCDateTimeField(null=True)
    errcode = IntegerField(null=True)
    error = TextField(null=True)
    msgid = CharField(max_length=32, null=True)

    class Meta:
        table_name = "msg_list"


class AccessToken(BaseModel):
    app = CharField(max_length=32, primary_key=True)
    token = TextField(null=True)
    expires_at = UTCDateTimeField(null=True)
    refreshed_at = UTCDateTimeField(null=True)
    refreshed_by = CharField(max_length=128, null=True)

    class Meta:
        table_name = "access_token"
