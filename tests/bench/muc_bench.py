#!/usr/bin/python3
"""MUC fan-out benchmark (issue 7): deliveries per second in one room of
N occupants spread over the nginx workers; measures, never asserts.

    muc_bench.py [--occupants 100,1000] [--senders 4] [--window 8]
                 [--duration 10] [--workers 2] [--repeat 1]
                 [--module A.so[,B.so]] [--perf]

For each room size: a fresh appliance (slapd, mariadbd, nginx with
build/release/ngx_http_conclave_module.so, 2 workers, the audit journal
with its default "conclave_audit_fsync always"), N bench users, and
tests/bench/loadgen.c's muc-fanout scenario over XMPP/TCP: every
session joins room bench@conference.example.com, S of them send
groupchat messages with W in flight each (the next when their own copy
comes back), and every copy any occupant receives is a delivery.  The
room's rate limit is raised for the run (conclave_muc_rate), since the
point is the fan-out, not the limit.  The loadgen reports deliveries/s,
end-to-end latency of the deliveries and the server's CPU per delivery.

Every run also prints the load average and how the whole machine's CPU
was spent meanwhile (/proc/stat: user, system, softirq, idle), since on
2 cores the generator's receiving side competes with the workers.
--module with two builds alternates them run by run (A, B, A, B...),
which is the fair comparison on a noisy machine.  --perf samples the
workers (perf record -g, cpu-clock) during the run and prints the top
symbols and profile.py's buckets.
"""

import argparse
import collections
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))
sys.path.insert(0, HERE)

from appliance import Appliance  # noqa: E402
import run_bench  # noqa: E402

ROOM = "bench@conference.example.com"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--occupants", default="100,1000")
    p.add_argument("--senders", type=int, default=4)
    p.add_argument("--window", type=int, default=8)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--warmup", type=float, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--payload", type=int, default=32)
    p.add_argument("--ramp", type=int, default=20,
                   help="sign-ins (and so joins) in flight: every join "
                   "sends the joiner's presence to all occupants")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--fsync", default="always",
                   choices=("always", "interval", "off"))
    p.add_argument("--loadgen-cpu", default="",
                   help="pin the load generator to this CPU")
    p.add_argument("--module", default=os.path.join(
        REPO, "build", "release", "ngx_http_conclave_module.so"),
        help="the module; A.so,B.so alternates two builds")
    p.add_argument("--perf", action="store_true",
                   help="perf record the workers during the run")
    p.add_argument("--top", type=int, default=25)
    return p.parse_args(argv)


