-- Herald reference schema, MySQL 8.0.16+ / MariaDB 10.6+ (FOR UPDATE SKIP LOCKED,
-- enforced CHECK, expression default on TEXT). Schema version 3.
-- Run the session in a strict sql_mode (STRICT_TRANS_TABLES, the default): with
-- sql_mode = '' MySQL turns a bad time into 0000-00-00, which Herald fails row by row.
-- Applications insert rows with plain SQL; every column but template and openid
-- has a server-side default. Timestamps are TIMESTAMP(6): the server converts from
-- the writing session's time zone to UTC and back, so a client in +08:00 writing
-- its local time stores the right instant (Herald's own sessions run in UTC).
-- TIMESTAMP ends at 2038-01-19 03:14:07 UTC: write no later instant (expire_at too).
-- Nullable TIMESTAMP columns say NULL DEFAULT NULL: with explicit_defaults_for_timestamp
-- off, a bare TIMESTAMP column would become NOT NULL with an automatic default.
-- utf8mb4_bin: strings compare exactly (dedup_key 'A1' is not 'a1'), as on
-- PostgreSQL and SQLite. The indexes live inside CREATE TABLE so the script stays
-- safe to run twice (MySQL has no CREATE INDEX IF NOT EXISTS).
CREATE TABLE IF NOT EXISTS msg_list (
    id          BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    app         VARCHAR(32) NULL,                   -- NULL: the app named default
    template    VARCHAR(128) NOT NULL,              -- template name, or a template_id one of them declares
    openid      VARCHAR(128) NOT NULL,
    params      TEXT NOT NULL DEFAULT ('[]'),       -- JSON array (positional) or object (by name)
    page        TEXT NULL,                          -- overrides the template's page
    status      VARCHAR(16) NOT NULL DEFAULT 'wait',
    priority    INT NOT NULL DEFAULT 0,             -- higher is sent first
    send_at     TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    expire_at   TIMESTAMP(6) NULL DEFAULT NULL,
    attempts    INT NOT NULL DEFAULT 0,
    dedup_key   VARCHAR(191) NULL,
    created_at  TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at  TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    sent_at     TIMESTAMP(6) NULL DEFAULT NULL,
    claimed_by  VARCHAR(128) NULL,
    lease_until TIMESTAMP(6) NULL DEFAULT NULL,
    errcode     INT NULL,
    error       TEXT NULL,
    msgid       VARCHAR(32) NULL,                   -- text: WeChat's msgid exceeds 2^53
    phone       VARCHAR(32) NULL,                   -- E.164 (+8613800138000), for the sms channel
    parent_id   BIGINT NULL,                        -- the row this one is a fallback hop of
    started_at  TIMESTAMP(6) NULL DEFAULT NULL,     -- when the send of the current claim began
    receipt     VARCHAR(16) NULL,                   -- delivered | failed (from WeChat or SMS reports)
    receipt_error TEXT NULL,
    receipt_at  TIMESTAMP(6) NULL DEFAULT NULL,
    -- v3 (spending grants): among waiting rows with the same app, openid and
    -- collapse_key only the newest is sent. Wider than the 128 characters allowed, with
    -- a CHECK: with sql_mode = '' a VARCHAR(128) would cut a longer key silently (and
    -- two different keys could then cancel each other's rows); the CHECK refuses it.
    collapse_key VARCHAR(255) NULL,
    CONSTRAINT msg_list_collapse_key_check CHECK (CHAR_LENGTH(collapse_key) <= 128),
    CONSTRAINT msg_list_status_check
        CHECK (status IN ('wait', 'sending', 'success', 'fail', 'cancelled')),
    UNIQUE KEY msg_list_dedup_key (dedup_key),
    -- The claim: WHERE status = 'wait' AND send_at <= ? ORDER BY priority DESC, send_at,
    -- id LIMIT n FOR UPDATE SKIP LOCKED. InnoDB locks the rows it reads, so the index
    -- must give the claim's order: the scan then stops after n rows and locks only
    -- those, and a second daemon takes the next n. An index on (status, send_at)
    -- would make the server read and lock every due row before sorting, and the
    -- other daemons would find nothing to claim. (DESC needs MySQL 8 / MariaDB 10.8.)
    KEY msg_list_claim (status, priority DESC, send_at, id),
    -- stale_retry: WHERE status = 'sending' AND lease_until < now
    KEY msg_list_lease (status, lease_until),
    -- receipts and searches find a row by its msgid; a fallback chain by parent_id;
    -- one user's messages by openid
    KEY msg_list_msgid (msgid),
    KEY msg_list_parent (parent_id),
    KEY msg_list_openid (openid, id),
    -- the console's sends per minute and receipts over the last hours (index only)
    KEY msg_list_sent (sent_at, receipt),
    -- v3: a claimed row with a collapse_key looks for a newer row with the same key
    KEY msg_list_collapse (collapse_key, openid, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS access_token (
    app          VARCHAR(32) NOT NULL PRIMARY KEY,  -- configured app name
    token        TEXT NULL,
    expires_at   TIMESTAMP(6) NULL DEFAULT NULL,
    refreshed_at TIMESTAMP(6) NULL DEFAULT NULL,
    refreshed_by VARCHAR(128) NULL,
    -- v3 (token claims): the daemon fetching a new token now, and until when its
    -- right to do so holds (another takes over after it, if it died)
    claimed_by   VARCHAR(128) NULL,
    claim_until  TIMESTAMP(6) NULL DEFAULT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The inbox of facts pushed to Herald: WeChat's message push (source wechat), SMS
-- status reports (source sms), and grants the application reports itself (source app:
-- INSERT INTO push_event (app, source, kind, openid, payload) VALUES ('default', 'app',
-- 'grant', 'oUser', '{"template_id": "...", "result": "accept"}')).
CREATE TABLE IF NOT EXISTS push_event (
    id          BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    app         VARCHAR(32) NULL,                   -- NULL: the app named default
    source      VARCHAR(16) NOT NULL DEFAULT 'app', -- wechat | sms | app
    kind        VARCHAR(64) NOT NULL,               -- the event name, or grant
    openid      VARCHAR(128) NULL,
    dedup_key   VARCHAR(191) NULL,                  -- a retried push is stored once
    payload     TEXT NOT NULL DEFAULT ('{}'),       -- JSON
    received_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    applied_at  TIMESTAMP(6) NULL DEFAULT NULL,     -- NULL: not yet applied
    error       TEXT NULL,                          -- why it could not be applied
    next_check_at TIMESTAMP(6) NULL DEFAULT NULL,   -- v3: a waiting receipt's next look
    UNIQUE KEY push_event_dedup_key (dedup_key),
    KEY push_event_pending (applied_at, id),
    KEY push_event_received (received_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- What Herald knows of each user's grants per template (one-time subscriptions are
-- used up one message each). balance NULL: unknown.
CREATE TABLE IF NOT EXISTS subscribe_grant (
    app         VARCHAR(32) NOT NULL,
    openid      VARCHAR(128) NOT NULL,
    template_id VARCHAR(128) NOT NULL,
    balance     INT NULL,
    status      VARCHAR(16) NOT NULL DEFAULT 'accept',
    updated_at  TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (app, openid, template_id),
    CONSTRAINT subscribe_grant_status_check CHECK (status IN ('accept', 'reject', 'ban'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- One row's history: claims, attempts, retries, receipts, cancels, hand-backs.
CREATE TABLE IF NOT EXISTS msg_event (
    id          BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    msg_id      BIGINT NOT NULL,                    -- msg_list.id
    at          TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    kind        VARCHAR(16) NOT NULL,
    channel     VARCHAR(16) NULL,
    errcode     INT NULL,
    detail      TEXT NULL,
    daemon      VARCHAR(128) NULL,
    KEY msg_event_msg (msg_id, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Heartbeats of running daemons (run) and web servers (serve).
CREATE TABLE IF NOT EXISTS herald_daemon (
    daemon_id     VARCHAR(128) NOT NULL PRIMARY KEY,
    role          VARCHAR(16) NOT NULL,             -- run | serve
    host          VARCHAR(64) NOT NULL,
    pid           INT NOT NULL,
    version       VARCHAR(32) NOT NULL,
    started_at    TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    last_seen     TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    last_dispatch TIMESTAMP(6) NULL DEFAULT NULL,
    info          TEXT NULL                         -- JSON: token expiry, alerts, counters
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Which schema version this database has (upgrades apply the missing steps in order).
CREATE TABLE IF NOT EXISTS herald_schema (
    version     INT NOT NULL PRIMARY KEY,
    applied_at  TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    description TEXT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Schema version 3, the push inbox (issue 17: trust at the seams) -------------------
-- Receipts waiting for their row are looked at again at next_check_at (backing off),
-- not on every run: the applier reads new events (applied_at and next_check_at NULL)
-- in id order and, apart, the rechecks that are due, each through this index.
CREATE INDEX push_event_due ON push_event (applied_at, next_check_at, id);
-- Plaintext-mode pushes: their signature covers Token, timestamp and nonce but not the
-- body, so each (app, timestamp, nonce) is kept with the hash of the body it came with
-- while its timestamp is inside web.push_max_age: the same body again is WeChat's retry,
-- another body is a forgery. Rows older than the window are purged by the receiver.
CREATE TABLE IF NOT EXISTS push_nonce (
    app         VARCHAR(32) NOT NULL,
    ts          BIGINT NOT NULL,                    -- the push's timestamp, Unix seconds
    nonce       VARCHAR(64) NOT NULL,
    body_hash   VARCHAR(64) NOT NULL,               -- sha256 of the body, hex
    PRIMARY KEY (app, ts, nonce),
    KEY push_nonce_ts (ts)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
-- End of version 3, the push inbox ---------------------------------------------------

-- ---- schema version 3: quota holds (jobs/dispatch.py, db/holds.py) ----
-- WeChat said an app's quota on a channel is spent (45009: for the day, 45011: for the
-- minute): every daemon on this database holds that app's sends on that channel until
-- held_until, and later dispatch runs too. One row per app and channel, the latest
-- hold; `herald holds --lift` ends one early and says who did (lifted_by, lifted_at).
CREATE TABLE IF NOT EXISTS quota_hold (
    app         VARCHAR(32) NOT NULL,               -- configured app name
    channel     VARCHAR(16) NOT NULL,               -- subscribe | uniform | oa_template | sms | webhook
    held_until  TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    reason      TEXT NULL,                          -- the answer that set it
    set_by      VARCHAR(128) NOT NULL,              -- the daemon that saw the answer
    set_at      TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    lifted_by   VARCHAR(128) NULL,                  -- who ended it early (cli:<user>)
    lifted_at   TIMESTAMP(6) NULL DEFAULT NULL,
    PRIMARY KEY (app, channel)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
-- ---- end of quota holds ----
