#!/usr/bin/python3
"""Offline delivery (issue 7): the time from a user's initial presence to
the last of N messages stored for them while they were away.  Measures,
asserts nothing.

    offline_bench.py [--messages 1000] [--repeat 3] [--workers 2]

bob signs in once (offline storage is for accounts that have been seen),
goes away; alice sends N messages over WebSocket and waits until every
one is stored (MariaDB's offline table holds N rows); bob signs in again
and the clock runs from his initial presence to the last <message/> read.
The offline quota is raised above N for the run.
"""

import argparse
import os
import re
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))

from appliance import Appliance  # noqa: E402
from rawws import RawWS  # noqa: E402


def stored(app, user):
    rows = app.mariadb.query(
        "SELECT COUNT(*) FROM offline_message WHERE owner_jid='%s'" % user,
        database="conclave")
    return int(rows[0][0])


def one_round(app, n, k):
    port = app.nginx.http_port
    bob = RawWS(port)
    bob.login("bob", resource="r%d" % k)
    bob.close()
    time.sleep(0.5)

    alice = RawWS(port)
    alice.login("alice", resource="a%d" % k)
    for i in range(n):
        alice.send("<message xmlns='jabber:client' to='bob@example.com' "
                   "type='chat' id='m%d-%d'><body>offline %d</body>"
                   "</message>" % (k, i, i))
    deadline = time.monotonic() + 120
    while stored(app, "bob@example.com") < n:
        if time.monotonic() > deadline:
            raise RuntimeError("only %d of %d stored"
                               % (stored(app, "bob@example.com"), n))
        time.sleep(0.1)
    alice.close()

    bob = RawWS(port, timeout=60)
    bob.login("bob", resource="r%d" % k, presence=False)
    t0 = time.perf_counter()
    bob.send("<presence xmlns='jabber:client'/>")
    got = 0
    while got < n:
        text = bob.recv(timeout=60)
        got += len(re.findall(r"<message[ >]", text))
    elapsed = time.perf_counter() - t0
    bob.close()
    return elapsed


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()

    work = tempfile.mkdtemp(prefix="offline-bench-")
    app = Appliance(work, workers=args.workers, log_level="warn",
                    extra_http="conclave_offline_quota %d;"
                    % (args.messages + 10))
    app.start()
    try:
        times = [one_round(app, args.messages, k)
                 for k in range(args.repeat)]
    finally:
        app.stop()
    print("offline delivery of %d queued messages, %d workers, load %.1f:"
          % (args.messages, args.workers, os.getloadavg()[0]))
    print("  presence to last message: %s s (median %.3f s, %.0f msg/s)"
          % (", ".join("%.3f" % t for t in times), statistics.median(times),
             args.messages / statistics.median(times)))


if __name__ == "__main__":
    main()
