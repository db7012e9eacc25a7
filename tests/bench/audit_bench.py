#!/usr/bin/python3
"""The audit trail's figures (issue 3), in one run: measures, asserts
nothing.

    audit_bench.py [--repeat 2] [--duration 10] [--rates 1000,5000]
                   [--skip module,journal,ship,verify]

1. module: the whole appliance (tests/bench/run_bench.py, 2 workers,
   C load generator on its own CPU) with each conclave_audit_fsync
   policy: closed-loop chat (delivered messages/s, server CPU per
   message) and open-loop chat at fixed rates (p50/p99 latency).  The
   latency that waiting for durability adds is the "always" figure
   minus the "off" one from the same run; every policy journals, so
   the cost of building and appending the record itself is in every
   row (and in the CPU per message).
2. journal: tests/bench/journal_bench.c, one writer on the library:
   records/s without sync, with an fdatasync per record and with group
   commit, the append -> durable latency at 50,000/s, and verify.
3. ship: tests/bench/ship_bench.py, records/s into MariaDB.
4. verify: tests/bench/verify_bench.c, 1,000,000 records.

Everything it builds goes to build/bench/; the module must be built
(make build).  Targets (issue 3): group commit >= 50,000 records/s per
worker and <= 1 ms added p99; shipping >= 100,000 records/s; verify
>= 500,000 records/s.
"""

import argparse
import csv
import glob
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.join(REPO, "build", "bench")
AUDIT = os.path.join(REPO, "audit", "src")
UNIT = os.path.join(REPO, "tests", "unit")
POLICIES = ("always", "interval", "off")


def run(cmd, **kw):
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, **kw)


def cc(out, srcs, libs=(), extra=()):
    os.makedirs(BUILD, exist_ok=True)
    run(["cc", "-std=gnu11", "-O2", "-g", "-Wall", "-I" + AUDIT,
         "-I" + UNIT]
        + list(extra) + ["-o", out] + list(srcs)
        + ["-lcrypto", "-ljansson", "-lpthread"] + list(libs), check=True)


def median_of(rows, key):
    vals = []
    for r in rows:
        try:
            vals.append(float(r[key]))
        except (KeyError, ValueError):
            pass
    return (statistics.median(vals), vals) if vals else (None, [])


def module_figures(args):
    results = {}
    for policy in POLICIES:
        out = tempfile.mkdtemp(prefix="audit-bench-%s-" % policy,
                               dir=BUILD)
        cmd = [sys.executable, os.path.join(HERE, "run_bench.py"),
               "--scenarios", "chat-saturation,chat-fixed-rate",
               "--rates", args.rates, "--repeat", str(args.repeat),
               "--chat-duration", str(args.duration),
               "--rate-duration", str(args.duration),
               "--extra-http", "conclave_audit_fsync %s;" % policy,
               "--out", out]
        run(cmd)
        rows = []
        for f in glob.glob(os.path.join(out, "*.csv")):
            with open(f) as fh:
                rows += list(csv.DictReader(fh))
        results[policy] = rows
    return results


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def module_table(results, rates):
    lines = ["", "module, 2 workers, by conclave_audit_fsync "
             "(median of each run's figure)", ""]
    lines.append("%-9s %10s %11s %10s %10s" % (
        "policy", "sat msg/s", "us CPU/msg", "p50 ms", "p99 ms"))
    for policy, rows in results.items():
        sat = [r for r in rows if r.get("scenario") == "chat-saturation"]
        lines.append("%-9s %10s %11s %10s %10s" % (
            policy, fmt(median_of(sat, "per_s")[0], ".0f"),
            fmt(median_of(sat, "srv_cpu_us_per_op")[0], ".1f"),
            fmt(median_of(sat, "p50_ms")[0], ".3f"),
            fmt(median_of(sat, "p99_ms")[0], ".3f")))
    lines.append("")
    lines.append("%-9s %7s %9s %9s %9s %11s" % (
        "policy", "rate/s", "p50 ms", "p99 ms", "max ms", "us CPU/msg"))
    fixed = {}
    for policy, rows in results.items():
        for rate in rates:
            rr = [r for r in rows if r.get("scenario") == "chat-fixed-rate"
                  and r.get("size_arg") == str(rate)]
            p50 = median_of(rr, "p50_ms")[0]
            p99 = median_of(rr, "p99_ms")[0]
            fixed[(policy, rate)] = (p50, p99)
            lines.append("%-9s %7d %9s %9s %9s %11s" % (
                policy, rate, fmt(p50, ".3f"), fmt(p99, ".3f"),
                fmt(median_of(rr, "max_ms")[0], ".3f"),
                fmt(median_of(rr, "srv_cpu_us_per_op")[0], ".1f")))
    lines.append("")
    for rate in rates:
        a, o = fixed.get(("always", rate)), fixed.get(("off", rate))
        if a and o and None not in a + o:
            lines.append("durability wait at %d/s (always - off): "
                         "p50 %+.3f ms, p99 %+.3f ms (target: p99 <= 1 ms)"
                         % (rate, a[0] - o[0], a[1] - o[1]))
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--rates", default="1000,5000")
    p.add_argument("--skip", default="")
    args = p.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    rates = [int(x) for x in args.rates.split(",") if x]
    os.makedirs(BUILD, exist_ok=True)
    report = []

    if "module" not in skip:
        report.append(module_table(module_figures(args), rates))

    if "journal" not in skip:
        jb = os.path.join(BUILD, "journal_bench")
        cc(jb, [os.path.join(HERE, "journal_bench.c"),
                os.path.join(AUDIT, "caud_record.c"),
                os.path.join(AUDIT, "caud_journal.c"),
                os.path.join(AUDIT, "caud_journal_read.c")])
        d = tempfile.mkdtemp(prefix="journal-bench-", dir=BUILD)
        r = run([jb, d], capture_output=True, text=True)
        print(r.stdout + r.stderr)
        report.append("\njournal library, one writer (journal_bench)\n"
                      + r.stdout)
        subprocess.run(["rm", "-rf", d])

    if "ship" not in skip:
        r = run([sys.executable, os.path.join(HERE, "ship_bench.py"),
                 "--repeat", "3"], capture_output=True, text=True)
        print(r.stdout + r.stderr)
        report.append("\nshipping into MariaDB (ship_bench)\n" + r.stdout)

    if "verify" not in skip:
        vb = os.path.join(BUILD, "verify_bench")
        libs = subprocess.run(["mariadb_config", "--libs"],
                              capture_output=True, text=True).stdout.split()
        cflags = subprocess.run(["mariadb_config", "--cflags"],
                                capture_output=True,
                                text=True).stdout.split()
        cc(vb, [os.path.join(HERE, "verify_bench.c")]
           + [os.path.join(AUDIT, f) for f in (
               "caud_record.c", "caud_journal.c", "caud_journal_read.c",
               "caud_journal_dir.c", "caud_checkpoint.c", "caud_db.c", "caud_ship.c",
               "caud_verify.c", "caud_verify_db.c", "caud_tomb.c")], libs,
           cflags)
        d = tempfile.mkdtemp(prefix="verify-bench-", dir=BUILD)
        r = run([vb, d], capture_output=True, text=True)
        print(r.stdout + r.stderr)
        report.append("\nverify (verify_bench)\n" + r.stdout)
        subprocess.run(["rm", "-rf", d])

    print("\n" + "=" * 72 + "\naudit figures\n" + "=" * 72)
    print("\n".join(report))


if __name__ == "__main__":
    main()
