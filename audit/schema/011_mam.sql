-- Conclave schema 011: what XEP-0313 section 5 (the history of a room)
-- needs from audit_record (docs/history.md "Rooms").  A room's archive
-- is its "muc_message" records (peer = the room's JID), the same rows
-- compliance exports.  Every statement is safe to repeat.

-- Corrections and retractions in a room are muc_message records whose
-- params name the original, like 1:1 messages (004_mam.sql): mam_ref
-- now covers both events.  MariaDB rebuilds the index on the column.
ALTER TABLE audit_record MODIFY COLUMN mam_ref VARCHAR(300)
    AS (CASE WHEN event IN ('message', 'muc_message') THEN COALESCE(
        CONCAT('c:', JSON_VALUE(CONVERT(payload USING utf8mb4),
                                '$.params.replace_id')),
        CONCAT('r:', JSON_VALUE(CONVERT(payload USING utf8mb4),
                                '$.params.retract_id'))) END) VIRTUAL;

-- A page of a room's history is one range of (peer, event, ts): the
-- room's joins, leaves and presence records are not in the way.
CREATE INDEX IF NOT EXISTS audit_record_room
    ON audit_record (peer, event, ts_utc_us);
