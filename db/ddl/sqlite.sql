-- Herald reference schema, SQLite 3.35+ (RETURNING).
-- Applications insert rows with plain SQL; every column but template and openid
-- has a server-side default. Timestamps are UTC text in CURRENT_TIMESTAMP's form
-- (YYYY-MM-DD HH:MM:SS, fractions allowed) so rows written by any program compare
-- correctly with Herald's own.
CREATE TABLE IF NOT EXISTS msg_list (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,  -- 64-bit; AUTOINCREMENT: ids are never reused after purge
    app         VARCHAR(32),                        -- NULL: the app named default
    template    VARCHAR(128) NOT NULL,              -- template name, or a template_id one of them declares
    openid      VARCHAR(128) NOT NULL,
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
    msgid       VARCHAR(32)                         -- text: WeChat's msgid exceeds 2^53
);
-- The claim path: WHERE status = 'wait' AND send_at <= now ORDER BY priority DESC,
-- send_at, id LIMIT n. This index serves the filter and the order, so a claim reads
-- about n entries however many finished rows, or due rows, the table holds.
CREATE INDEX IF NOT EXISTS msg_list_claim ON msg_list (status, priority DESC, send_at, id);
-- Due-row scans that do not sort (expiry, the oldest waiting row, stale_retry by
-- status) and counts per status.
CREATE INDEX IF NOT EXISTS msg_list_status ON msg_list (status, send_at);

CREATE TABLE IF NOT EXISTS access_token (
    app          VARCHAR(32) PRIMARY KEY,           -- configured app name
    token        TEXT,
    expires_at   DATETIME,
    refreshed_at DATETIME,
    refreshed_by VARCHAR(128)
);
