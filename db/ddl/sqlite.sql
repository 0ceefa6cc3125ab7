-- Herald reference schema, SQLite 3.35+ (RETURNING). Schema version 3.
-- Applications insert rows with plain SQL; every column but template and openid
-- has a server-side default. Timestamps are UTC text in CURRENT_TIMESTAMP's form
-- (YYYY-MM-DD HH:MM:SS, fractions allowed) so rows written by any program compare
-- correctly with Herald's own; the triggers at the end turn the other forms languages
-- write by habit (ISO 8601 with T, Z or an offset; Unix epoch seconds) into that form
-- at INSERT, and refuse a value that is no time at all.
CREATE TABLE IF NOT EXISTS msg_list (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,  -- 64-bit; AUTOINCREMENT: ids are never reused after purge
    app         VARCHAR(32),                        -- NULL: the app named default
    template    VARCHAR(128) NOT NULL,              -- template name, or a template_id one of them declares
    openid      VARCHAR(128) NOT NULL,              -- WeChat recipient ('' for a row that only has a phone)
    params      TEXT NOT NULL DEFAULT '[]',         -- JSON array (positional) or object (by name)
    page        TEXT,                               -- overrides the template's page
    status      VARCHAR(16) NOT NULL DEFAULT 'wait'
                CHECK (status IN ('wait', 'sending', 'success', 'fail', 'cancelled')),
    priority    INTEGER NOT NULL DEFAULT 0,         -- higher is sent first
    send_at     DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    expire_at   DATETIME,
    attempts    INTEGER NOT NULL DEFAULT 0,
    dedup_key   VARCHAR(191) UNIQUE,
    created_at  DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at  DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    sent_at     DATETIME,
    claimed_by  VARCHAR(128),
    lease_until DATETIME,
    errcode     INTEGER,
    error       TEXT,
    msgid       VARCHAR(32),                        -- text: WeChat's msgid exceeds 2^53
    phone       VARCHAR(32),                        -- E.164 (+8613800138000), for the sms channel
    parent_id   BIGINT,                             -- the row this one is a fallback hop of
    started_at  DATETIME,                           -- when the send of the current claim began
    receipt     VARCHAR(16),                        -- delivered | failed (from WeChat or SMS reports)
    receipt_error TEXT,
    receipt_at  DATETIME,
    -- v3 (spending grants): among waiting rows with the same app, openid and
    -- collapse_key only the newest is sent; the older ones end cancelled
    collapse_key VARCHAR(128) CONSTRAINT msg_list_collapse_key_check
                CHECK (collapse_key IS NULL OR (typeof(collapse_key) = 'text'
                                                AND length(collapse_key) <= 128))
);
-- The claim path: WHERE status = 'wait' AND send_at <= now ORDER BY priority DESC,
-- send_at, id LIMIT n. This index serves the filter and the order, so a claim reads
-- about n entries however many finished rows, or due rows, the table holds. It holds
-- waiting rows only (v3; before, every row under a status prefix): a claim takes a
-- row out of it and no later write of that row touches it, which spares two index
-- writes per message, and finished rows do not grow it.
-- (status leads although it is always 'wait' here: the planner then sees the claim's
-- equality on it and picks this index, as it did the full one, rather than a range of
-- msg_list_status and a sort of every due row.)
CREATE INDEX IF NOT EXISTS msg_list_claim ON msg_list (status, priority DESC, send_at, id)
    WHERE status = 'wait';
-- Due-row scans that do not sort (expiry, the oldest waiting row, stale_retry by
-- status) and counts per status.
CREATE INDEX IF NOT EXISTS msg_list_status ON msg_list (status, send_at);
-- Receipts and searches find a row by the msgid its channel returned.
CREATE INDEX IF NOT EXISTS msg_list_msgid ON msg_list (msgid) WHERE msgid IS NOT NULL;
-- A fallback chain: the hops of a row.
CREATE INDEX IF NOT EXISTS msg_list_parent ON msg_list (parent_id) WHERE parent_id IS NOT NULL;
-- Looking up one user's messages (show, console search).
CREATE INDEX IF NOT EXISTS msg_list_openid ON msg_list (openid, id);
-- The console's sends per minute and receipts over the last hours: a range of sent_at,
-- answered from the index alone.
CREATE INDEX IF NOT EXISTS msg_list_sent ON msg_list (sent_at, receipt) WHERE sent_at IS NOT NULL;
-- v3: a claimed row with a collapse_key looks for a newer row with the same key
-- (db/spending.py); rows without one are not in this index at all.
CREATE INDEX IF NOT EXISTS msg_list_collapse ON msg_list (collapse_key, openid, id)
    WHERE collapse_key IS NOT NULL;

