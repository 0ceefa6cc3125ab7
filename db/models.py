"""peewee models for Herald's tables.

The DDL lives in db/ddl/<dialect>.sql (what `init-db` runs and `schema` prints);
these models are how Herald reads and writes the rows. tests/test_schema.py checks
that the two agree. Rows claimed for sending are not read through these models but
decoded one by one (db/decode.py), so that one unreadable row fails alone.
"""

from __future__ import annotations

from datetime import UTC, datetime

from peewee import (
    BigAutoField,
    BigIntegerField,
    CharField,
    CompositeKey,
    Field,
    IntegerField,
    Model,
    TextField,
)

STATUSES = ("wait", "sending", "success", "fail", "cancelled")
FINISHED = ("success", "fail", "cancelled")


def parse_utc(value: object) -> datetime:
    """A timestamp as a driver returns it -> aware UTC datetime; ValueError otherwise.

    SQLite gives text ('YYYY-MM-DD HH:MM:SS[.ffffff]'), PostgreSQL aware datetimes,
    MySQL naive datetimes in the session zone (UTC), or text for a zero date.
    """
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str | bytes):
        text = value.decode() if isinstance(value, bytes) else value
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    else:
        raise ValueError(f"not a timestamp: {type(value).__name__}")
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


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
            return value.replace(tzinfo=UTC)  # naive means UTC everywhere in Herald
        # aware: each engine's connection class puts it in its driver's form
        # (db/drivers.py), so a model needs no database to build its statement
        return value

    def python_value(self, value: object) -> datetime | None:
        if value is None:
            return None
        return parse_utc(value)


class BaseModel(Model):
    """Bound to no database: every query names the one it runs on (query.execute(db),
    db.execute(query)), the database the caller was handed through Runtime. Two
    databases in one process never see each other's rows by accident."""

    class Meta:
        database = None
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
    phone = CharField(max_length=32, null=True)
    parent_id = BigIntegerField(null=True)
    started_at = UTCDateTimeField(null=True)
    receipt = CharField(max_length=16, null=True)
    receipt_error = TextField(null=True)
    receipt_at = UTCDateTimeField(null=True)
    collapse_key = CharField(max_length=128, null=True)  # v3: newest wins (db/spending.py)

    class Meta:
        table_name = "msg_list"


class AccessToken(BaseModel):
    app = CharField(max_length=32, primary_key=True)
    token = TextField(null=True)
    expires_at = UTCDateTimeField(null=True)
    refreshed_at = UTCDateTimeField(null=True)
    refreshed_by = CharField(max_length=128, null=True)
    # v3: who is fetching a new token now, and until when that claim holds (tokens.py)
    claimed_by = CharField(max_length=128, null=True)
    claim_until = UTCDateTimeField(null=True)

    class Meta:
        table_name = "access_token"


class PushEvent(BaseModel):
    id = BigAutoField()
    app = CharField(max_length=32, null=True)
    source = CharField(max_length=16, default="app")
    kind = CharField(max_length=64)
    openid = CharField(max_length=128, null=True)
    dedup_key = CharField(max_length=191, null=True, unique=True)
    payload = TextField(default="{}")
    received_at = UTCDateTimeField()
    applied_at = UTCDateTimeField(null=True)
    error = TextField(null=True)
    next_check_at = UTCDateTimeField(null=True)  # v3: a waiting receipt's next look

    class Meta:
        table_name = "push_event"


class SubscribeGrant(BaseModel):
    app = CharField(max_length=32)
    openid = CharField(max_length=128)
    template_id = CharField(max_length=128)
    balance = IntegerField(null=True)
    status = CharField(max_length=16, default="accept")
    updated_at = UTCDateTimeField()

    class Meta:
        table_name = "subscribe_grant"
        primary_key = CompositeKey("app", "openid", "template_id")


class MsgEvent(BaseModel):
    id = BigAutoField()
    msg_id = BigIntegerField()
    at = UTCDateTimeField()
    kind = CharField(max_length=16)
    channel = CharField(max_length=16, null=True)
    errcode = IntegerField(null=True)
    detail = TextField(null=True)
    daemon = CharField(max_length=128, null=True)

    class Meta:
        table_name = "msg_event"


class HeraldDaemon(BaseModel):
    daemon_id = CharField(max_length=128, primary_key=True)
    role = CharField(max_length=16)
    host = CharField(max_length=64)
    pid = IntegerField()
    version = CharField(max_length=32)
    started_at = UTCDateTimeField()
    last_seen = UTCDateTimeField()
    last_dispatch = UTCDateTimeField(null=True)
    info = TextField(null=True)

    class Meta:
        table_name = "herald_daemon"


class SchemaVersion(BaseModel):
    version = IntegerField(primary_key=True)
    applied_at = UTCDateTimeField()
    description = TextField(null=True)

    class Meta:
        table_name = "herald_schema"


# Version 3, the push inbox: plaintext-mode pushes seen inside web.push_max_age.
class PushNonce(BaseModel):
    app = CharField(max_length=32)
    ts = BigIntegerField()
    nonce = CharField(max_length=64)
    body_hash = CharField(max_length=64)

    class Meta:
        table_name = "push_nonce"
        primary_key = CompositeKey("app", "ts", "nonce")


# ---- schema version 3: quota holds (db/holds.py) ----
class QuotaHold(BaseModel):
    app = CharField(max_length=32)
    channel = CharField(max_length=16)
    held_until = UTCDateTimeField()
    reason = TextField(null=True)
    set_by = CharField(max_length=128)
    set_at = UTCDateTimeField()
    lifted_by = CharField(max_length=128, null=True)
    lifted_at = UTCDateTimeField(null=True)

    class Meta:
        table_name = "quota_hold"
        primary_key = CompositeKey("app", "channel")


TABLES = (MsgList, AccessToken, PushEvent, SubscribeGrant, MsgEvent, HeraldDaemon,
          SchemaVersion, PushNonce, QuotaHold)
TABLE_NAMES = tuple(m._meta.table_name for m in TABLES)
