-- Conclave compliance schema, version 5 (docs/compliance.md).
--
-- Exports, retention and legal holds.  Written by conclavectl (and the
-- console) through audit/src/caud_export.c and caud_retention.c; every
-- change of a policy or hold is also an audit record in the chain
-- (caud_admin_record()).  Every statement is safe to repeat (see
-- 001_audit.sql).

-- How far each named export stream got, per journal: the last seq it
-- covered.  Records are immutable and gapless per journal, and a
-- journal commits them in seq order, so a per-journal seq is an exact
-- cursor; a time alone skips records that share it or ship late
-- (Mattermost MM-29666).
CREATE TABLE IF NOT EXISTS export_cursor (
    name        VARCHAR(255) NOT NULL,
    node        VARCHAR(64) NOT NULL,
    writer_id   INT UNSIGNED NOT NULL,
    seq         BIGINT UNSIGNED NOT NULL,
    updated_at  DATETIME(6) NOT NULL,
    PRIMARY KEY (name, node, writer_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Settings of the compliance engine: "profile" (none, sec, mifid, cn).
CREATE TABLE IF NOT EXISTS compliance_setting (
    name        VARCHAR(64) NOT NULL PRIMARY KEY,
    value       VARCHAR(255) NOT NULL,
    updated_at  DATETIME(6) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Retention policies: scope global (target ''), room (a room JID) or
-- user (a bare JID); days -1 keeps for ever.
CREATE TABLE IF NOT EXISTS retention_policy (
    scope          VARCHAR(8) NOT NULL,
    target         VARCHAR(255) NOT NULL,
    messages_days  INT NOT NULL,
    signins_days   INT NOT NULL,
    updated_at     DATETIME(6) NOT NULL,
    PRIMARY KEY (scope, target)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Matter-scoped legal holds: custodians and rooms in legal_hold_scope,
-- an optional time range; active while released_at is NULL.
CREATE TABLE IF NOT EXISTS legal_hold (
    id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    matter       VARCHAR(255) NOT NULL,
    description  TEXT NULL,
    since_us     BIGINT NULL,
    until_us     BIGINT NULL,
    created_at   DATETIME(6) NOT NULL,
    created_by   VARCHAR(255) NOT NULL,
    released_at  DATETIME(6) NULL,
    released_by  VARCHAR(255) NULL,
    KEY legal_hold_matter (matter)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS legal_hold_scope (
    hold_id  BIGINT UNSIGNED NOT NULL,
    kind     VARCHAR(8) NOT NULL,
    jid      VARCHAR(255) NOT NULL,
    PRIMARY KEY (hold_id, kind, jid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Retention deletes rows of audit_record but keeps, per row, its place
-- in the chain (seq, prev_hash, entry_hash) as a tombstone; each batch
-- of tombstones is signed (note: "<prefix>/<writer>/prune", batch id,
-- row count, SHA-256 over the rows), so verify still checks the links
-- across a pruned range and knows the gap was retention.
CREATE TABLE IF NOT EXISTS audit_prune_batch (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    node        VARCHAR(64) NOT NULL,
    writer_id   INT UNSIGNED NOT NULL,
    records     INT UNSIGNED NOT NULL,
    digest      BINARY(32) NOT NULL,
    note        TEXT NOT NULL,
    pruned_at   DATETIME(6) NOT NULL,
    KEY audit_prune_batch_journal (node, writer_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS audit_tombstone (
    node        VARCHAR(64) NOT NULL,
    writer_id   INT UNSIGNED NOT NULL,
    seq         BIGINT UNSIGNED NOT NULL,
    ts_utc_us   BIGINT NOT NULL,
    event       VARCHAR(32) NULL,
    prev_hash   BINARY(32) NOT NULL,
    entry_hash  BINARY(32) NOT NULL,
    batch_id    BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (node, writer_id, seq),
    KEY audit_tombstone_batch (batch_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
