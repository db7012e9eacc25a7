#!/usr/bin/python3
"""A schema migration on a big store: how long `conclavectl migrate`
takes to apply audit/schema/<--migration>_*.sql (011 by default) to an
audit_record of --records rows, and whether the shipper's inserts wait
meanwhile.

    migrate_bench.py [--migration 011] [--records 1000000]
                     [--buffer-pool 128M] [--dir /tmp/migrate-bench]
                     [--keep]

Starts a private mariadbd (tests/lib/mariadb.py) with --buffer-pool
(128M is MariaDB's default), applies the migrations before it with the
release conclavectl, fills audit_record with --records records built in
SQL from a sequence (90% 1:1 "message" records, 10% "muc_message"
records of 10 rooms; every 100th message is a correction and every
500th a retraction, so mam_ref has values), then, with the migration
added to the schema directory:

    migrate    `conclavectl migrate` (the package's postinst path) while
               a second connection inserts one record every 100 ms as
               the shipper would: the migration's wall time and the
               longest single insert during it
    stmt       each statement of 011 alone (the MODIFY again, the index
               dropped and created again), with its own insert probe
    online     the online alternative to the MODIFY (a new virtual
               column, its index built with LOCK=NONE, then swapped for
               the old one), timed the same way, and whether the table
               it leaves is identical (SHOW CREATE TABLE) to 011's
    forms      which ALGORITHM= / LOCK= forms MariaDB accepts for each
               statement (probed on an empty copy of the table: the
               answer depends on the definition, not the rows)

stmt, online and forms are 011's alone.  For a migration that touches
mam_ref, the rows mam_ref selects (the column and, through the index
audit_record_mam_ref_ts, the index's entries) are compared before and
after it.

Prints the figures; asserts nothing.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))

from mariadb import MariaDB, MariaDBError  # noqa: E402

CTL = os.path.join(REPO, "build", "release", "conclavectl")
SCHEMA = os.path.join(REPO, "audit", "schema")

CONF = """events {}
http {
    conclave_domain example.com;
    conclave_audit_dir %(dir)s;
    conclave_audit_node bench;
    conclave_audit_key %(key)s;
    conclave_audit_db_socket %(socket)s;
    conclave_audit_db_user conclave;
    conclave_audit_db_password conclave-pw;
    conclave_audit_db_name conclave;
    conclave_audit_db_timeout 3600s;
}
"""

# 1:1 messages (writer 0) and room messages (writer 1), as the shipper
# stores them; payload params as the module writes them
FILL = """
SET SESSION sql_log_bin = 0;
INSERT INTO audit_record (node, writer_id, seq, ts_utc_us, event, status,
    actor_user, peer, actor_ip, session_id, transport, msg_type,
    stanza_id, body, payload, prev_hash, entry_hash)
