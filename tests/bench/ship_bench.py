#!/usr/bin/python3
"""Shipping throughput (issue 3): records/s from the journal into MariaDB.

    ship_bench.py [--records 200000] [--batch 1000] [--size 560]
                  [--writers 1] [--repeat 3] [--server test,tuned]
                  [--drop-index each|NAME,...]

Builds tests/lib/journal_cli.c and tests/bench/ship_bench.c into
build/bench/, writes --writers journals of --records message records of
about --size bytes (1000 distinct senders, as the module writes them),
and times caud_shipper_ship() into a fresh database, --repeat times per
MariaDB configuration, on a private mariadbd (tests/lib/mariadb.py):

    test    the test harness's flags: 64 MB buffer pool, 16 MB redo log
    tuned   1 GB buffer pool, 512 MB redo log (what an appliance with a
            few GB of RAM would give MariaDB)

Both keep innodb_flush_log_at_trx_commit=1: every batch is durable when
its COMMIT returns.  Prints records/s (median and each run), the
shipper's CPU and mariadbd's CPU per run; asserts nothing.  With
--drop-index the named indexes of audit_record are dropped after the
migration (ship_bench.c runs $SHIP_BENCH_AFTER_MIGRATE); "each" runs one
variant per index plus one with them all, alternating run by run: what
each index costs the inserts.
"""

import argparse
import collections
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))

from mariadb import MariaDB  # noqa: E402

BUILD = os.path.join(REPO, "build", "bench")
AUDIT = os.path.join(REPO, "audit", "src")
LIBS = ["caud_record.c", "caud_journal.c", "caud_journal_read.c",
        "caud_journal_dir.c", "caud_checkpoint.c"]


def tune(db):
    """A production-sized InnoDB; both are dynamic in MariaDB 10.11."""
    db.query("SET GLOBAL innodb_buffer_pool_size = 1024 * 1024 * 1024;"
             "SET GLOBAL innodb_log_file_size = 512 * 1024 * 1024;")


def build():
    os.makedirs(BUILD, exist_ok=True)
    libs = [os.path.join(AUDIT, f) for f in LIBS]
    cflags = subprocess.run(["mariadb_config", "--cflags"],
                            capture_output=True, text=True).stdout.split()
    jcli = os.path.join(BUILD, "journal_cli")
    bench = os.path.join(BUILD, "ship_bench")
    subprocess.run(["cc", "-std=gnu11", "-O2", "-g", "-Wall", "-I" + AUDIT,
                    "-o", jcli, os.path.join(REPO, "tests", "lib",
                                             "journal_cli.c")]
                   + libs + ["-lcrypto", "-ljansson", "-lpthread"],
                   check=True)
    subprocess.run(["cc", "-std=gnu11", "-O2", "-g", "-Wall", "-I" + AUDIT]
                   + cflags
                   + ['-DSCHEMA_DIR="%s"' % os.path.join(REPO, "audit",
                                                         "schema"),
                      "-o", bench, os.path.join(HERE, "ship_bench.c"),
                      os.path.join(AUDIT, "caud_db.c"),
                      os.path.join(AUDIT, "caud_ship.c")]
                   + libs + ["-lmariadb", "-lcrypto", "-ljansson",
                             "-lpthread"], check=True)
    return jcli, bench


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(db, bench, jdir, args, run, drop=()):
    name = "bench_%d" % run
    db.query("CREATE DATABASE `%s` CHARACTER SET utf8mb4 COLLATE "
             "utf8mb4_unicode_ci; GRANT ALL ON `%s`.* TO "
             "'%s'@'127.0.0.1';" % (name, name, db.user))
    before = cpu_seconds(db.pid)
    env = dict(os.environ)
    if drop:
        env["SHIP_BENCH_AFTER_MIGRATE"] = "ALTER TABLE audit_record " + \
            ", ".join("DROP INDEX `%s`" % i for i in drop)
    r = subprocess.run([bench, db.host, str(db.port), db.user, db.password,
                        name, jdir, str(args.batch)]
                       + [str(w) for w in range(1, args.writers + 1)],
                       capture_output=True, text=True, timeout=3600,
                       env=env)
    server_cpu = cpu_seconds(db.pid) - before
    if r.returncode != 0:
        sys.exit("ship_bench failed: %s" % r.stderr.strip())
    f = r.stdout.split()
    res = dict(zip(f[0::2], (float(v) for v in f[1::2])))
    res["server_cpu"] = server_cpu
    db.query("DROP DATABASE `%s`" % name)
    return res


