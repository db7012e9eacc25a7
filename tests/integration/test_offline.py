"""XEP-0160 offline messages in MariaDB (RFC 6121 8.5.2.2.1).

Real clients: Debian's python3-slixmpp.  A message to a user with no
available resource is audited, stored, and delivered with an XEP-0203
<delay/> at the next initial presence, exactly once even when two
sessions of the recipient on different workers become available at the
same moment.  The per-user quota answers <service-unavailable/>
(XEP-0160 section 2) of type wait, with a text that names it; a
stopped or frozen MariaDB gives the sender a clear error while the chat
of others goes on.
"""

import os
import signal
import threading
import time


from chathelp import slix, worker_of

QUOTA = 400
APPLIANCE_EXTRA_HTTP = ("conclave_offline_quota %d;\n"
                        "    conclave_db_timeout 3s;" % QUOTA)
APPLIANCE_LOG_LEVEL = "info"


def db(app, sql):
    return app.mariadb.query(sql, database=app.mariadb.database)


def stored(app, owner):
    return int(db(app, "SELECT COUNT(*) FROM offline_message WHERE "
                       "owner_jid = '%s'" % owner)[0][0])


def wait_stored(app, owner, n, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stored(app, owner) == n:
            return
        time.sleep(0.1)
    assert stored(app, owner) == n


def known(pool, app, user):
    """An account gets offline storage once it has been available."""
    c = slix(pool, app, user, "first")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if db(app, "SELECT COUNT(*) FROM chat_user WHERE jid = "
                   "'%s@example.com'" % user)[0][0] == "1":
            break
        time.sleep(0.1)
    c.disconnect()
    # its unavailable presence is out: the registry has no route left
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and worker_of(app, c.jid):
        time.sleep(0.05)


def test_offline_delivery_with_delay_across_workers(appliance, pool):
    known(pool, appliance, "bob")
    a = slix(pool, appliance, "alice", "off")
    for i in range(5):
        a.message("bob@example.com", "while away %d <&>" % i, id="off%d" % i)
    wait_stored(appliance, "bob@example.com", 5)
    # the audit record was written before the row (one record each)
    assert not a.drain(settle=0.3)        # no error to the sender

    b = slix(pool, appliance, "bob", "back", not_pid=a.worker)
    # in the order they were sent
    got = [b.wait_message(lambda m: m["body"]) for _ in range(5)]
    assert [m["id"] for m in got] == ["off%d" % i for i in range(5)]
    for i, m in enumerate(got):
        assert m["body"] == "while away %d <&>" % i
        assert m["from"] == a.jid
        assert m["delay"]["from"] == "example.com"
        assert m["delay"]["stamp"].endswith("Z")
    wait_stored(appliance, "bob@example.com", 0)
    assert not [m for m in b.drain(settle=0.5) if m["body"]]

    # exactly once: the next sign-in gets nothing
    b.disconnect()
    b = slix(pool, appliance, "bob", "again")
    assert not [m for m in b.drain(settle=1.0) if m["body"]]


def test_offline_exactly_once_two_workers(appliance, pool):
    n = 300
    known(pool, appliance, "carol")
    a = slix(pool, appliance, "alice", "burst")
    for i in range(n):
        a.message("carol@example.com", "m%d" % i, id="x%d" % i)
    wait_stored(appliance, "carol@example.com", n)

    # two sessions, on different workers, without presence yet; then
    # both become available at the same moment
    c1 = slix(pool, appliance, "carol", "c1", presence=False)
    c2 = slix(pool, appliance, "carol", "c2", presence=False,
              not_pid=c1.worker)
    go = threading.Barrier(2)

    def avail(c):
        go.wait()
        c.send(lambda x: x.send_presence())
    ts = [threading.Thread(target=avail, args=(c,)) for c in (c1, c2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()

    deadline = time.monotonic() + 30
    got = []
    while time.monotonic() < deadline and len(got) < n:
        for c in (c1, c2):
            got += [m["id"] for m in c.drain(settle=0.2) if m["body"]]
    assert sorted(got) == sorted("x%d" % i for i in range(n))
    assert len(got) == len(set(got))
    wait_stored(appliance, "carol@example.com", 0)


def test_quota_exceeded(appliance, pool):
    known(pool, appliance, "erin")
    a = slix(pool, appliance, "frank", "quota")
    for i in range(QUOTA + 5):
        a.message("erin@example.com", "q%d" % i, id="q%d" % i)
    errs = [a.wait_message(lambda m: m["type"] == "error")
            for _ in range(5)]
    # XEP-0160 section 2, step 3 (RFC 6121 8.5.2.2.1 allows no other)
    assert all(e["error"] == "service-unavailable" for e in errs)
    assert all(e["error_type"] == "wait" for e in errs)
    assert all(e["text"] == "the recipient's offline storage is full"
               for e in errs)
    assert not a.drain(settle=0.5)
    assert stored(appliance, "erin@example.com") == QUOTA
    # delivery makes room again; what was refused is not delivered (the
    # stores run in several threads: which 5 lost the race may vary)
    e = slix(pool, appliance, "erin", "drain")
    got = set()
    deadline = time.monotonic() + 30
    while len(got) < QUOTA and time.monotonic() < deadline:
        got |= {m["id"] for m in e.drain(settle=0.3) if m["body"]}
    refused = {m["id"] for m in errs}
    assert got | refused == {"q%d" % i for i in range(QUOTA + 5)}
    assert not got & refused
    wait_stored(appliance, "erin@example.com", 0)


def test_never_signed_in_user_bounces(appliance, pool):
    a = slix(pool, appliance, "alice", "ghost")
    a.message("nobody@example.com", "hello?", id="g1")
    m = a.wait_message(lambda m: m["id"] == "g1")
    assert m["type"] == "error" and m["error"] == "service-unavailable"


def test_headline_and_negative_priority(appliance, pool):
    known(pool, appliance, "bob")
    neg = slix(pool, appliance, "bob", "neg", presence=False)
    neg.send(lambda x: x.send_presence(ppriority=-5))
    time.sleep(0.3)
    a = slix(pool, appliance, "alice", "hl")
    # RFC 6121 8.5.2.1.1: only a negative priority: stored, not delivered
    a.message("bob@example.com", "kept", id="neg1")
    # 8.5.2.2.1: a headline to nobody is dropped without an error
    a.message("bob@example.com", "news", id="hl1", mtype="headline")
    wait_stored(appliance, "bob@example.com", 1)
    assert not neg.drain(settle=0.5)
    assert not a.drain(settle=0.1)
    b = slix(pool, appliance, "bob", "pos")
    m = b.wait_message(lambda m: m["id"] == "neg1")
    assert m["delay"]


def test_message_to_a_session_that_ended_on_the_way(appliance, pool):
    """RFC 6121 8.5.3.2 and issue 7's "nothing lost": a message routed
    to a session of the other worker that ends before the inter-worker
    datagram arrives goes to offline storage (no other resource), not
    nowhere.  The recipient's worker is stopped while the recipient's
    connection is cut (no stream end, no XEP-0198) and the message is
    sent: when it runs again, epoll reports the connection's end first
    (it came first) and the datagram after it."""
    known(pool, appliance, "carol")
    a = slix(pool, appliance, "frank", "sender")
    g = slix(pool, appliance, "carol", "leaving", not_pid=a.worker)
    os.kill(g.worker, signal.SIGSTOP)
    try:
        g.xmpp.ended.clear()
        pool.call(lambda: g.xmpp.transport.abort())
        assert g.xmpp.ended.wait(10)
        # the registry still names the session: the datagram goes to it
        # (no status page here: the stopped worker might take the request)
        a.message(g.jid, "on the way", id="otw1")
        time.sleep(0.5)
    finally:
        os.kill(g.worker, signal.SIGCONT)
    wait_stored(appliance, "carol@example.com", 1)
    assert "stanza for ended session" in appliance.nginx.error_log()
    assert not a.drain(settle=0.3)        # kept, so no error to the sender
    back = slix(pool, appliance, "carol", "back")
    m = back.wait_message(lambda m: m["id"] == "otw1")
    assert m["body"] == "on the way" and m["from"] == a.jid
    assert m["delay"]["stamp"].endswith("Z")
    wait_stored(appliance, "carol@example.com", 0)


def test_mariadb_down_gives_clear_error(make_appliance, pool):
    # the request's timer (2 s) fires while the connection's own timeouts
    # (30 s) still wait: the thread's statements run when MariaDB thaws
    app = make_appliance(extra_http="conclave_db_timeout 2s;\n"
                                    "    conclave_audit_db_timeout 30s;")
    known(pool, app, "bob")
    a = slix(pool, app, "alice", "down")
    c = slix(pool, app, "carol", "down")
    e = slix(pool, app, "erin", "down", not_pid=c.worker)

    # frozen: connections are accepted and never answered
    app.mariadb.pause()
    try:
        a.message("bob@example.com", "lost?", id="d1")
        # the others chat on meanwhile, between workers
        for i in range(10):
            c.message(e.jid, "on %d" % i)
            e.wait_message(lambda m: m["body"] == "on %d" % i, 5)
        m = a.wait_message(lambda m: m["id"] == "d1", 15)
        assert m["type"] == "error" and m["error"] == \
            "internal-server-error"
        assert m["text"] == "offline storage is unavailable"
    finally:
        app.mariadb.resume()

    # thawed: the late store runs on, and its thread rolls it back
    # instead of committing what its sender was told had failed (reads
    # that timed out meanwhile, presence broadcasts, end "(read only)"
    # and may come first)
    deadline = time.monotonic() + 20
    while "ended after its timeout: answered as timed out: rolled back" \
            not in app.nginx.error_log():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert stored(app, "bob@example.com") == 0

    # stopped: refused at once
    app.mariadb.stop()
    a.message("bob@example.com", "lost again?", id="d2")
    m = a.wait_message(lambda m: m["id"] == "d2", 15)
    assert m["error"] == "internal-server-error"
    c.message(e.jid, "still on")
    e.wait_message(lambda m: m["body"] == "still on")

    # back: stored again (each try is either refused or stored).  The
    # store that timed out while the server was frozen ("lost?") reached
    # it when it thawed, and its thread rolled it back: its sender was
    # told it failed, so it must never be delivered
    app.mariadb.start()
    deadline = time.monotonic() + 30
    tries = 0
    while not stored(app, "bob@example.com"):
        assert time.monotonic() < deadline
        tries += 1
        a.message("bob@example.com", "kept", id="d3-%d" % tries)
        try:
            m = a.wait_message(lambda m: m["id"] == "d3-%d" % tries, 3)
            assert m["error"] == "internal-server-error"
        except Exception:
            pass
    b = slix(pool, app, "bob", "back")
    first = b.wait_message(lambda m: True)
    assert first["body"] == "kept"
    assert not [m for m in b.drain() if m.get("body") == "lost?"]
    assert "database request timed out, not committed" in \
        app.nginx.error_log()