SELECT 'bench', IF(s.seq % 10 = 0, 1, 0), s.seq,
    1700000000000000 + s.seq * 100,
    IF(s.seq % 10 = 0, 'muc_message', 'message'), 'success',
    CONCAT('user', s.seq % 200, '@example.com'),
    IF(s.seq % 10 = 0, CONCAT('room', s.seq % 7, '@conference.example.com'),
       CONCAT('user', (s.seq + 1) % 200, '@example.com')),
    '127.0.0.1', 'bench', 'tcp', IF(s.seq % 10 = 0, 'groupchat', 'chat'),
    CONCAT('m', s.seq), CONCAT('message number ', s.seq),
    CONCAT('{"v":1,"event":"', IF(s.seq % 10 = 0, 'muc_message', 'message'),
        '","seq":', s.seq, ',"params":{',
        CASE WHEN s.seq % 500 = 1 THEN CONCAT('"retract_id":"m', s.seq - 1,
                 '","retract_ns":"urn:xmpp:message-retract:1",')
             WHEN s.seq % 100 = 1 THEN CONCAT('"replace_id":"m', s.seq - 1,
                 '",')
             ELSE '' END,
        '"stanza":"<message xmlns=''jabber:client'' id=''m', s.seq,
        '''><body>message number ', s.seq, '</body></message>"}}'),
    REPEAT(0x00, 32), REPEAT(0x00, 32)
FROM seq_1_to_%(n)d s;
"""

# one record as the shipper inserts it, far from the filled range
PROBE = """INSERT INTO audit_record (node, writer_id, seq, ts_utc_us, event,
    status, actor_user, peer, actor_ip, session_id, transport, msg_type,
    stanza_id, body, payload, prev_hash, entry_hash)
VALUES ('probe', 9, %d, 1800000000000000, 'message', 'success',
    'alice@example.com', 'bob@example.com', '127.0.0.1', 'probe', 'tcp',
    'chat', 'p', 'probe', '{"v":1,"event":"message","params":{}}',
    REPEAT(0x00, 32), REPEAT(0x00, 32));"""

MODIFY = """ALTER TABLE audit_record MODIFY COLUMN mam_ref VARCHAR(300)
    AS (CASE WHEN event IN ('message', 'muc_message') THEN COALESCE(
        CONCAT('c:', JSON_VALUE(CONVERT(payload USING utf8mb4),
                                '$.params.replace_id')),
        CONCAT('r:', JSON_VALUE(CONVERT(payload USING utf8mb4),
                                '$.params.retract_id'))) END) VIRTUAL"""

INDEX = """CREATE INDEX audit_record_room
    ON audit_record (peer, event, ts_utc_us)"""

# the online alternative to the MODIFY: a new virtual column (the old
# one stays for the running module) and its own index
ADD_COLUMN = MODIFY.replace("MODIFY COLUMN mam_ref",
                            "ADD COLUMN mam_ref2")
ADD_INDEX = "CREATE INDEX audit_record_mam_ref2 ON audit_record " \
            "(mam_ref2, actor_user)"


class Prober(threading.Thread):
    """One insert every 100 ms on its own connection; the longest one."""

    def __init__(self, db):
        super().__init__(daemon=True)
        self.db = db
        self.stop = threading.Event()
        self.worst = 0.0
        self.count = 0
        self.errors = 0
        self.seq = int(time.time() * 1000)

    def run(self):
        while not self.stop.is_set():
            self.seq += 1
            t0 = time.monotonic()
            try:
                self.db.query(PROBE % self.seq, database=self.db.database,
                              timeout=3600)
                self.count += 1
            except MariaDBError:
                self.errors += 1
            self.worst = max(self.worst, time.monotonic() - t0)
            self.stop.wait(0.1)


def timed(db, what, fn):
    """fn() with the insert probe running: (seconds, worst insert)."""
    p = Prober(db)
    p.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    fn()
    took = time.monotonic() - t0
    p.stop.set()
    p.join()
    print("%-34s %8.1f s   longest insert meanwhile %6.2f s (%d inserts%s)"
          % (what, took, p.worst, p.count,
             ", %d failed" % p.errors if p.errors else ""))
    return took, p.worst


def online(db, q):
    """The online alternative, end to end: a new virtual column with
    the new expression (INSTANT), its index built with writes going on
    (INPLACE, LOCK=NONE), then the old column and index swapped for the
    new ones.  Run on the migrated store, so that the table it ends with
    can be compared with what 011 itself made."""
    show = "SHOW CREATE TABLE audit_record"
    before = q(show)[0][1]
    print()
    timed(db, "online 1: ADD COLUMN (INSTANT)",
          lambda: q(ADD_COLUMN.replace("mam_ref2", "mam_ref_new")
                    + ", ALGORITHM=INSTANT"))
    timed(db, "online 2: its index (LOCK=NONE)",
          lambda: q(ADD_INDEX.replace("mam_ref2", "mam_ref_new")
                    + " ALGORITHM=INPLACE LOCK=NONE"))
    # one ALTER cannot drop a virtual column together with anything else
    # in place; one step each, the cheapest form MariaDB takes
    steps = (("DROP INDEX audit_record_mam_ref", "old index"),
             ("DROP COLUMN mam_ref", "old column"),
             ("RENAME COLUMN mam_ref_new TO mam_ref, RENAME INDEX "
              "audit_record_mam_ref_new TO audit_record_mam_ref", "renames"))
    for n, (action, what) in enumerate(steps, 3):
        for form in ("ALGORITHM=INSTANT", "ALGORITHM=NOCOPY",
                     "ALGORITHM=INPLACE, LOCK=NONE", "ALGORITHM=COPY"):
            sql = "ALTER TABLE audit_record %s, %s" % (action, form)
            try:
                timed(db, "online %d: %s (%s)" % (n, what, form.split(",")[0]
                                                  .split("=")[1]),
                      lambda: q(sql))
                break
            except MariaDBError:
                continue
    after = q(show)[0][1]
    if after == before:
        print("the table ends as 011 leaves it: SHOW CREATE TABLE identical")
    else:
        print("the table differs from what 011 leaves:")
        for a, b in zip(before.split("\\n"), after.split("\\n")):
            if a != b:
                print("  011:    %s\n  online: %s" % (a, b))


def forms(db):
    """What MariaDB accepts for each statement, on an empty copy."""
    q = lambda sql: db.query(sql, database=db.database, timeout=600)
    out = []
    for name, base in (("MODIFY mam_ref", MODIFY),
                       ("CREATE INDEX audit_record_room", INDEX),
                       ("ADD COLUMN mam_ref2", ADD_COLUMN)):
        for form in ("ALGORITHM=INSTANT", "ALGORITHM=NOCOPY",
                     "ALGORITHM=INPLACE, LOCK=NONE", "ALGORITHM=INPLACE"):
            q("DROP TABLE IF EXISTS probe_copy; "
              "CREATE TABLE probe_copy LIKE audit_record;")
            if name.startswith("CREATE INDEX"):
                q("ALTER TABLE probe_copy DROP INDEX audit_record_room")
                sql = base.replace("ON audit_record", "ON probe_copy") \
                    + " " + form.replace(",", "")
            else:
                sql = base.replace("TABLE audit_record", "TABLE probe_copy") \
                    + ", " + form
            try:
                q(sql)
                out.append((name, form, "accepted"))
            except MariaDBError as e:
                m = re.search(r"ERROR \d+ \(\w+\)[^:]*: (.*)", str(e))
                out.append((name, form, m.group(1).split(" (sql:")[0]
                            if m else str(e)))
    q("DROP TABLE IF EXISTS probe_copy")
    print("\nforms MariaDB %s accepts (empty copy of the table):"
          % db.scalar("SELECT VERSION()"))
    for name, form, res in out:
        print("  %-30s %-28s %s" % (name, form, res))


def mam_ref_indexed(q):
    return q("SELECT COUNT(*) FROM information_schema.statistics WHERE "
             "table_schema = DATABASE() AND table_name = 'audit_record' "
             "AND index_name = 'audit_record_mam_ref_ts'")[0][0] != "0"


def mam_refs(q):
    """What mam_ref holds: computed from the rows, and as the index
    audit_record_mam_ref_ts holds it."""
    rows = q("SELECT node, writer_id, seq, mam_ref FROM audit_record "
             "IGNORE INDEX (audit_record_mam_ref_ts) WHERE mam_ref IS NOT "
             "NULL ORDER BY node, writer_id, seq")
    index = q("SELECT mam_ref, actor_user, ts_utc_us FROM audit_record "
              "FORCE INDEX (audit_record_mam_ref_ts) WHERE mam_ref IS NOT "
              "NULL ORDER BY mam_ref, actor_user, ts_utc_us")
    return rows, index


def ctl(conf, *args):
    r = subprocess.run([CTL, "--config", conf] + list(args),
                       capture_output=True, text=True, timeout=7200)
    if r.returncode != 0:
        raise RuntimeError("conclavectl %s: %s%s" % (" ".join(args),
                                                     r.stdout, r.stderr))
    return r.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--migration", default="011",
                    help="the schema file's number, NNN")
    ap.add_argument("--records", type=int, default=1000000)
    ap.add_argument("--buffer-pool", default="128M")
    ap.add_argument("--dir", default="/tmp/migrate-bench")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    mfile = [f for f in os.listdir(SCHEMA)
             if f.startswith(a.migration + "_") and f.endswith(".sql")]
    if len(mfile) != 1:
        sys.exit("no single audit/schema/%s_*.sql" % a.migration)
    mfile = mfile[0]

    if not os.path.isfile(CTL):
        sys.exit("%s is missing: run make first" % CTL)

    shutil.rmtree(a.dir, ignore_errors=True)
    os.makedirs(os.path.join(a.dir, "journal"))
    schema = os.path.join(a.dir, "schema")
    os.makedirs(schema)
    for f in sorted(os.listdir(SCHEMA)):
        if f.endswith(".sql") and f < a.migration:
            shutil.copy(os.path.join(SCHEMA, f), schema)

    db = MariaDB(os.path.join(a.dir, "mariadb"))
    db.extra_args = ["--innodb-buffer-pool-size=" + a.buffer_pool,
                     "--innodb-log-file-size=256M"]
    db.start()
    try:
        conf = os.path.join(a.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(CONF % {"dir": os.path.join(a.dir, "journal"),
                            "key": os.path.join(a.dir, "audit.key"),
                            "socket": db.socket})
        ctl(conf, "keygen")
        ctl(conf, "migrate", "--schema", schema)

        t0 = time.monotonic()
        db.query(FILL.replace("%(n)d", str(a.records)),
                 database=db.database, timeout=7200)
        fill = time.monotonic() - t0
        size = db.scalar("SELECT ROUND((data_length + index_length) / 1048576)"
                         " FROM information_schema.tables WHERE table_name"
                         " = 'audit_record'")
        q = lambda sql: db.query(sql, database=db.database, timeout=7200)
        print("store: %d records, %s MB with indexes (fill %.1f s), "
              "buffer pool %s, schema at %s"
              % (a.records, size, fill, a.buffer_pool,
                 q("SELECT MAX(version) FROM schema_version")[0][0]))
        refs = None
        if mam_ref_indexed(q):
            refs = mam_refs(q)

        shutil.copy(os.path.join(SCHEMA, mfile), schema)
        print()
        timed(db, "conclavectl migrate (%s)" % a.migration,
              lambda: ctl(conf, "migrate", "--schema", schema))
        v = db.scalar("SELECT MAX(version) FROM schema_version",
                      database=db.database)
        print("schema_version now %s" % v)
        if refs is not None:
            after = mam_refs(q)
            print("mam_ref: %d rows with a value, %d index entries; %s"
                  % (len(after[0]), len(after[1]),
                     "the same as before" if after == refs
                     else "NOT the same as before"))
        if a.migration != "011":
            return

        timed(db, "011 stmt 1: MODIFY mam_ref", lambda: q(MODIFY))
        q("DROP INDEX audit_record_room ON audit_record")
        timed(db, "011 stmt 2: CREATE INDEX room", lambda: q(INDEX))
        online(db, q)

        forms(db)
    finally:
        db.stop()
        if not a.keep:
            shutil.rmtree(a.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