CREATE TABLE IF NOT EXISTS access_token (
    app          VARCHAR(32) PRIMARY KEY,           -- configured app name
    token        TEXT,
    expires_at   DATETIME,
    refreshed_at DATETIME,
    refreshed_by VARCHAR(128),
    -- v3 (token claims): the daemon fetching a new token now, and until when its
    -- right to do so holds (another takes over after it, if it died)
    claimed_by   VARCHAR(128),
    claim_until  DATETIME
);

-- The inbox of facts pushed to Herald: WeChat's message push (source wechat), SMS
-- status reports (source sms), and grants the application reports itself (source app:
-- INSERT INTO push_event (app, source, kind, openid, payload) VALUES ('default', 'app',
-- 'grant', 'oUser', '{"template_id": "...", "result": "accept"}')).
CREATE TABLE IF NOT EXISTS push_event (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    app         VARCHAR(32),                        -- NULL: the app named default
    source      VARCHAR(16) NOT NULL DEFAULT 'app', -- wechat | sms | app
    kind        VARCHAR(64) NOT NULL,               -- the event name, or grant
    openid      VARCHAR(128),
    dedup_key   VARCHAR(191) UNIQUE,                -- a retried push is stored once
    payload     TEXT NOT NULL DEFAULT '{}',         -- JSON
    received_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    applied_at  DATETIME,                           -- NULL: not yet applied
    error       TEXT,                               -- why it could not be applied
    next_check_at DATETIME                          -- v3: a waiting receipt's next look
);
CREATE INDEX IF NOT EXISTS push_event_pending ON push_event (applied_at, id);
CREATE INDEX IF NOT EXISTS push_event_received ON push_event (received_at);

-- What Herald knows of each user's grants per template (one-time subscriptions are
-- used up one message each). balance NULL: unknown.
CREATE TABLE IF NOT EXISTS subscribe_grant (
    app         VARCHAR(32) NOT NULL,
    openid      VARCHAR(128) NOT NULL,
    template_id VARCHAR(128) NOT NULL,
    balance     INTEGER,
    status      VARCHAR(16) NOT NULL DEFAULT 'accept'
                CHECK (status IN ('accept', 'reject', 'ban')),
    updated_at  DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (app, openid, template_id)
);

-- One row's history: claims, attempts, retries, receipts, cancels, hand-backs.
CREATE TABLE IF NOT EXISTS msg_event (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id      BIGINT NOT NULL,                    -- msg_list.id
    at          DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
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
    started_at    DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    last_seen     DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    last_dispatch DATETIME,
    info          TEXT                              -- JSON: token expiry, alerts, counters
);

-- Which schema version this database has (upgrades apply the missing steps in order).
CREATE TABLE IF NOT EXISTS herald_schema (
    version     INTEGER PRIMARY KEY,
    applied_at  DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    description TEXT
);

-- Application rows arrive with timestamps in every form. Herald's own form (and
-- CURRENT_TIMESTAMP's) passes untouched; ISO 8601 with T, Z or an offset and Unix
-- epoch seconds are rewritten to UTC text at once, so the claim index keeps its
-- order and no row is held or sent early; anything else is refused at INSERT with a
-- message naming the column. SQLite's own date functions do the parsing, so a row
-- written by any program (the sqlite3 shell included) gets the same treatment. Text
-- must start with a date (SQLite alone would read '12:00' as 2000-01-01 12:00 and send
-- the row at once), and the check for Herald's own form uses IS: datetime() of text
-- SQLite cannot read is NULL, which `=` would have let through ('0000-00-00 00:00:00').
-- The triggers are dropped and created again on every init-db/start, so a database
-- made by an earlier build gets the current bodies.
-- herald:timestamp-triggers send_at expire_at? created_at

DROP TRIGGER IF EXISTS msg_list_priority_insert;
CREATE TRIGGER msg_list_priority_insert AFTER INSERT ON msg_list
WHEN typeof(NEW.priority) != 'integer'
BEGIN
    SELECT RAISE(ABORT, 'msg_list.priority must be an integer');
END;

DROP TRIGGER IF EXISTS msg_list_priority_update;
CREATE TRIGGER msg_list_priority_update AFTER UPDATE OF priority ON msg_list
WHEN typeof(NEW.priority) != 'integer'
BEGIN
    SELECT RAISE(ABORT, 'msg_list.priority must be an integer');
END;

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
    held_until  DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    reason      TEXT,                               -- the answer that set it
    set_by      VARCHAR(128) NOT NULL,              -- the daemon that saw the answer
    set_at      DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    lifted_by   VARCHAR(128),                       -- who ended it early (cli:<user>)
    lifted_at   DATETIME,
    PRIMARY KEY (app, channel)
);
-- ---- end of quota holds ----
