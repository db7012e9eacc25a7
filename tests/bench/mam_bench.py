#!/usr/bin/python3
"""MAM query latency (issue 7): a page of 50 from a 1,000,000-message
archive, as a client sees it (the iq out, the 50 results and <fin/>
back), through the whole module: the MariaDB adapter's thread pool,
the two index range scans, the merge, the corrections/retractions
lookups and the result XML.

    mam_bench.py [--messages 1000000] [--queries 1000] [--peers 100]
                 [--room-messages 1000000] [--server test,tuned]
                 [--keep DIR [--reuse]] [--slow-log FILE]
                 [--kinds room,room-nick,...] [--none-queries 5]

Starts slapd, mariadbd and nginx (tests/lib/appliance.py, the release
build), fills audit_record with --messages message records in which
alice is the sender or the recipient of every one (alternating, with
--peers peers, one every 100 us), as the shipper would have written
them, then runs, one at a time over one TLS connection:

    last      the newest page (RSM <before/>): what a client asks first
    random    a page after a random id of the archive (RSM <after/>)
    with      a page of one conversation after a random id of it
    room      the newest page of a room's history (XEP-0313 section 5,
              a query to the room's JID) of --room-messages records
              from 50 senders, in the same table as the 1:1 archive
    room-rnd  a page of that room after a random id
    room-nick the newest page of the room 'with' one occupant JID
              (room/user7: one record in 50 is theirs, read from the
              payload's params.nick while the room's range is scanned)
    room-jid  the same with the sender's real JID (user7@example.com,
              the (actor_user, peer, ts) index), by the room's owner
    room-none 'with' a nick that never spoke: the scan reads the whole
              room (--none-queries of them, default 5)

(--kinds picks some of them, comma-separated) and prints the EXPLAIN
of the room page query and of its two 'with' forms, then p50/p90/p99/max
per kind in ms.  --server tuned gives MariaDB a 3 GB buffer pool (the
test harness has 64 MB) and reads the table and the indexes a query
uses into it first, as on a server whose pool holds its archive;
with 64 MB, a page after a random id reads most of its rows from disk
(MariaDB reads with O_DIRECT: the OS cache does not help).
--keep DIR keeps the servers' directories; a later run with --keep DIR
--reuse starts on them and skips the filling when the archives are
there already (minutes at a million rows).  --slow-log FILE has
MariaDB log every statement of the timed queries (long_query_time=0,
with its plan) to FILE, for where the time goes.  Asserts nothing.
"""

import argparse
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))

from appliance import Appliance  # noqa: E402
from rawtcp import RawTCP  # noqa: E402

DB = "conclave"
NODE = "bench"
MUC = "conference.example.com"
ROOM = "bench@" + MUC


def fill(app, n, peers):
    """n message records, built in SQL from a sequence (MariaDB's
    SEQUENCE engine): the payload is the JSON the module writes, with
    the stanza and its stanza-id."""
    t0 = time.monotonic()
    app.mariadb.query("""
        SET SESSION sql_log_bin = 0;
        INSERT INTO audit_record (node, writer_id, seq, ts_utc_us, event,
            status, actor_user, peer, actor_ip, session_id, transport,
            msg_type, stanza_id, body, payload, prev_hash, entry_hash)
        SELECT '%(node)s', 0, s.seq, 1700000000000000 + s.seq * 100,
            'message', 'success',
            IF(s.seq %% 2, 'alice@example.com',
               CONCAT('peer', s.seq %% %(peers)d, '@example.com')),
            IF(s.seq %% 2, CONCAT('peer', s.seq %% %(peers)d,
                                  '@example.com'), 'alice@example.com'),
            '127.0.0.1', 'bench', 'tcp', 'chat', CONCAT('m', s.seq),
            CONCAT('message number ', s.seq),
            CONCAT('{"v":1,"event":"message","seq":', s.seq,
                ',"params":{"stanza":"<message xmlns=''jabber:client''',
                ' type=''chat'' id=''m', s.seq, ''' to=''',
                IF(s.seq %% 2, CONCAT('peer', s.seq %% %(peers)d,
                                      '@example.com'), 'alice@example.com'),
                ''' from=''',
                IF(s.seq %% 2, 'alice@example.com/bench',
                   CONCAT('peer', s.seq %% %(peers)d, '@example.com/x')),
                '''><body>message number ', s.seq,
                '</body><stanza-id xmlns=''urn:xmpp:sid:0'' id=''%(node)s:0:',
                s.seq, ''' by=''alice@example.com''/></message>"}}'),
            REPEAT(0x00, 32), REPEAT(0x00, 32)
        FROM seq_1_to_%(n)d s;
    """ % {"node": NODE, "n": n, "peers": peers}, database=DB,
        timeout=3600)
    return time.monotonic() - t0