def cpu_times():
    """/proc/stat's first line: user+nice, system, softirq+irq, idle
    (+iowait), in ticks."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1], v[2], v[5] + v[6], v[3] + v[4])


def print_cpu(t0, t1):
    d = [b - a for a, b in zip(t0, t1)]
    total = float(sum(d)) or 1.0
    print("# machine CPU during the run (all cores): user %.0f%%, system "
          "%.0f%%, softirq %.0f%%, idle %.0f%%; load average after: "
          "%.2f %.2f %.2f"
          % tuple([100 * x / total for x in d] + list(os.getloadavg())))


def perf_report(data, top):
    import profile as prof
    r = subprocess.run(["perf", "report", "-i", data, "--no-children",
                        "--sort", "dso,sym", "--stdio", "-g", "none",
                        "--percent-limit", "0.05"],
                       capture_output=True, text=True)
    buckets = collections.Counter()
    rows = []
    for line in r.stdout.splitlines():
        m = re.match(r"^\s*([\d.]+)%\s+(\S+)\s+\[.\]\s+(.*)$", line)
        if not m:
            continue
        pct, dso, sym = float(m.group(1)), m.group(2), m.group(3).strip()
        name = "%s [%s]" % (sym, dso)
        if dso.startswith("[kernel"):
            name = "[kernel] " + sym
        buckets[prof.bucket_of(name)] += pct
        rows.append((pct, name))
    print("# perf (cpu-clock) of the workers, %s:" % data)
    for b, v in buckets.most_common():
        print("#   %5.1f%%  %s" % (v, b))
    for pct, name in sorted(rows, reverse=True)[:top]:
        print("#   %5.2f%%  %s" % (pct, name[:100]))


def print_syscalls(stat_path, csv_path):
    """Syscalls of the workers per delivery (the whole run: joins and
    warm-up included, so read them as an upper bound)."""
    import csv
    with open(csv_path) as f:
        row = list(csv.DictReader(f))[-1]
    # the whole run's deliveries: about per_s over warm-up + duration
    total = 0.0
    counts = []
    with open(stat_path) as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) > 2 and parts[2].startswith("syscalls:"):
                try:
                    n = float(parts[0])
                except ValueError:
                    continue
                total += n
                counts.append((parts[2].split("sys_enter_")[1], n))
    ok = float(row["ok"]) or 1.0
    print("# worker syscalls per counted delivery (whole run, %d counted):"
          % ok)
    print("#   " + ", ".join("%s %.3f" % (c, n / ok) for c, n in counts
                             if n) + "; all %.3f" % (total / ok))


def one(args, n, rep, csv_path, module):
    work = tempfile.mkdtemp(prefix="muc-bench-")
    app = Appliance(work, workers=args.workers, log_level="warn",
                    module_so=module,
                    extra_http="""
        conclave_muc_rate 1000000;
        conclave_muc_queue 100000;
        conclave_muc_max_occupants %d;
        conclave_audit_fsync %s;
    """ % (max(n, 1000), args.fsync))
    app.start()
    try:
        t = time.monotonic()
        uids = app.ldap.add_users("mucb", n)
        users = os.path.join(work, "users.txt")
        with open(users, "w") as f:
            f.write("\n".join(uids) + "\n")
        print("# %d users in %.1f s; nginx %d workers, audit fsync %s"
              % (n, time.monotonic() - t, args.workers, args.fsync),
              flush=True)
        cmd = [run_bench.LOADGEN,
               "--url", "tcp://127.0.0.1:%d" % app.nginx.xmpp_port,
               "--users", users, "--scenario", "muc-fanout",
               "--room", ROOM, "--sessions", str(n),
               "--senders", str(min(args.senders, n)),
               "--window", str(args.window),
               "--duration", str(args.duration),
               "--warmup", str(args.warmup),
               "--payload", str(args.payload),
               "--ramp", str(args.ramp),
               "--server-pids", ",".join(
                   str(p) for p in [app.nginx.pid]
                   + app.nginx.worker_pids()),
               "--csv", csv_path,
               "--label", "muc n=%d rep=%d %s"
               % (n, rep, os.path.basename(module))]
        if args.loadgen_cpu != "":
            cmd += ["--cpu", args.loadgen_cpu]
        print("# module %s; load average before: %.2f %.2f %.2f"
              % ((module,) + os.getloadavg()), flush=True)
        rec = stat = None
        if args.perf:
            import profile as prof
            pids = ",".join(str(p) for p in app.nginx.worker_pids())
            data = os.path.join(work, "perf.data")
            stat_path = os.path.join(work, "syscalls.txt")
            rec = subprocess.Popen(
                ["perf", "record", "-q", "-F", "999", "-g", "-p", pids,
                 "-o", data])
            stat = subprocess.Popen(
                ["perf", "stat", "-x", ",", "-o", stat_path, "-p", pids]
                + sum([["-e", "syscalls:sys_enter_" + c]
                       for c in prof.SYSCALLS], []))
        t0 = cpu_times()
        rc = subprocess.run(cmd, timeout=600).returncode
        print_cpu(t0, cpu_times())
        if rec:
            for p in (rec, stat):
                p.send_signal(signal.SIGINT)
                p.wait(timeout=60)
            perf_report(data, args.top)
            print_syscalls(stat_path, csv_path)
        problems = app.check_logs()
        if problems:
            print("*** nginx problems: %s" % problems)
        return rc
    finally:
        app.stop()


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    run_bench.build_loadgen()
    out = os.path.join(REPO, "build", "bench", "results")
    os.makedirs(out, exist_ok=True)
    csv_path = os.path.join(out, "muc-%s.csv" % time.strftime(
        "%Y%m%d-%H%M%S"))
    rc = 0
    modules = args.module.split(",")
    for rep in range(args.repeat):
        for n in (int(x) for x in args.occupants.split(",")):
            for module in modules:
                rc |= one(args, n, rep, csv_path, os.path.abspath(module))
    print("# rows in %s" % os.path.relpath(csv_path, REPO))
    return 1 if rc else 0


if __name__ == "__main__":
    sys.exit(main())