INDEXES = ["audit_record_actor", "audit_record_peer", "audit_record_ts",
           "audit_record_event", "audit_record_mam_ref_ts",
           "audit_record_conversation", "audit_record_room",
           "audit_record_body"]


def report(kind, drop, runs, per):
    rates = [r["rate"] for r in runs]
    us = [1e6 * r["server_cpu"] / r["records"] for r in runs]
    what = ("without " + ", ".join(drop)) if drop else "all indexes"
    print("%-6s %8.0f records/s median  (runs: %s)  mariadbd %.1f us per"
          " record (runs: %s)  %s"
          % (kind, statistics.median(rates),
             ", ".join("%.0f" % x for x in rates), statistics.median(us),
             ", ".join("%.1f" % x for x in us), what))
    for r in runs:
        print("       %.0f records in %.2f s: shipper CPU %.2f s, "
              "mariadbd CPU %.2f s, %.1f MB/s of journal"
              % (r["records"], r["seconds"], r["client_cpu"],
                 r["server_cpu"],
                 r["records"] * per / r["seconds"] / 1e6))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=200000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--size", type=int, default=560)
    ap.add_argument("--writers", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--server", default="test,tuned")
    ap.add_argument("--drop-index", default="",
                    help="comma list of audit_record indexes to drop after"
                         " the migration, or 'each': one variant per index"
                         " and one with none dropped (what each index costs"
                         " the inserts)")
    ap.add_argument("--mariadbd-arg", action="append", default=[],
                    help="one more mariadbd option, e.g. "
                         "--mariadbd-arg=--innodb-ft-cache-size=80M "
                         "(repeatable; compare invocations)")
    args = ap.parse_args()

    if args.drop_index == "each":
        variants = [()] + [(i,) for i in INDEXES]
    elif args.drop_index:
        variants = [tuple(args.drop_index.split(","))]
    else:
        variants = [()]

    jcli, bench = build()
    tmp = tempfile.mkdtemp(prefix="ship-bench-")
    try:
        jdir = os.path.join(tmp, "journal")
        os.makedirs(jdir)
        for w in range(1, args.writers + 1):
            subprocess.run([jcli, jdir, str(w), str(args.records), "--size",
                            str(args.size), "--users", "1000"], check=True,
                           stdout=subprocess.DEVNULL)
        total = sum(os.path.getsize(os.path.join(jdir, f))
                    for f in os.listdir(jdir) if f.endswith(".cj"))
        per = total / (args.records * args.writers)
        print("%d writer(s) x %d records, %.0f bytes per frame, batch %d"
              % (args.writers, args.records, per, args.batch))

        for kind in args.server.split(","):
            db = MariaDB(os.path.join(tmp, "mariadb-" + kind))
            db.extra_args = list(args.mariadbd_arg)
            db.start()
            try:
                if kind == "tuned":
                    tune(db)
                # variants alternate run by run, so drift hits them alike
                runs = collections.defaultdict(list)
                for i in range(args.repeat):
                    for v, drop in enumerate(variants):
                        runs[drop].append(one_run(db, bench, jdir, args,
                                                  i * len(variants) + v,
                                                  drop))
            finally:
                db.stop()
                shutil.rmtree(os.path.join(tmp, "mariadb-" + kind),
                              ignore_errors=True)
            for drop in variants:
                report(kind, drop, runs[drop], per)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