def fill_room(app, n):
    """n muc_message records of ROOM as ngx_xmpp_mucroom.c writes them
    (payload params: stanza as occupants got it, nick, from), writer 1
    so that their ids do not collide with the 1:1 records."""
    t0 = time.monotonic()
    app.mariadb.query("""
        INSERT INTO audit_record (node, writer_id, seq, ts_utc_us, event,
            status, actor_user, peer, actor_ip, session_id, transport,
            msg_type, stanza_id, body, payload, prev_hash, entry_hash)
        SELECT '%(node)s', 1, s.seq, 1700000000000050 + s.seq * 100,
            'muc_message', 'success',
            CONCAT('user', s.seq %% 50, '@example.com'), '%(room)s',
            '127.0.0.1', 'bench', 'tcp', 'groupchat', CONCAT('r', s.seq),
            CONCAT('room message ', s.seq),
            CONCAT('{"v":1,"event":"muc_message","seq":', s.seq,
                ',"params":{"nick":"user', s.seq %% 50, '","from":"user',
                s.seq %% 50, '@example.com/x","type":"groupchat",',
                '"stanza":"<message from=''%(room)s/user', s.seq %% 50,
                ''' type=''groupchat'' id=''r', s.seq,
                ''' xmlns=''jabber:client''><body>room message ', s.seq,
                '</body><stanza-id xmlns=''urn:xmpp:sid:0'' id=''%(node)s:1:',
                s.seq, ''' by=''%(room)s''/></message>"}}'),
            REPEAT(0x00, 32), REPEAT(0x00, 32)
        FROM seq_1_to_%(n)d s;
    """ % {"node": NODE, "n": n, "room": ROOM}, database=DB, timeout=3600)
    return time.monotonic() - t0


# the newest page of the room as ngx_xmpp_mam_query.c asks for it
ROOM_SUB = """(SELECT CONCAT_WS(' ', c.node, c.writer_id, c.seq,
    c.ts_utc_us) FROM audit_record c FORCE INDEX (audit_record_mam_ref_ts)
    WHERE c.mam_ref = CONCAT('r:', %s) AND c.actor_user = x.actor_user
    AND c.peer = x.peer AND c.ts_utc_us >= x.ts_utc_us
    ORDER BY c.ts_utc_us, c.node, c.writer_id, c.seq LIMIT 1)"""
ROOM_PLAN = """EXPLAIN SELECT x.node, x.writer_id, x.seq, x.payload,
    (SELECT c.body FROM audit_record c FORCE INDEX (audit_record_mam_ref_ts)
     WHERE c.mam_ref = CONCAT('c:', x.stanza_id)
     AND c.actor_user = x.actor_user AND c.peer = x.peer
     AND c.ts_utc_us >= x.ts_utc_us
     ORDER BY c.ts_utc_us DESC, c.node DESC, c.writer_id DESC,
     c.seq DESC LIMIT 1),
    COALESCE(%s, %s)
    FROM audit_record x FORCE INDEX (audit_record_room)
    WHERE x.peer = '%s' AND x.event = 'muc_message'
    AND (x.body IS NOT NULL OR x.mam_ref IS NOT NULL)
    ORDER BY x.ts_utc_us DESC, x.node DESC, x.writer_id DESC, x.seq DESC
    LIMIT 51""" % (ROOM_SUB % "x.node, ':', x.writer_id, ':', x.seq",
                   ROOM_SUB % "x.stanza_id", ROOM)


ROOM_WITH = ("<x xmlns='jabber:x:data' type='submit'><field"
             " var='FORM_TYPE'><value>urn:xmpp:mam:2</value></field>"
             "<field var='with'><value>%s</value></field></x>")

# the two 'with' forms of a room's page (ngx_xmpp_mam_room_with_sql())
ROOM_WITH_PLANS = (
    ("nick", ROOM_PLAN.replace(
        "AND (x.body", "AND JSON_VALUE(CONVERT(x.payload USING utf8mb4),"
        " '$.params.nick') COLLATE utf8mb4_bin = 'user7' AND (x.body")),
    ("real JID", ROOM_PLAN.replace(
        "FORCE INDEX (audit_record_room)",
        "FORCE INDEX (audit_record_conversation)").replace(
        "AND (x.body", "AND x.actor_user = 'user7@example.com'"
        " AND (x.body")))


