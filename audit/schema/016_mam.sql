-- Conclave schema 016: a page of history without a sort in its
-- per-message lookups (docs/history.md "How a query runs").
--
-- For each message of a page, MAM looks up its latest correction and
-- its first retraction (mam_ref = 'c:<id>' / 'r:<id>', by the same
-- sender, at or after it).  On (mam_ref, actor_user) those lookups
-- sorted their matches by time: a filesort set up for every message,
-- about a third of a page's time in MariaDB.  With ts_utc_us in the
-- index (and the primary key InnoDB appends), the matches come in the
-- order asked for, and the lookup stops at the first.
--
-- Online: an index on a virtual column is built in place without
-- locking the table (ALGORITHM=INPLACE, LOCK=NONE): chat and the
-- shipper go on writing while it is built.  Its cost is one read of
-- the table, computing mam_ref from each payload: about a minute per
-- 2,000,000 records on the test machine (2 shared cores), and the
-- index's size (one NULL entry a record, about 60 bytes).  The old
-- index is dropped after, which only changes metadata.
CREATE INDEX IF NOT EXISTS audit_record_mam_ref_ts
    ON audit_record (mam_ref, actor_user, ts_utc_us)
    ALGORITHM = INPLACE LOCK = NONE;

DROP INDEX IF EXISTS audit_record_mam_ref ON audit_record;
