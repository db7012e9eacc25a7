-- Conclave schema 004: what XEP-0313 history needs from audit_record
-- (docs/history.md).  There is no archive table: a user's history is
-- the "message" records they sent (actor_user) or received (peer), so
-- compliance and users read the same rows.  This file only adds an
-- index and a derived column; every statement is safe to repeat.

-- Corrections (XEP-0308) and retractions (XEP-0424) are records of
-- their own whose params name the original's id; the history finds
-- them through this column ("c:<id>" or "r:<id>").  It is computed by
-- MariaDB from the payload and indexed, never written by anyone, so
-- the payload stays the only source.
ALTER TABLE audit_record ADD COLUMN IF NOT EXISTS mam_ref VARCHAR(300)
    AS (CASE WHEN event = 'message' THEN COALESCE(
        CONCAT('c:', JSON_VALUE(CONVERT(payload USING utf8mb4),
                                '$.params.replace_id')),
        CONCAT('r:', JSON_VALUE(CONVERT(payload USING utf8mb4),
                                '$.params.retract_id'))) END) VIRTUAL;

CREATE INDEX IF NOT EXISTS audit_record_mam_ref
    ON audit_record (mam_ref, actor_user);

-- One conversation ("with"): what the user sent to the peer, and what
-- the peer sent to the user, are both (actor_user, peer, ts) ranges.
CREATE INDEX IF NOT EXISTS audit_record_conversation
    ON audit_record (actor_user, peer, ts_utc_us);
