#!/usr/bin/python3
"""PEP fan-out (XEP-0163, docs/pep.md): the time from a publish to the
last of its notifications, and deliveries per second, with the
subscribers' resources spread over the workers.  Measures, asserts
nothing.

    pep_bench.py [--resources 50] [--publishes 200] [--workers 2]

alice publishes; bob, carol, erin and frank are subscribed to her
presence and each opens --resources sessions whose XEP-0115 caps ask
for the node (the first session of each worker answers the server's
disco#info, the others hit the worker's caps cache).  Each publish waits
until every session has its notification; latencies are per publish.
"""

import argparse
import base64
import hashlib
import os
import re
import selectors
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))

from appliance import Appliance  # noqa: E402
from rawtcp import RawTCP  # noqa: E402

NODE = "urn:bench:pep"
USERS = ("bob", "carol", "erin", "frank")
FEATURES = ("http://jabber.org/protocol/disco#info", NODE + "+notify")


def caps_ver():
    s = "client/bot//bench<" + "".join(f + "<" for f in sorted(FEATURES))
    return base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()


def session(app, user, resource):
    c = RawTCP(app.nginx.xmpp_port, timeout=30)
    c.login(user, resource=resource)
    return c


def subscribe(alice, app, user):
    c = session(app, user, "setup")
    c.send("<presence/>")
    c.send("<presence to='alice@example.com' type='subscribe'/>")
    alice.expect(r"<presence(?=[^>]*from='%s@example.com')"
                 r"(?=[^>]*type='subscribe')" % user)
    alice.send("<presence to='%s@example.com' type='subscribed'/>" % user)
    c.expect(r"type='subscribed'")
    c.close()


def interested(app, user, resource, ver):
    c = session(app, user, resource)
    c.send("<presence><c xmlns='http://jabber.org/protocol/caps' "
           "hash='sha-1' node='urn:bench' ver='%s'/></presence>" % ver)
    try:
        q = c.expect(r"<iq[^>]*type='get'[^>]*>.*?</iq>", 1.0)
    except TimeoutError:
        return c
    qid = re.search(r"id='([^']+)'", q).group(1)
    c.send("<iq type='result' to='example.com' id='%s'><query xmlns='http:"
           "//jabber.org/protocol/disco#info' node='urn:bench#%s'>"
           "<identity category='client' type='bot'/>%s</query></iq>"
           % (qid, ver, "".join("<feature var='%s'/>" % f
                                for f in FEATURES)))
    return c


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--resources", type=int, default=50)
    p.add_argument("--publishes", type=int, default=200)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()

    work = tempfile.mkdtemp(prefix="pep-bench-")
    app = Appliance(work, workers=args.workers, log_level="warn",
                    extra_http="conclave_max_sessions_per_user %d;"
                    % (args.resources + 4))
    app.start()
    sessions = []
    try:
        alice = session(app, "alice", "pub")
        alice.send("<presence/>")
        for u in USERS:
            subscribe(alice, app, u)
        ver = caps_ver()
        for u in USERS:
            for r in range(args.resources):
                sessions.append(interested(app, u, "r%d" % r, ver))
        time.sleep(1)
        for c in sessions:
            c.buf = ""
        sel = selectors.DefaultSelector()
        for c in sessions:
            sel.register(c.sock, selectors.EVENT_READ, c)

        lat = []
        t_all = time.perf_counter()
        for i in range(args.publishes):
            mark = "<item id='b%d'>" % i
            t0 = time.perf_counter()
            alice.send("<iq type='set' id='p%d'><pubsub xmlns='http://"
                       "jabber.org/protocol/pubsub'><publish node='%s'>"
                       "<item id='b%d'><v xmlns='urn:bench'>%d</v></item>"
                       "</publish></pubsub></iq>" % (i, NODE, i, i))
            waiting = set(sessions)
            for c in sessions:
                if mark in c.buf:
                    waiting.discard(c)
            while waiting:
                for key, _ in sel.select(30):
                    c = key.data
                    c.buf += c.sock.recv(65536).decode(errors="replace")
                    if mark in c.buf:
                        waiting.discard(c)
                        c.buf = c.buf[c.buf.index(mark) + len(mark):]
            lat.append(time.perf_counter() - t0)
            alice.expect(r"id='p%d'" % i)
        total = time.perf_counter() - t_all
    finally:
        for c in sessions:
            c.close()
        app.stop()

    n = len(sessions)
    lat.sort()
    print("PEP fan-out: %d publishes to %d interested sessions "
          "(%d users x %d), %d workers, load %.1f:"
          % (args.publishes, n, len(USERS), args.resources, args.workers,
             os.getloadavg()[0]))
    print("  publish to last notification: p50 %.1f ms, p90 %.1f ms, "
          "p99 %.1f ms"
          % (1000 * statistics.median(lat), 1000 * lat[int(len(lat) * .9)],
             1000 * lat[min(len(lat) - 1, int(len(lat) * .99))]))
    print("  %.0f notifications/s (closed loop, one publish at a time)"
          % (args.publishes * n / total))


if __name__ == "__main__":
    main()