def filled(app, args):
    """whether a kept directory holds both archives already"""
    rows = app.mariadb.query(
        "SELECT writer_id, COUNT(*) FROM audit_record WHERE node = '%s'"
        " GROUP BY writer_id" % NODE, database=DB)
    have = dict((int(w), int(n)) for w, n in rows)
    return (have.get(0) == args.messages
            and have.get(1) == args.room_messages)


def preload(app):
    """--server tuned: what a server that has run for a while holds in
    its buffer pool, the records and the indexes a query reads"""
    t0 = time.monotonic()
    app.mariadb.query(
        "SELECT SUM(LENGTH(payload)) FROM audit_record FORCE INDEX (PRIMARY);"
        " SELECT COUNT(*) FROM audit_record FORCE INDEX (audit_record_actor)"
        " WHERE actor_user > '';"
        " SELECT COUNT(*) FROM audit_record FORCE INDEX (audit_record_peer)"
        " WHERE peer > '';"
        " SELECT COUNT(*) FROM audit_record"
        " FORCE INDEX (audit_record_conversation) WHERE actor_user > '';"
        " SELECT COUNT(*) FROM audit_record FORCE INDEX (audit_record_room)"
        " WHERE peer > '';"
        " SELECT COUNT(*) FROM audit_record"
        " FORCE INDEX (audit_record_mam_ref_ts) WHERE mam_ref IS NULL",
        database=DB, timeout=3600)
    return time.monotonic() - t0


def percentile(xs, p):
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, int(round(p / 100.0 * len(xs) + 0.5)) - 1))
    return xs[k]


def query(c, i, rsm, form="", to=""):
    c.send("<iq type='set' id='q%d'%s><query xmlns='urn:xmpp:mam:2'"
           " queryid='q%d'>%s<set xmlns='http://jabber.org/protocol/rsm'>"
           "<max>50</max>%s</set></query></iq>" % (
               i, " to='%s'" % to if to else "", i, form, rsm))
    t0 = time.perf_counter()
    r = c.expect(r"<iq [^>]*id='q%d'[^>]*>.*?</iq>" % i, timeout=30)
    dt = (time.perf_counter() - t0) * 1000.0
    if "<fin" not in r:
        raise RuntimeError("no <fin/>: %s" % r[:300])
    return dt


def query_or_error(c, i, rsm, form="", to=""):
    """(ms, None), or (ms, the error's condition) for a query that may
    be refused (room-none past conclave_db_timeout)"""
    c.send("<iq type='set' id='q%d'%s><query xmlns='urn:xmpp:mam:2'"
           " queryid='q%d'>%s<set xmlns='http://jabber.org/protocol/rsm'>"
           "<max>50</max>%s</set></query></iq>" % (
               i, " to='%s'" % to if to else "", i, form, rsm))
    t0 = time.perf_counter()
    r = c.expect(r"<iq [^>]*id='q%d'[^>]*>.*?</iq>" % i, timeout=60)
    dt = (time.perf_counter() - t0) * 1000.0
    m = re.search(r"<([a-z-]+) xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'",
                  r)
    return dt, (m.group(1) if "<fin" not in r and m else None)


