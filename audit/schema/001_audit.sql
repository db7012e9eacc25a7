-- Conclave audit schema, version 1 (docs/audit.md "Schema").
--
-- Applied by caud_db_migrate() (`conclavectl migrate`): statements end
-- with ';' at the end of a line, lines starting with "--" are comments.
-- MariaDB commits implicitly around DDL, so a file may be cut short by
-- a crash and then run again from the start: every statement here must
-- be safe to repeat (IF NOT EXISTS).
--
-- Who writes what: the shipper (audit/src/caud_ship.c) inserts
-- audit_record rows and moves audit_journal.shipped_seq in the same
-- transaction; rows are never updated or deleted by Conclave.

CREATE TABLE IF NOT EXISTS schema_version (
    version     INT NOT NULL PRIMARY KEY,
    name        VARCHAR(255) NOT NULL,
    applied_at  DATETIME(6) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- One row per journal (node, writer): how far MariaDB has it, and the
-- entry_hash of record shipped_seq, which the next record's prev_hash
-- must equal.
CREATE TABLE IF NOT EXISTS audit_journal (
    node         VARCHAR(64) NOT NULL,
    writer_id    INT UNSIGNED NOT NULL,
    shipped_seq  BIGINT UNSIGNED NOT NULL,
    head_hash    BINARY(32) NOT NULL,
    updated_at   DATETIME(6) NOT NULL,
    PRIMARY KEY (node, writer_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- One row per record.  payload holds the canonical JSON exactly as
-- journaled (it is what entry_hash covers); the other columns are
-- copies of fields of it for the compliance queries, cut to their
-- width (caud_columns() in caud_ship.c).
CREATE TABLE IF NOT EXISTS audit_record (
    node        VARCHAR(64) NOT NULL,
    writer_id   INT UNSIGNED NOT NULL,
    seq         BIGINT UNSIGNED NOT NULL,
    ts_utc_us   BIGINT NOT NULL,
    event       VARCHAR(32) NULL,
    status      VARCHAR(8) NULL,
    actor_user  VARCHAR(255) NULL,
    peer        VARCHAR(255) NULL,
    actor_ip    VARCHAR(45) NULL,
    session_id  VARCHAR(64) NULL,
    transport   VARCHAR(16) NULL,
    msg_type    VARCHAR(16) NULL,
    stanza_id   VARCHAR(255) NULL,
    body        MEDIUMTEXT NULL,
    payload     MEDIUMBLOB NOT NULL,
    prev_hash   BINARY(32) NOT NULL,
    entry_hash  BINARY(32) NOT NULL,
    PRIMARY KEY (node, writer_id, seq),
    KEY audit_record_actor (actor_user, ts_utc_us),
    KEY audit_record_peer (peer, ts_utc_us),
    KEY audit_record_ts (ts_utc_us),
    KEY audit_record_event (event, ts_utc_us)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Signed checkpoints (C2SP tlog-checkpoint notes) as the journal
-- directory holds them; root is parsed out of the note, the signature
-- is checked by `conclavectl verify`, not on the way in.
CREATE TABLE IF NOT EXISTS audit_checkpoint (
    node       VARCHAR(64) NOT NULL,
    writer_id  INT UNSIGNED NOT NULL,
    size       BIGINT UNSIGNED NOT NULL,
    root       BINARY(32) NOT NULL,
    note       TEXT NOT NULL,
    stored_at  DATETIME(6) NOT NULL,
    PRIMARY KEY (node, writer_id, size)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
