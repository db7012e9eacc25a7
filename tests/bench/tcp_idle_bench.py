#!/usr/bin/python3
"""Memory per idle authenticated XMPP-over-TCP session (issue 5): K
sessions over direct TLS (port 5223 style) or STARTTLS, each signed in
(real LDAP bind), bound and with initial presence, then held; the
figure is the growth of the nginx workers' PSS and RSS divided by K.
Measures, asserts nothing.

    tcp_idle_bench.py [--sessions 2000] [--mode direct|starttls|plain]
                      [--workers 2]

The clients are Python threads with blocking sockets in one process, so
K is bounded by this process (a few thousand is quick); the load
generator (tests/bench/loadgen.c) takes over for tens of thousands once
it speaks TCP.  The kernel's socket memory is not in the figure.
"""

import argparse
import os
import resource
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))

from appliance import Appliance  # noqa: E402
from rawtcp import RawTCP  # noqa: E402


def mem_kib(pids):
    """Sum of Pss and Rss (KiB) over pids, from smaps_rollup."""
    pss = rss = 0
    for pid in pids:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss += int(line.split()[1])
    return pss, rss


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sessions", type=int, default=2000)
    p.add_argument("--mode", default="direct",
                   choices=("direct", "starttls", "plain"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=16)
    args = p.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    work = tempfile.mkdtemp(prefix="tcp-idle-")
    app = Appliance(work, workers=args.workers,
                    plaintext_auth=(args.mode == "plain"),
                    log_level="warn")
    app.start()
    try:
        app.ldap.add_users("idle", args.sessions)
        port = app.nginx.xmpps_port if args.mode == "direct" \
            else app.nginx.xmpp_port
        workers = app.nginx.worker_pids()
        # warm up: one session, so first-use allocations are not counted
        w = RawTCP(port, tls=(args.mode == "direct"))
        w.login("idle1", tls=(args.mode == "starttls"))
        time.sleep(1)
        before = mem_kib(workers)
        conns, errors = [], []
        lock = threading.Lock()

        def run(ids):
            for i in ids:
                try:
                    c = RawTCP(port, tls=(args.mode == "direct"))
                    c.login("idle%d" % i, resource="r%d" % i,
                            tls=(args.mode == "starttls"))
                    c.send("<presence/>")
                    with lock:
                        conns.append(c)
                except Exception as e:
                    with lock:
                        errors.append(repr(e))

        t0 = time.monotonic()
        ids = list(range(1, args.sessions + 1))
        ts = [threading.Thread(target=run, args=(ids[k::args.threads],))
              for k in range(args.threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        elapsed = time.monotonic() - t0
        time.sleep(3)
        after = mem_kib(workers)
        k = len(conns)
        print("mode %s, %d workers: %d sessions signed in in %.1f s "
              "(%d failed)" % (args.mode, args.workers, k, elapsed,
                               len(errors)))
        if errors:
            print("  first error: %s" % errors[0])
        if k:
            print("  per idle session: PSS %.2f KiB, RSS %.2f KiB "
                  "(workers' PSS %d -> %d KiB)"
                  % ((after[0] - before[0]) / k, (after[1] - before[1]) / k,
                     before[0], after[0]))
        for c in conns:
            c.close()
        w.close()
    finally:
        app.stop()


if __name__ == "__main__":
    main()
