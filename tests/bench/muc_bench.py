#!/usr/bin/python3
"""MUC fan-out benchmark (issue 7): deliveries per second in one room of
N occupants spread over the nginx workers; measures, never asserts.

    muc_bench.py [--occupants 100,1000] [--senders 4] [--window 8]
                 [--duration 10] [--workers 2] [--repeat 1]

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
"""

import argparse
import os
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
    return p.parse_args(argv)


def one(args, n, rep, csv_path):
    work = tempfile.mkdtemp(prefix="muc-bench-")
    app = Appliance(work, workers=args.workers, log_level="warn",
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
               "--label", "muc n=%d rep=%d" % (n, rep)]
        if args.loadgen_cpu != "":
            cmd += ["--cpu", args.loadgen_cpu]
        rc = subprocess.run(cmd, timeout=600).returncode
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
    for rep in range(args.repeat):
        for n in (int(x) for x in args.occupants.split(",")):
            rc |= one(args, n, rep, csv_path)
    print("# rows in %s" % os.path.relpath(csv_path, REPO))
    return 1 if rc else 0


if __name__ == "__main__":
    sys.exit(main())
