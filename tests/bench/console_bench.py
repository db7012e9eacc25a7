#!/usr/bin/python3
"""Admin console search latency on a large store (issue 8): measures,
asserts nothing.

    console_bench.py [--rows 1000000] [--queries 200] [--buffer-pool 256M]
                     [--dir /tmp/console-bench]

Starts an appliance (slapd, mariadbd, nginx with the module from
build/release), fills audit_record with --rows message records straight
in SQL (1,000 users, bodies of a few words from a 5,000-word vocabulary
plus filler, one record per second: 1,000,000 span 11.6 days), builds the FULLTEXT index of
006_console.sql over them, signs erin in through the console API and
times --queries searches of each kind through nginx, end to end:

    keyword        q=<a vocabulary word no other word begins with>
                   (about 2 x rows/5,000 matching rows)
    keyword-broad  q=w10..w99: a keyword's words match word beginnings;
                   w10..w49 begin 111 vocabulary words (w10, w100..w109,
                   w1000..w1099: 4.4% of rows, two words a row), w50..w99
                   only 11 (the vocabulary ends at w4999: 0.44%)
    user+range     user=<u>, since/until one day apart
    user+keyword   user=<u> and q=<word>
    pair           user=<u>, peer=<v> (a conversation, newest page)

Prints the row count, the fill and index times, and p50/p95/p99/max in
milliseconds per kind.  Target: search p99 <= 300 ms.
"""

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))

from appliance import Appliance  # noqa: E402
from console import Console  # noqa: E402

BASE_US = 1_790_000_000_000_000
USERS = 1000
WORDS = 5000


FILL = """
SET SESSION sql_log_bin = 0;
ALTER TABLE audit_record DROP INDEX IF EXISTS audit_record_body;
INSERT INTO audit_record (node, writer_id, seq, ts_utc_us, event, status,
    actor_user, peer, actor_ip, session_id, transport, msg_type, stanza_id,
    body, payload, prev_hash, entry_hash)
SELECT 'bench', 0, s.seq, {base} + s.seq * 1000000, 'message', 'success',
       CONCAT('u', s.seq % {users}, '@example.com'),
       CONCAT('u', (s.seq * 7 + 1) % {users}, '@example.com'),
       '127.0.0.1', 'bench', 'websocket', 'chat', CONCAT('b', s.seq),
       CONCAT('about the ', CONCAT('w', (s.seq * 2654435761) % {words}),
              ' figures for ', CONCAT('w', (s.seq * 40503) % {words}),
              ' see you at ', s.seq % 24, ' o clock'),
       '{{}}', UNHEX(SHA2(s.seq, 256)), UNHEX(SHA2(s.seq + 1, 256))
FROM seq_1_to_{rows} s;
"""

INDEX = ("ALTER TABLE audit_record ADD FULLTEXT INDEX IF NOT EXISTS "
         "audit_record_body (body);")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def timed(console, queries):
    lat, hits, errors = [], [], 0
    for q in queries:
        t0 = time.perf_counter()
        status, doc = console.get("search", **q)
        lat.append((time.perf_counter() - t0) * 1000)
        if status != 200:
            errors += 1
            continue
        hits.append(len(doc["results"]))
    return lat, hits or [0], errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--buffer-pool", default="256M")
    ap.add_argument("--dir", default="/tmp/console-bench")
    ap.add_argument("--runs", type=int, default=1,
                    help="time every kind N times on the same store "
                    "(prints each run, then the median p99 per kind)")
    ap.add_argument("--hold", action="store_true",
                    help="after the runs, keep the servers up until "
                    "Enter (or EOF) on stdin, to try statements by hand")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()

    shutil.rmtree(a.dir, ignore_errors=True)
    # the test template's 2 s read timeout would cut the slow searches
    # short; here they are measured
    app = Appliance(a.dir, extra_http="conclave_audit_db_timeout 60s;\n"
                    "conclave_db_timeout 60s;")
    app.mariadb.extra_args = ["--innodb-buffer-pool-size=" + a.buffer_pool,
                              "--innodb-log-file-size=256M"]
    app.start()
    try:
        db = app.mariadb
        t0 = time.monotonic()
        db.query(FILL.format(base=BASE_US, users=USERS, words=WORDS,
                             rows=a.rows), database=db.database,
                 timeout=3600)
        fill = time.monotonic() - t0
        t0 = time.monotonic()
        db.query(INDEX, database=db.database, timeout=3600)
        index = time.monotonic() - t0
        db.query("ANALYZE TABLE audit_record;", database=db.database,
                 timeout=600)
        n = int(db.scalar("SELECT COUNT(*) FROM audit_record WHERE "
                          "event = 'message'", database=db.database))
        print("rows: %d message records (fill %.1f s, FULLTEXT index "
              "%.1f s, buffer pool %s)" % (n, fill, index, a.buffer_pool))

        c = Console(app.base_url)
        c.signin("erin", "erin-pw")
        rnd = random.Random(8)
        day_ms = 86400 * 1000
        span_ms = a.rows * 1000  # one record per second

        def user():
            return "u%d" % rnd.randrange(USERS)

        def word():
            # w1000..w4999: a word no other word begins with
            return "w%d" % rnd.randrange(1000, WORDS)

        def broad():
            # w10..w99: the prefix of 111 or 11 vocabulary words (4.4% or
            # 0.44% of rows)
            return "w%d" % rnd.randrange(10, 100)

        def since():
            return BASE_US // 1000 + rnd.randrange(max(1, span_ms - day_ms))

        kinds = {
            "keyword": [{"q": word()} for _ in range(a.queries)],
            "keyword-broad": [{"q": broad()} for _ in range(a.queries)],
            "user+range": [],
            "user+keyword": [{"user": user(), "q": word()}
                             for _ in range(a.queries)],
            "pair": [{"user": user(), "peer": user()}
                     for _ in range(a.queries)],
        }
        for _ in range(a.queries):
            s = since()
            kinds["user+range"].append({"user": user(), "since": s,
                                        "until": s + day_ms})
        # one warm-up pass of a few queries of each kind
        for qs in kinds.values():
            timed(c, qs[:5])
        p99s = {name: [] for name in kinds}
        for run in range(a.runs):
            print("run %d of %d, load average %.1f" % (
                run + 1, a.runs, os.getloadavg()[0]))
            print("%-13s %8s %8s %8s %8s %8s %6s" % (
                "search", "p50 ms", "p95 ms", "p99 ms", "max ms", "hits",
                "errors"))
            for name, qs in kinds.items():
                lat, hits, errors = timed(c, qs)
                p99s[name].append(pct(lat, 99))
                print("%-13s %8.1f %8.1f %8.1f %8.1f %8.1f %6d" % (
                    name, pct(lat, 50), pct(lat, 95), pct(lat, 99),
                    max(lat), statistics.mean(hits), errors))
                sys.stdout.flush()
        if a.runs > 1:
            print("median p99 of %d runs (ms): %s" % (a.runs, ", ".join(
                "%s %.1f" % (name, statistics.median(v))
                for name, v in p99s.items())))
        if a.hold:
            print("holding: mariadb socket %s, database %s; Enter stops"
                  % (db.socket, db.database))
            sys.stdout.flush()
            sys.stdin.readline()
        sys.stdout.flush()
    finally:
        app.stop()
        if not a.keep:
            shutil.rmtree(a.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
