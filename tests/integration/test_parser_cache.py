"""The per-worker cache of XML parsers gives back what a burst left.

A stream holds a libxml2 push parser (about 16 KiB) only while a stanza
is being read; between stanzas it returns it to its worker's cache, so
that the next stanza does not build a new one.  The cache fills to what
the busiest moment needed, up to 64 parsers (1 MiB), and the parsers
that then stay unused for a whole second of the housekeeping timer are
freed, so that a wave of sign-ins does not leave that memory held
(docs/benchmarks.md, "Session 22").  /metrics shows the cache
(conclave_worker_parsers_cached).
"""

import time

from rawtcp import RawTCP

APPLIANCE_WORKERS = 1

N = 12


def cached(app):
    return sum(app.nginx.metric("conclave_worker_parsers_cached", pid=pid)
               for pid in app.nginx.worker_pids())


def test_a_burst_fills_the_cache_and_unused_parsers_are_freed(appliance):
    app = appliance
    uids = app.ldap.add_users("pcache", N)
    conns = []
    try:
        for uid in uids:
            c = RawTCP(app.nginx.xmpp_port)
            c.login(uid, resource="r")
            conns.append(c)
        to = conns[0].jid

        # every stream in the middle of a stanza holds a parser of its own
        for c in conns:
            c.send("<message to='%s' type='chat' id='m1'><body>half" % to)
        time.sleep(0.3)
        # between stanzas each gives it back to the worker's cache
        for c in conns:
            c.send(" of it</body></message>")
        for _ in conns:
            conns[0].expect(r"half of it</body>")
        assert cached(app) == N

        # a second without a new stanza: all of them are freed
        deadline = time.monotonic() + 10
        while cached(app) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert cached(app) == 0

        # and a stream goes on with a new parser
        conns[1].send("<message to='%s' type='chat' id='m2'>"
                      "<body>after the trim</body></message>" % to)
        conns[0].expect(r"after the trim</body>")
        assert cached(app) <= 1
    finally:
        for c in conns:
            c.close()
