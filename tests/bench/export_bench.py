#!/usr/bin/python3
"""Export and retention throughput (issue 8): prints figures, asserts
nothing.

    export_bench.py [--records 1000000] [--users 1000] [--size 600]
                    [--buffer-pool 1G] [--formats actiance,csv,eml,jsonl]
                    [--runs 3] [--no-retention] [--keep]

Writes --records message records of about --size bytes (--users
senders to one peer, a record every 10 ms of simulated time) into one
journal with tests/lib/journal_cli.c, ships them with `conclavectl ship`
(the real shipper, batches of 1000) into a private mariadbd
(tests/lib/mariadb.py, --buffer-pool), signs a checkpoint over them,
then times:

    conclavectl export --no-cursor --format F     messages/s per format
                                                  (actiance:0: stored)
    conclavectl verify-export                     records/s
    conclavectl retention run (all expired)       deleted rows/s

Each export line also gives the CPU seconds of conclavectl (all its
threads) and of mariadbd (/proc) while it ran, and the load average:
on a shared machine the wall time follows the load, the CPU does not.
--runs N times each export N times on the same store and prints the
median; --no-retention --keep leave the store for profiling.

Uses build/release/conclavectl (make build first).
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))

from auditstore import Store  # noqa: E402

BUILD = os.path.join(REPO, "build", "bench")
CTL = os.path.join(REPO, "build", "release", "conclavectl")


def server_cpu(store):
    """mariadbd's user + system CPU seconds so far (/proc, proc(5))."""
    try:
        with open("/proc/%d/stat" % store.db.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf(
            "SC_CLK_TCK")
    except (OSError, ValueError, TypeError, IndexError):
        return 0.0


def timed(store, *args):
    t0 = time.monotonic()
    c0 = os.times()
    s0 = server_cpu(store)
    r = store.ctl(*args, timeout=7200)
    c1 = os.times()
    dt = time.monotonic() - t0
    cpu = (c1.children_user - c0.children_user
           + c1.children_system - c0.children_system)
    timed.server = server_cpu(store) - s0
    return r, dt, cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=1000000)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--size", type=int, default=600)
    ap.add_argument("--buffer-pool", default="1G")
    ap.add_argument("--formats", default="actiance,actiance:0,csv,eml,jsonl",
                    help="FORMAT[:compress level], comma-separated")
    ap.add_argument("--runs", type=int, default=1,
                    help="time each export N times (prints each run and "
                    "the median)")
    ap.add_argument("--no-retention", action="store_true",
                    help="skip the retention run (keeps the store whole "
                    "for --keep)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temp directory")
    a = ap.parse_args()

    os.makedirs(BUILD, exist_ok=True)
    base = tempfile.mkdtemp(prefix="export-bench-", dir=BUILD)
    store = Store(base, ctl=CTL, sanitize=False)
    store.db.extra_args = ["--innodb-buffer-pool-size=" + a.buffer_pool,
                           "--innodb-log-file-size=512M"]
    print("export_bench: %d records of ~%d bytes, %d senders, buffer pool "
          "%s, %s" % (a.records, a.size, a.users, a.buffer_pool, base))
    try:
        store.start()
        t0 = time.monotonic()
        start = (int(time.time()) - 30 * 86400) * 10 ** 6
        store.write(0, a.records, users=a.users, size=a.size,
                    ts=start, ts_step=10000, segment_size=256 << 20)
        print("  journal_cli: %.1f s" % (time.monotonic() - t0))
        r, dt, _ = timed(store, "ship", "--all")
        print("  ship: %.1f s, %.0f records/s" % (dt, a.records / dt))

        out = os.path.join(base, "out")
        for spec in a.formats.split(","):
            fmt, _, level = spec.partition(":")
            rates = []
            for run in range(a.runs):
                d = os.path.join(out, "%s-%d" % (spec.replace(":", "-"),
                                                 run))
                os.makedirs(d)
                r, dt, cpu = timed(store, "export", "--format", fmt,
                                   "--output", d, "--no-cursor",
                                   *(["--compress", level] if level
                                     else []))
                m = re.search(r"(\d+) records \((\d+) messages", r.stdout)
                n = int(m.group(2)) if m else 0
                (z,) = [os.path.join(d, f) for f in os.listdir(d)]
                rates.append(n / dt)
                print("  export %-10s %8d messages in %6.1f s: %8.0f "
                      "messages/s (CPU conclavectl %.1f s, mariadbd %.1f "
                      "s), zip %.0f MiB, load %.1f"
                      % (spec, n, dt, n / dt, cpu, timed.server,
                         os.path.getsize(z) / 2 ** 20, os.getloadavg()[0]))
                sys.stdout.flush()
                if spec == "actiance" and run == 0:
                    r, dt, _ = timed(store, "verify-export", "--vkey",
                                     store.vkey, z)
                    print("  verify-export actiance: %.1f s, %.0f records/s"
                          % (dt, n / dt))
                os.unlink(z)
            if a.runs > 1:
                print("  export %-10s median of %d: %.0f messages/s"
                      % (spec, a.runs, statistics.median(rates)))

        if a.no_retention:
            return
        store.ctl("retention", "set", "--messages", "1", "--signins", "1")
        r, dt, cpu = timed(store, "retention", "run")
        m = re.search(r"(\d+) deleted in (\d+) batches", r.stdout)
        n = int(m.group(1)) if m else 0
        print("  retention run: %d deleted in %s batches of 1000, %.1f s:"
              " %.0f rows/s (CPU conclavectl %.1f s, mariadbd %.1f s), "
              "load %.1f" % (n, m.group(2) if m else "?", dt, n / dt, cpu,
                             timed.server, os.getloadavg()[0]))
        r, dt, _ = timed(store, "verify", "--db-only")
        print("  verify --db-only over the pruned journal: %.1f s, %s"
              % (dt, r.stdout.strip().splitlines()[-1]))
    finally:
        store.stop()
        if not a.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
