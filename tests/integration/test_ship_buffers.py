"""The audit shipper gives back what a backlog's batches took.

A worker's shipper reads journal records into column-wise arrays and a
byte buffer, one batch (up to conclave_audit_ship_batch rows) at a
time.  They hold 64 rows at rest, grow while a backlog lasts, and shrink
back once a round finds nothing to ship, so that a burst (a wave of
sign-ins, MariaDB down for a while) does not leave the worker holding a
batch's worth of memory for good (docs/benchmarks.md, "Session 23").
The status page shows the buffers (ship_buffer_bytes, and
ship_buffer_peak_bytes since the worker started), /metrics their sum
(conclave_audit_ship_buffer_bytes).  Growing and shrinking must not
change what is shipped: every record exactly once, the chain intact.
"""

import time

from auditwait import wait_drained
from chathelp import status
from rawtcp import RawTCP
from test_audit import rows, verify

APPLIANCE_WORKERS = 1

N = 300


def journal(app):
    st = status(app)["audit"]
    assert len(st) == 1, st
    return st[0]


def test_a_backlog_grows_the_batch_and_it_shrinks_back(appliance):
    app = appliance
    alice, bob = app.ldap.add_users("shipbuf", 2)
    a = RawTCP(app.nginx.xmpp_port)
    a.login(alice, resource="r")
    b = RawTCP(app.nginx.xmpp_port)
    to = b.login(bob, resource="r")

    def backlog(tag):
        """N messages delivered while MariaDB is down, then shipped:
        how many rows each of their stanza ids has."""
        app.mariadb.stop()
        for i in range(N):
            a.send("<message to='%s' type='chat' id='%s-%d'>"
                   "<body>%s %d</body></message>" % (to, tag, i, tag, i))
        b.expect(r"%s %d</body>" % (tag, N - 1), timeout=30)
        app.mariadb.start()
        wait_drained(app)
        got = rows(app, "SELECT stanza_id, COUNT(*) FROM audit_record "
                   "WHERE event = 'message' AND stanza_id LIKE '%s-%%' "
                   "GROUP BY stanza_id" % tag)
        return {i: int(n) for i, n in got}

    try:
        rest = wait_drained(app)[0]["ship_buffer_bytes"]
        assert rest > 0

        ids = backlog("sb")
        assert sorted(ids) == sorted("sb-%d" % i for i in range(N))
        assert set(ids.values()) == {1}

        # the N records went in batches larger than the resting 64 rows
        j = journal(app)
        assert j["ship_buffer_peak_bytes"] > rest + 65536, (rest, j)

        # and once a round finds nothing, the buffers are back at rest
        deadline = time.monotonic() + 10
        while journal(app)["ship_buffer_bytes"] > rest + 65536 \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        j = journal(app)
        assert j["ship_buffer_bytes"] <= rest + 65536, (rest, j)
        assert app.nginx.metric("conclave_audit_ship_buffer_bytes") \
            == j["ship_buffer_bytes"]

        # a second backlog grows them again, and ships as well
        ids = backlog("sc")
        assert sorted(ids) == sorted("sc-%d" % i for i in range(N))
        assert set(ids.values()) == {1}
        verify(app)
    finally:
        a.close()
        b.close()
