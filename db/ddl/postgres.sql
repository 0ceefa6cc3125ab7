-- Herald reference schema, PostgreSQL 12+ (FOR UPDATE SKIP LOCKED; the claim uses WITH ... AS MATERIALIZED).
-- Schema version 3.
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
    msgid       VARCHAR(32),                        -- text: WeChat's msgid exceeds 2^53
    phone       VARCHAR(32),                        -- E.164 (+8613800138000), for the sms channel
    parent_id   BIGINT,                             -- the row this one is a fallback hop of
    started_at  TIMESTAMPTZ,                        -- when the send of the current claim began
    receipt     VARCHAR(16),                        -- delivered | failed (from WeChat or SMS reports)
    receipt_error TEXT,
    receipt_at  TIMESTAMPTZ,
    -- v3 (spending grants): among waiting rows with the same app, openid and
    -- collapse_key only the newest is sent; the older ones end cancelled
    collapse_key VARCHAR(128)
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
-- Receipts and searches find a row by the msgid its channel returned.
CREATE INDEX IF NOT EXISTS msg_list_msgid ON msg_list (msgid) WHERE msgid IS NOT NULL;
-- A fallback chain: the hops of a row.
CREATE INDEX IF NOT EXISTS msg_list_parent ON msg_list (parent_id) WHERE parent_id IS NOT NULL;
-- Looking up one user's messages (show, console search); counts per status.
CREATE INDEX IF NOT EXISTS msg_list_openid ON msg_list (openid, id);
CREATE INDEX IF NOT EXISTS msg_list_status ON msg_list (status, updated_at);
-- The console's sends per minute and receipts over the last hours: a range of sent_at,
-- answered from the index alone.
CREATE INDEX IF NOT EXISTS msg_list_sent ON msg_list (sent_at, receipt) WHERE sent_at IS NOT NULL;
-- v3: a claimed row with a collapse_key looks for a newer row with the same key
-- (db/spending.py); rows without one are not in this index at all.
CREATE INDEX IF NOT EXISTS msg_list_collapse ON msg_list (collapse_key, openid, id)
    WHERE collapse_key IS NOT NULL;

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
    refreshed_by VARCHAR(128),
    -- v3 (token claims): the daemon fetching a new token now, and until when its
    -- right to do so holds (another takes over after it, if it died)
    claimed_by   VARCHAR(128),
    claim_until  TIMESTAMPTZ
);

-- The inbox of facts pushed to Herald: WeChat's message push (source wechat), SMS
-- status reports (source sms), and grants the application reports itself (source app:
-- INSERT INTO push_event (app, source, kind, openid, payload) VALUES ('default', 'app',
-- 'grant', 'oUser', '{"template_id": "...", "result": "accept"}')).
CREATE TABLE IF NOT EXISTS push_event (
    id          BIGSERIAL PRIMARY KEY,
    app         VARCHAR(32),                        -- NULL: the app named default
    source      VARCHAR(16) NOT NULL DEFAULT 'app', -- wechat | sms | app
    kind        VARCHAR(64) NOT NULL,               -- the event name, or grant
    openid      VARCHAR(128),
    dedup_key   VARCHAR(191) CONSTRAINT push_event_dedup_key UNIQUE,  -- a retried push is stored once
    payload     TEXT NOT NULL DEFAULT '{}',         -- JSON
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_at  TIMESTAMPTZ,                        -- NULL: not yet applied
    error       TEXT,                               -- why it could not be applied
    next_check_at TIMESTAMPTZ                       -- v3: a waiting receipt's next look
);
CREATE INDEX IF NOT EXISTS push_event_pending ON push_event (id) WHERE applied_at IS NULL;
CREATE INDEX IF NOT EXISTS push_event_received ON push_event (received_at);

