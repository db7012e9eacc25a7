"""Stop and restart the whole appliance (issue 3, "Restart"): the
workers resume their journals, shipping goes on from where it stopped,
and nothing is shipped twice.
"""

from auditwait import wait_drained
from test_audit import rows, verify


def talk(app, clients, tag, n):
    a = clients("stanza")
    assert a.connect(app.ws_url, "alice", "alice-pw")["ev"] == "online"
    b = clients("xmpp")
    assert b.connect(app.ws_url, "bob", "bob-pw")["ev"] == "online"
    a.presence()
    b.available()
    for i in range(n):
        body = "%s-%d" % (tag, i)
        a.message("bob@example.com", body, id=body)
        b.wait_for(lambda e: e["ev"] == "message"
                   and e.get("body") == body, 10)
    a.disconnect()
    b.disconnect()


def test_restart_resumes_shipping(make_appliance, clients):
    app = make_appliance()
    talk(app, clients, "first", 15)
    wait_drained(app)
    before = dict(rows(app, "SELECT writer_id, shipped_seq FROM "
                       "audit_journal"))

    app.stop()
    app.start()

    talk(app, clients, "second", 15)
    wait_drained(app)
    after = dict(rows(app, "SELECT writer_id, shipped_seq FROM "
                      "audit_journal"))
    # the same journals continue: their seqs only grow
    for w, seq in before.items():
        assert int(after[w]) >= int(seq), (w, seq, after)
    assert sum(int(v) for v in after.values()) > \
        sum(int(v) for v in before.values())

    got = rows(app, "SELECT stanza_id, COUNT(*) FROM audit_record WHERE "
               "event='message' GROUP BY stanza_id")
    ids = {i: int(n) for i, n in got}
    for tag in ("first", "second"):
        for i in range(15):
            assert ids.get("%s-%d" % (tag, i)) == 1, (tag, i, ids)
    verify(app)
