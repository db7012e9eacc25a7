"""The audit trail end to end (issue 3): real clients talk through nginx
with 2 workers; every message, sign-in and session end must reach
MariaDB exactly once, through a worker crash, a MariaDB outage, a full
or read-only journal disk and a restart of the whole appliance, and
`conclavectl verify` must pass afterwards.
"""

import json
import os
import time

import pytest

from auditwait import wait_drained
from chathelp import worker_of
from rawws import RawWS

DB = "conclave"


def rows(app, sql):
    return app.mariadb.query(sql, database=DB)


def count(app, where="1"):
    return int(rows(app, "SELECT COUNT(*) FROM audit_record WHERE " +
                    where)[0][0])


def wait_shipped(app, where, n, timeout=30.0):
    """Polls MariaDB until `where` matches at least n rows."""
    deadline = time.monotonic() + timeout
    got = -1
    while time.monotonic() < deadline:
        got = count(app, where)
        if got >= n:
            return got
        time.sleep(0.2)
    pytest.fail("only %d of %d records (%s) reached MariaDB in %.0fs"
                % (got, n, where, timeout))


def verify(app):
    r = app.conclavectl("verify", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def login_on(app, user, pid, want_same, tries=40):
    """A RawWS session of user whose worker is (or is not) pid."""
    for i in range(tries):
        ws = RawWS(app.nginx.http_port)
        jid = ws.login(user, resource="r%d-%d" % (os.getpid(), i))
        w = worker_of(app, jid)
        if pid is None or (w == pid) == want_same:
            return ws, w
        ws.close()
    pytest.fail("could not place %s %s worker %s" % (
        user, "on" if want_same else "off", pid))


# ---------------------------------------------------------------------


def test_conversation_is_recorded(appliance, clients):
    app = appliance
    before = count(app)

    a = clients("xmpp")
    ev = a.connect(app.ws_url, "alice", "alice-pw")
    assert ev["ev"] == "online", ev
    b = clients("stanza")
    ev = b.connect(app.ws_url, "bob", "bob-pw")
    assert ev["ev"] == "online", ev
    a.presence()
    b.available()

    bodies = ["hello bob", "emoji \U0001F600\U0001F44D and CJK \u4f60\u597d"
              "\u4e16\u754c \u65e5\u672c\u8a9e", "markup <b>&amp;</b>"]
    for i, body in enumerate(bodies):
        a.message("bob@example.com", body, id="conv%d" % i)
        m = b.wait_for(lambda e: e["ev"] == "message"
                       and e.get("body") == body, 10)
        assert m["from"].startswith("alice@example.com/")

    # failed sign-ins: a wrong password, and a user outside the group
    bad = clients("stanza")
    ev = bad.connect(app.ws_url, "carol", "wrong-pw")
    assert ev["ev"] == "error", ev
    denied = clients("xmpp")
    ev = denied.connect(app.ws_url, "dave", "dave-pw")
    assert ev["ev"] == "error", ev

    a.disconnect()
    b.disconnect()

    wait_shipped(app, "event='message' AND stanza_id LIKE 'conv%'", 3)
    wait_shipped(app, "event='signin' AND status='fail' AND actor_user IN "
                 "('carol@example.com','dave@example.com')", 2)
    wait_shipped(app, "event='session_end' AND actor_user IN "
                 "('alice@example.com','bob@example.com')", 2)

    got = rows(app, "SELECT stanza_id, actor_user, peer, msg_type, "
               "transport, actor_ip, HEX(body), session_id FROM "
               "audit_record WHERE event='message' AND stanza_id LIKE "
               "'conv%' ORDER BY stanza_id")
    assert len(got) == 3
    for (sid, user, peer, mtype, transport, ip, hexbody, sess), body in \
            zip(got, bodies):
        assert user == "alice@example.com"
        assert peer == "bob@example.com"
        assert mtype == "chat"
        assert transport == "websocket"
        assert ip == "127.0.0.1"
        assert len(sess) == 16
        # byte-exact utf8mb4 round trip, emoji and CJK included
        assert bytes.fromhex(hexbody).decode("utf-8") == body

    payload = rows(app, "SELECT payload FROM audit_record WHERE "
                   "stanza_id='conv1'")[0][0]
    rec = json.loads(payload)
    assert rec["params"]["body"] == bodies[1]
    assert "<message" in rec["params"]["stanza"]
    assert rec["actor"]["client"]            # the sender's resource

    fails = dict(rows(app, "SELECT actor_user, payload FROM audit_record "
                      "WHERE event='signin' AND status='fail' AND "
                      "actor_user IN ('carol@example.com',"
                      "'dave@example.com')"))
    carol = json.loads(fails["carol@example.com"])
    dave = json.loads(fails["dave@example.com"])
    assert carol["error"]["code"] == "not-authorized"
    assert "password" in carol["error"]["description"] \
        or "credentials" in carol["error"]["description"]
    assert "group" in dave["error"]["description"]
    assert count(app, "event='signin' AND status='success' AND "
                 "actor_user='alice@example.com'") >= 1

    ends = rows(app, "SELECT payload FROM audit_record WHERE "
                "event='session_end' AND actor_user='alice@example.com'")
    assert any(json.loads(p)["params"]["reason"] == "client-closed"
               for (p,) in ends)

    assert count(app) > before
    wait_drained(app)
    out = verify(app)
    assert "OK" in out


def test_status_shows_audit_metrics(appliance):
    st = wait_drained(appliance)
    pids = set(appliance.nginx.worker_pids())
    assert {j["worker_pid"] for j in st} == pids
    for j in st:
        for key in ("journal", "last_seq", "durable_seq", "shipped_seq",
                    "backlog_records", "backlog_bytes", "lag_seconds",
                    "records_shipped", "batches_failed", "checkpoints"):
            assert key in j, (key, j)
        assert j["shipped_seq"] == j["last_seq"]
        assert j["durable_seq"] == j["last_seq"]


def test_unknown_recipient_is_recorded_and_bounced(appliance):
    ws = RawWS(appliance.nginx.http_port)
    ws.login("carol")
    ws.send("<message xmlns='jabber:client' to='nobody@example.com' "
            "id='ghost1' type='chat'><body>anyone?</body></message>")
    r = ws.expect(r"id='ghost1'")
    assert "service-unavailable" in r
    ws.close()
    wait_shipped(appliance, "stanza_id='ghost1'", 1)