-- What Herald knows of each user's grants per template (one-time subscriptions are
-- used up one message each). balance NULL: unknown.
CREATE TABLE IF NOT EXISTS subscribe_grant (
    app         VARCHAR(32) NOT NULL,
    openid      VARCHAR(128) NOT NULL,
    template_id VARCHAR(128) NOT NULL,
    balance     INTEGER,
    status      VARCHAR(16) NOT NULL DEFAULT 'accept'
                CONSTRAINT subscribe_grant_status_check CHECK (status IN ('accept', 'reject', 'ban')),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (app, openid, template_id)
);

-- One row's history: claims, attempts, retries, receipts, cancels, hand-backs.
CREATE TABLE IF NOT EXISTS msg_event (
    id          BIGSERIAL PRIMARY KEY,
    msg_id      BIGINT NOT NULL,                    -- msg_list.id
    at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    kind        VARCHAR(16) NOT NULL,
    channel     VARCHAR(16),
    errcode     INTEGER,
    detail      TEXT,
    daemon      VARCHAR(128)
);
CREATE INDEX IF NOT EXISTS msg_event_msg ON msg_event (msg_id, id);

-- Heartbeats of running daemons (run) and web servers (serve).
CREATE TABLE IF NOT EXISTS herald_daemon (
    daemon_id     VARCHAR(128) PRIMARY KEY,
    role          VARCHAR(16) NOT NULL,             -- run | serve
    host          VARCHAR(64) NOT NULL,
    pid           INTEGER NOT NULL,
    version       VARCHAR(32) NOT NULL,
    started_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen     TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_dispatch TIMESTAMPTZ,
    info          TEXT                              -- JSON: token expiry, alerts, counters
);

-- Which schema version this database has (upgrades apply the missing steps in order).
CREATE TABLE IF NOT EXISTS herald_schema (
    version     INTEGER PRIMARY KEY,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    description TEXT
);

-- Schema version 3, the push inbox (issue 17: trust at the seams) -------------------
-- Receipts waiting for their row are looked at again at next_check_at (backing off),
-- not on every run: the applier reads new events (next_check_at NULL) in id order and,
-- apart, the rechecks that are due, each through this index.
CREATE INDEX IF NOT EXISTS push_event_due ON push_event (next_check_at, id)
    WHERE applied_at IS NULL;
-- Plaintext-mode pushes: their signature covers Token, timestamp and nonce but not the
-- body, so each (app, timestamp, nonce) is kept with the hash of the body it came with
-- while its timestamp is inside web.push_max_age: the same body again is WeChat's retry,
-- another body is a forgery. Rows older than the window are purged by the receiver.
CREATE TABLE IF NOT EXISTS push_nonce (
    app         VARCHAR(32) NOT NULL,
    ts          BIGINT NOT NULL,                    -- the push's timestamp, Unix seconds
    nonce       VARCHAR(64) NOT NULL,
    body_hash   VARCHAR(64) NOT NULL,               -- sha256 of the body, hex
    PRIMARY KEY (app, ts, nonce)
);
CREATE INDEX IF NOT EXISTS push_nonce_ts ON push_nonce (ts);
-- End of version 3, the push inbox ---------------------------------------------------

-- ---- schema version 3: quota holds (jobs/dispatch.py, db/holds.py) ----
-- WeChat said an app's quota on a channel is spent (45009: for the day, 45011: for the
-- minute): every daemon on this database holds that app's sends on that channel until
-- held_until, and later dispatch runs too. One row per app and channel, the latest
-- hold; `herald holds --lift` ends one early and says who did (lifted_by, lifted_at).
CREATE TABLE IF NOT EXISTS quota_hold (
    app         VARCHAR(32) NOT NULL,               -- configured app name
    channel     VARCHAR(16) NOT NULL,               -- subscribe | uniform | oa_template | sms | webhook
    held_until  TIMESTAMPTZ NOT NULL DEFAULT now(),
    reason      TEXT,                               -- the answer that set it
    set_by      VARCHAR(128) NOT NULL,              -- the daemon that saw the answer
    set_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    lifted_by   VARCHAR(128),                       -- who ended it early (cli:<user>)
    lifted_at   TIMESTAMPTZ,
    PRIMARY KEY (app, channel)
);
-- ---- end of quota holds ----