def run(app, args):
    c = RawTCP(app.nginx.xmpps_port, tls=True, timeout=30)
    c.login("alice", resource="bench")
    # the room exists once someone is in it (a temporary room)
    c.send("<presence to='%s/alice'><x xmlns='http://jabber.org/"
           "protocol/muc'><history maxstanzas='0'/></x></presence>" % ROOM)
    c.expect(r"<presence [^>]*from='%s/alice'" % re.escape(ROOM),
             timeout=30)
    rnd = random.Random(7)
    with_form = ("<x xmlns='jabber:x:data' type='submit'><field"
                 " var='FORM_TYPE'><value>urn:xmpp:mam:2</value></field>"
                 "<field var='with'><value>peer%d@example.com</value>"
                 "</field></x>")
    kinds = {
        "last": lambda i: query(c, i, "<before/>"),
        "random": lambda i: query(
            c, i, "<after>%s:0:%d</after>" % (
                NODE, rnd.randrange(1, args.messages - 100))),
        "with": lambda i: query(
            c, i, "<after>%s:0:%d</after>" % (
                NODE, rnd.randrange(1, args.messages // 2)),
            with_form % rnd.randrange(args.peers)),
        "room": lambda i: query(c, i, "<before/>", to=ROOM),
        "room-rnd": lambda i: query(
            c, i, "<after>%s:1:%d</after>" % (
                NODE, rnd.randrange(1, args.room_messages - 100)),
            to=ROOM),
        "room-nick": lambda i: query(c, i, "<before/>", ROOM_WITH % (
            ROOM + "/user7"), to=ROOM),
        "room-jid": lambda i: query(c, i, "<before/>", ROOM_WITH % (
            "user7@example.com"), to=ROOM),
        "room-none": lambda i: query_or_error(
            c, i, "<before/>", ROOM_WITH % (ROOM + "/nobody"), to=ROOM),
    }
    out = {}
    i = 0
    for name, fn in kinds.items():
        if args.kinds and name not in args.kinds.split(","):
            continue
        n = args.none_queries if name == "room-none" else args.queries
        for _ in range(20 if n > 20 else 1):    # warm-up, not counted
            i += 1
            fn(i)
        xs = []
        for _ in range(n):
            i += 1
            dt = fn(i)
            if isinstance(dt, tuple):
                dt, err = dt
                if err:
                    print("%s: <%s/> after %.0f ms" % (name, err, dt))
            xs.append(dt)
        out[name] = xs
    c.close()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=1000000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--peers", type=int, default=100)
    ap.add_argument("--room-messages", type=int, default=1000000)
    ap.add_argument("--server", default="test")
    ap.add_argument("--keep", help="work directory to keep")
    ap.add_argument("--reuse", action="store_true",
                    help="with --keep: reuse the archives found there")
    ap.add_argument("--slow-log", help="MariaDB's slow log, every query")
    ap.add_argument("--kinds", help="only these kinds (comma-separated)")
    ap.add_argument("--none-queries", type=int, default=5)
    args = ap.parse_args()

    work = args.keep or tempfile.mkdtemp(prefix="mam-bench-")
    app = Appliance(work, sanitize=False, log_level="warn",
                    extra_http="conclave_muc_domain %s;" % MUC)
    if args.server == "tuned":
        app.mariadb.extra_args = ["--innodb-buffer-pool-size=3G"]
    app.start()
    try:
        if args.reuse and filled(app, args):
            print("archive: reusing %d + %d records in %s"
                  % (args.messages, args.room_messages, work))
        else:
            secs = fill(app, args.messages, args.peers)
            print("archive: %d messages of alice with %d peers, inserted"
                  " in %.1f s" % (args.messages, args.peers, secs))
            secs = fill_room(app, args.room_messages)
            app.mariadb.query("ANALYZE TABLE audit_record", database=DB)
            print("room %s: %d messages, inserted in %.1f s"
                  % (ROOM, args.room_messages, secs))
        if args.server == "tuned":
            print("buffer pool: the table and its indexes read in %.1f s"
                  % preload(app))
        if args.slow_log:
            app.mariadb.query(
                "SET GLOBAL slow_query_log_file = '%s';"
                " SET GLOBAL long_query_time = 0;"
                " SET GLOBAL log_slow_verbosity = 'query_plan,explain';"
                " SET GLOBAL slow_query_log = 1"
                % os.path.abspath(args.slow_log))
        print("room page plan:")
        for row in app.mariadb.query(ROOM_PLAN, database=DB):
            print("   ", " | ".join(str(v) for v in row))
        for what, plan in ROOM_WITH_PLANS:
            print("room page 'with' a %s, plan:" % what)
            for row in app.mariadb.query(plan, database=DB):
                print("   ", " | ".join(str(v) for v in row))
        res = run(app, args)
        print("page of 50, %d queries each (room-none: %d), one at a time,"
              " server %s:" % (args.queries, args.none_queries, args.server))
        print("%-9s %8s %8s %8s %8s %8s" % ("kind", "p50 ms", "p90 ms",
                                            "p99 ms", "max ms", "mean"))
        for name, xs in res.items():
            print("%-9s %8.2f %8.2f %8.2f %8.2f %8.2f" % (
                name, percentile(xs, 50), percentile(xs, 90),
                percentile(xs, 99), max(xs), statistics.mean(xs)))
    finally:
        app.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
