-- Herald reference schema, PostgreSQL 12+ (FOR UPDATE SKIP LOCKED; the claim uses WITH ... AS MATERIALIZED).
-- Applications insert rows with plain SQL; every column but template and openid
-- has a server-side default. Timestamps are timestamptz: an instant, whatever the
-- session time zone of the client that writes or reads it.
-- Safe to run again: every statement is IF NOT EXISTS or OR REPLACE.
CREATE TABLE IF NOT EXISTS msg_list (
    id          BIGSERIAL PRIMARY KEY,
    app         VARCHAR(32),                        -- NULL: the app named default
    template    VARCHAR(128) NOT NULL,              -- template name, or a template_id one of them declares
    openid      VARCHAR(128) NOT NULL,
    params      TEXT NOT NULL DEFAULT '[]',         -- JSON array (positional) or object (by name)
    page        TEXT,                               -- overrides the template's page
    status      VARCHAR(16) NOT NULL DEFAULT 'wait'
                CONSTRAINT msg_list_status_check
                CHECK (status IN ('wait', 'sending', 'success', 'fail', 'cancelled')),
    priority    INTEGER NOT NULL DEFAULT 0,         -- higher is sent first
    send_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    expire_at   TIMESTAMPTZ,
    attempts    INTEGER NOT NULL DEFAULT 0,
    dedup_key   VARCHAR(191) CONSTRAINT msg_list_dedup_key UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at     TIMESTAMPTZ,
    claimed_by  VARCHAR(128),
    lease_until TIMESTAMPTZ,
    errcode     INTEGER,
    error       TEXT,
    msgid       VARCHAR(32)                         -- text: WeChat's msgid exceeds 2^53
);

-- The claim: WHERE status = 'wait' AND send_at <= $1 ORDER BY priority DESC, send_at, id
-- LIMIT n. Partial indexes hold only waiting rows, so they stay small however many
-- finished rows the table keeps. msg_list_claim is in the claim's order: a poll reads
-- n entries and stops, even with a backlog of millions of due rows. msg_list_due
-- serves the same WHERE as a range when most waiting rows are scheduled for later
-- (and expire_overdue); the planner picks between them from the statistics.
CREATE INDEX IF NOT EXISTS msg_list_claim ON msg_list (priority DESC, send_at, id)
    WHERE status = 'wait';
CREATE INDEX IF NOT EXISTS msg_list_due ON msg_list (send_at) WHERE status = 'wait';
-- stale_retry: WHERE status = 'sending' AND lease_until < now.
CREATE INDEX IF NOT EXISTS msg_list_lease ON msg_list (lease_until) WHERE status = 'sending';

-- Wake idle daemons at once when a row arrives (they LISTEN herald_msg_list; polling
-- stays the fallback). Once per statement: a bulk insert is one notification, and
-- PostgreSQL folds identical notifications of one transaction into one.
CREATE OR REPLACE FUNCTION herald_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NOTIFY herald_msg_list;
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS msg_list_notify ON msg_list;
CREATE TRIGGER msg_list_notify AFTER INSERT ON msg_list
    FOR EACH STATEMENT EXECUTE FUNCTION herald_notify();

CREATE TABLE IF NOT EXISTS access_token (
    app          VARCHAR(32) PRIMARY KEY,           -- configured app name
    token        TEXT,
    expires_at   TIMESTAMPTZ,
    refreshed_at TIMESTAMPTZ,
    refreshed_by VARCHAR(128)
);
