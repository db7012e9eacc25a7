"""MariaDB stopped for 30 s in the middle of a conversation (issue 3,
"Outage"): chat goes on, the journal backlog grows and shows on the
status page, and when mariadbd is back the backlog drains by itself;
nothing is missing and nothing is duplicated.
"""

import time

from auditwait import wait_drained
from chathelp import status
from test_audit import rows, verify

OUTAGE = 30.0


def test_chat_through_a_mariadb_outage(make_appliance, clients):
    app = make_appliance()
    a = clients("stanza")
    assert a.connect(app.ws_url, "alice", "alice-pw")["ev"] == "online"
    b = clients("xmpp")
    assert b.connect(app.ws_url, "bob", "bob-pw")["ev"] == "online"
    a.presence()
    b.available()

    def talk(tag, n):
        for i in range(n):
            body = "%s-%d" % (tag, i)
            a.message("bob@example.com", body, id=body)
            b.wait_for(lambda e: e["ev"] == "message"
                       and e.get("body") == body, 10)

    talk("before", 10)
    wait_drained(app)

    app.mariadb.stop()
    t0 = time.monotonic()
    talk("during", 20)              # delivered while MariaDB is down

    # the backlog shows (records, bytes, lag), and shipping reports the
    # database as down; the lag and bytes are refreshed every 2 s
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        st = status(app)["audit"]
        behind = [j for j in st if j["backlog_records"]]
        if sum(j["backlog_records"] for j in st) >= 20 and \
                not any(j["mariadb_ok"] for j in behind) and \
                all(j["lag_seconds"] > 0 and j["backlog_bytes"] > 0
                    for j in behind):
            break
        time.sleep(0.3)
    else:
        raise AssertionError("backlog not visible: %r" % st)

    time.sleep(max(0.0, OUTAGE - (time.monotonic() - t0)))
    talk("late", 5)
    app.mariadb.start()             # same data directory and port

    wait_drained(app, 60)
    got = rows(app, "SELECT stanza_id, COUNT(*) FROM audit_record WHERE "
               "event='message' GROUP BY stanza_id")
    ids = {i: int(n) for i, n in got}
    want = ["before-%d" % i for i in range(10)] + \
        ["during-%d" % i for i in range(20)] + \
        ["late-%d" % i for i in range(5)]
    missing = [w for w in want if w not in ids]
    assert not missing, missing
    assert all(n == 1 for n in ids.values()), ids
    verify(app)


def test_chat_while_mariadb_is_frozen(make_appliance, clients):
    """A MariaDB that accepts connections but never answers (SIGSTOP):
    the shipper threads wait out conclave_audit_db_timeout (2 s here),
    messages keep flowing at once, and shipping resumes on SIGCONT."""
    app = make_appliance()
    a = clients("xmpp")
    assert a.connect(app.ws_url, "alice", "alice-pw")["ev"] == "online"
    b = clients("stanza")
    assert b.connect(app.ws_url, "bob", "bob-pw")["ev"] == "online"
    a.presence()
    b.available()
    wait_drained(app)

    # frozen until the finally below: if delivery waited for the
    # database, no message would arrive
    app.mariadb.pause()
    try:
        for i in range(20):
            body = "frozen-%d" % i
            a.message("bob@example.com", body, id=body)
            b.wait_for(lambda e: e["ev"] == "message"
                       and e.get("body") == body, 10)
            time.sleep(0.1)
        st = status(app)["audit"]
        assert sum(j["backlog_records"] for j in st) >= 20, st
    finally:
        app.mariadb.resume()

    wait_drained(app, 60)
    got = rows(app, "SELECT stanza_id, COUNT(*) FROM audit_record WHERE "
               "stanza_id LIKE 'frozen-%' GROUP BY stanza_id")
    assert len(got) == 20 and all(int(n) == 1 for _, n in got), got
    verify(app)
