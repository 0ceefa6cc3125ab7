-- Herald reference schema, MySQL 8.0.16+ / MariaDB 10.6+ (FOR UPDATE SKIP LOCKED,
-- enforced CHECK, expression default on TEXT).
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
    KEY msg_list_lease (status, lease_until)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS access_token (
    app          VARCHAR(32) NOT NULL PRIMARY KEY,  -- configured app name
    token        TEXT NULL,
    expires_at   TIMESTAMP(6) NULL DEFAULT NULL,
    refreshed_at TIMESTAMP(6) NULL DEFAULT NULL,
    refreshed_by VARCHAR(128) NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
