"""XEP-0198 stream management: acks, resumption on the same or another
worker after a connection is dropped without a stream end, what
happens to unacknowledged stanzas when nobody resumes, and bad input.

The resuming client is slixmpp with its own xep_0198 plugin; the
negative tests drive the wire with tests/lib/rawtcp.py.
"""

import re
import time

import pytest

from chathelp import worker_of
from polling import wait
from rawtcp import RawTCP
import slixpool
from smresume import connect_sm, drop, resume, track

DOMAIN = "example.com"
APPLIANCE_EXTRA_HTTP = "conclave_sm_resume_timeout 4s;"

# one SlixPool for the whole file: its clients live across tests
pool = slixpool.module_pool


def sm_client(pool, appliance, user, res):
    """slixmpp with xep_0198 (resume on), connected, SM enabled."""
    c = pool.client("%s@%s/%s" % (user, DOMAIN, res), user + "-pw",
                    appliance.nginx.xmpp_port, connect=False)
    pool.call(lambda: c.xmpp.register_plugin("xep_0198"))
    track(pool, c)
    connect_sm(c)
    return c


def bodies(c):
    out = []
    while True:
        try:
            out.append(c.xmpp.inbox.get_nowait())
        except Exception:
            return out


def test_enable_and_acks(appliance, pool):
    b = sm_client(pool, appliance, "bob", "ack")
    a = pool.client("alice@%s/ack" % DOMAIN, "alice-pw",
                    appliance.nginx.xmpp_port)

    # the server asks for acks as stanzas go out, and the client's acks
    # must match what it counted
    for i in range(12):
        a.message(b.jid, "ack %d" % i)
    for i in range(12):
        b.wait_message(lambda m, i=i: m["body"] == "ack %d" % i)

    # the client asks: the server's h is what the client sent
    pool.call(lambda: b.sm.request_ack())
    wait(lambda: b.sm.last_ack == b.sm.seq, "the server's ack")
    assert b.sm.seq >= 1
    # a client that acks before </stream> gets nothing again at its next
    # sign-in (what it had not acked would go to offline storage)
    pool.call(lambda: b.sm.send_ack())
    a.disconnect()
    b.disconnect()


def received(c, body, timeout=10):
    """Everything c got so far, in c.all (nothing is dropped, so a
    duplicate shows), until body is among it."""
    deadline = time.monotonic() + timeout
    while True:
        c.all += bodies(c)
        if body is None or any(m["body"] == body for m in c.all):
            return c.all
        if time.monotonic() > deadline:
            pytest.fail("%r not received; got %r" % (
                body, [m["body"] for m in c.all]))
        time.sleep(0.05)


def test_resume_on_another_worker_exactly_once(appliance, pool):
    """Drops bob's connection, sends to him while he is away, resumes;
    repeats until one resumption lands on the other worker.  Every
    message arrives exactly once, those sent before the drop too."""
    a = pool.client("alice@%s/rs" % DOMAIN, "alice-pw",
                    appliance.nginx.xmpp_port)
    pool.call(lambda: a.xmpp.add_event_handler("message_error",
                                               a.xmpp._message))
    b = sm_client(pool, appliance, "bob", "rs")
    b.all = []
    full = b.jid
    sent, crossed, same = [], 0, 0

    for rnd in range(16):
        before = worker_of(appliance, full)
        # one the client gets before the drop, not acked yet
        sent.append("r%d before" % rnd)
        a.message(full, sent[-1])
        received(b, sent[-1])

        drop(pool, b)
        time.sleep(0.3)          # the server notices the lost connection

        # sent while bob is away: kept for him, no error to alice
        for i in range(3):
            sent.append("r%d away %d" % (rnd, i))
            a.message(full, sent[-1])

        resume(b)
        assert b.jid == full
        received(b, sent[-1])

        after = worker_of(appliance, full)
        assert after is not None
        if after != before:
            crossed += 1
        else:
            same += 1
        if crossed >= 2 and same >= 1:
            break

    assert crossed >= 1, "no resumption landed on another worker"
    time.sleep(0.5)
    got = sorted(m["body"] for m in received(b, None))
    # nothing twice, nothing missing, no error to the sender
    assert got == sorted(sent)
    assert [m for m in bodies(a) if m["type"] == "error"] == []

    # the resumed session routes both ways
    b.message("alice@example.com", "after resume")
    a.wait_message(lambda m: m["body"] == "after resume")
    a.disconnect()
    b.disconnect()


def test_unacked_go_to_other_resource_on_timeout(appliance, pool):
    """Nobody resumes within conclave_sm_resume_timeout (4 s here): the
    unacked message goes to the account's other resource."""
    b = sm_client(pool, appliance, "carol", "phone")
    other = RawTCP(appliance.nginx.xmpps_port, tls=True)
    other.login("carol", resource="laptop")
    other.send("<presence/>")
    a = pool.client("alice@%s/to" % DOMAIN, "alice-pw",
                    appliance.nginx.xmpp_port)
    time.sleep(0.3)
    drop(pool, b)
    time.sleep(0.3)
    a.message(b.jid, "for the phone")
    # not before the timeout: the phone's session waits for its client
    with pytest.raises(Exception):
        other.expect(r"for the phone", timeout=2)
    other.expect(r"<message [^>]*from='alice@example.com/to'[^>]*>"
                 r"<body>for the phone</body>", timeout=10)
    a.disconnect()
    other.close()


def test_websocket_resume_on_another_worker_exactly_once(appliance, pool,
                                                         clients):
    """RFC 7395 + XEP-0198 with npm stanza (its own stream management):
    the WebSocket's TCP connection is cut without a WebSocket close or
    </close>, the library resumes on a new WebSocket, which nginx may
    hand to either worker; repeated until one resumption lands on the
    other worker.  Every message, sent before the drop (and maybe not
    acked) or while away, arrives exactly once."""
    a = pool.client("alice@%s/wsr" % DOMAIN, "alice-pw",
                    appliance.nginx.xmpp_port)
    pool.call(lambda: a.xmpp.add_event_handler("message_error",
                                               a.xmpp._message))
    b = clients("stanza")
    ev = b.connect(appliance.ws_url, "carol", "carol-pw", resource="wsr")
    assert ev["ev"] == "online", ev
    full = ev["jid"]
    got, sent, crossed, same = [], [], 0, 0

    def until(body):
        m = b.wait_for(lambda e: e["ev"] == "message"
                       and e.get("body") == body, 15)
        got.append(m["body"])

    for rnd in range(16):
        before = worker_of(appliance, full)
        assert before is not None
        sent.append("ws%d before" % rnd)
        a.message(full, sent[-1])
        until(sent[-1])

        # the next ones are routed while the connection is gone or
        # being resumed; none may be lost or doubled
        sent.append("ws%d away" % rnd)
        a.message(full, sent[-1])
        r = b.drop()
        assert r["resumed"] is True, r
        assert r["jid"] == full
        sent.append("ws%d after" % rnd)
        a.message(full, sent[-1])
        for body in sent[-2:]:
            until(body)

        after = worker_of(appliance, full)
        assert after is not None
        if after != before:
            crossed += 1
        else:
            same += 1
        if crossed >= 2:
            break

    assert crossed >= 1, "no resumption landed on another worker"
    time.sleep(0.5)
    got += [e["body"] for e in b.drain() if e["ev"] == "message"]
    assert sorted(got) == sorted(sent)
    assert [m for m in bodies(a) if m["type"] == "error"] == []
    b.disconnect()
    a.disconnect()


def stored(appliance, owner):
    return int(appliance.mariadb.scalar(
        "SELECT COUNT(*) FROM offline_message WHERE owner_jid = '%s'"
        % owner, appliance.mariadb.database))


def next_sign_in(pool, appliance, user, res, body, settle=1.5):
    """Signs user in again; everything it gets until body has come and
    settle seconds more (so that a duplicate would show)."""
    c = pool.client("%s@%s/%s" % (user, DOMAIN, res), user + "-pw",
                    appliance.nginx.xmpp_port)
    c.all = []
    received(c, body, timeout=15)
    time.sleep(settle)
    received(c, None)
    c.disconnect()
    return c.all


def test_unacked_go_to_offline_storage_on_timeout(appliance, pool):
    """XEP-0198 section 5 and the issue: a session that times out
    without resumption and without another resource loses nothing: its
    unacked messages are kept offline (XEP-0160) and delivered, once,
    with a <delay/>, at the next sign-in."""
    b = sm_client(pool, appliance, "erin", "gone")
    a = pool.client("alice@%s/bn" % DOMAIN, "alice-pw",
                    appliance.nginx.xmpp_port)
    pool.call(lambda: a.xmpp.add_event_handler("message_error",
                                               a.xmpp._message))
    before = stored(appliance, "erin@example.com")
    drop(pool, b)
    time.sleep(0.3)
    a.message(b.jid, "into storage", id="void1")
    # parked for conclave_sm_resume_timeout (4 s), then stored
    wait(lambda: stored(appliance, "erin@example.com") == before + 1,
         "the unacked message in offline storage", timeout=20)
    # the sender hears nothing: the message is not lost
    time.sleep(0.5)
    assert [m for m in bodies(a) if m["type"] == "error"] == []

    got = next_sign_in(pool, appliance, "erin", "back", "into storage")
    mine = [m for m in got if m["body"] == "into storage"]
    assert len(mine) == 1
    assert mine[0]["id"] == "void1"
    assert mine[0]["from"] == a.jid
    assert mine[0]["delay"] is not None
    assert stored(appliance, "erin@example.com") == 0
    a.disconnect()


def test_resume_after_the_timeout_is_refused(appliance, pool):
    """XEP-0198 section 5: a dropped session is kept for
    conclave_sm_resume_timeout (4 s here, announced as max='4' in
    test_bad_input), no longer.  slixmpp asking to resume after that
    gets <failed/> with <item-not-found/>, binds a new session, and that
    session gets what the old one had not acked from offline storage,
    once."""
    b = sm_client(pool, appliance, "frank", "late")
    failed = []
    pool.call(lambda: b.xmpp.add_event_handler(
        "sm_failed", lambda s: failed.append(s.xml)))
    a = pool.client("alice@%s/lt" % DOMAIN, "alice-pw",
                    appliance.nginx.xmpp_port)
    pool.call(lambda: a.xmpp.add_event_handler("message_error",
                                               a.xmpp._message))
    full = b.jid
    starts, resumed = len(b.starts), len(b.resumed)
    before = stored(appliance, "frank@example.com")
    drop(pool, b)
    time.sleep(0.3)
    a.message(full, "kept for the late one", id="late1")

    # the timeout: the parked session's entry leaves the registry and
    # what it had not acked goes to offline storage
    wait(lambda: worker_of(appliance, full) is None,
         "the parked session to end", timeout=20)
    wait(lambda: stored(appliance, "frank@example.com") == before + 1,
         "the unacked message in offline storage", timeout=20)

    b.connect()
    wait(lambda: len(b.starts) > starts, "a new session", timeout=20)
    assert len(b.resumed) == resumed
    assert len(failed) == 1
    cond = [c.tag for c in failed[0]]
    assert cond == ["{urn:ietf:params:xml:ns:xmpp-stanzas}item-not-found"]
    assert b.jid == full

    m = b.wait_message(lambda m: m["id"] == "late1", timeout=15)
    assert m["body"] == "kept for the late one"
    assert m["from"] == a.jid and m["delay"] is not None
    wait(lambda: stored(appliance, "frank@example.com") == before,
         "offline storage emptied", timeout=15)
    time.sleep(1.0)
    assert [m for m in bodies(b) if m["id"] == "late1"] == []
    assert [m for m in bodies(a) if m["type"] == "error"] == []
    a.disconnect()
    b.disconnect()


def test_unacked_over_the_offline_quota_go_back_to_the_sender(
        make_appliance, pool):
    """What offline storage cannot keep for a timed-out session (here
    the quota, conclave_offline_quota 1) is not dropped in silence: the
    sender gets <service-unavailable/> for it (XEP-0160 section 2), and the
    recipient gets the rest at the next sign-in."""
    app = make_appliance(workers=2, extra_http="conclave_sm_resume_timeout"
                         " 2s; conclave_offline_quota 1;")
    b = sm_client(pool, app, "erin", "q")
    a = pool.client("alice@%s/q" % DOMAIN, "alice-pw", app.nginx.xmpp_port)
    pool.call(lambda: a.xmpp.add_event_handler("message_error",
                                               a.xmpp._message))
    drop(pool, b)
    time.sleep(0.3)
    a.message(b.jid, "first of two", id="q1")
    a.message(b.jid, "second of two", id="q2")
    err = a.wait_message(lambda m: m["type"] == "error", timeout=20)
    assert err["error"] == "service-unavailable"
    assert err["text"] == "the recipient's offline storage is full"
    assert err["id"] in ("q1", "q2")
    assert stored(app, "erin@example.com") == 1

    kept = "first of two" if err["id"] == "q2" else "second of two"
    got = next_sign_in(pool, app, "erin", "back", kept)
    assert [m["body"] for m in got].count(kept) == 1
    assert len([m for m in got if m["body"] in ("first of two",
                                                "second of two")]) == 1
    a.disconnect()


def test_clean_close_keeps_what_was_not_acked(appliance, pool):
    """A stream closed with </stream:stream> is not resumable (XEP-0198
    section 5): what the client acknowledged before closing is done
    with, what it did not is handled as undeliverable, so it goes to
    offline storage and comes back at the next sign-in, once."""
    # an account has offline storage once it has been available
    f = pool.client("frank@%s/first" % DOMAIN, "frank-pw",
                    appliance.nginx.xmpp_port)
    wait(lambda: appliance.mariadb.scalar(
        "SELECT COUNT(*) FROM chat_user WHERE jid = 'frank@example.com'",
        appliance.mariadb.database) == "1", "frank known")
    f.disconnect()
    c = login_sm(appliance, "frank", "cc")
    c.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
    c.expect(r"<enabled [^>]*/>")
    # no initial presence: the messages below are all c gets, so its
    # h is exact
    a = pool.client("alice@%s/cc" % DOMAIN, "alice-pw",
                    appliance.nginx.xmpp_port)
    a.message(c.jid, "acked before the close", id="cc1")
    c.expect(r"acked before the close")
    c.send("<a xmlns='urn:xmpp:sm:3' h='1'/>")
    a.message(c.jid, "not acked at the close", id="cc2")
    c.expect(r"not acked at the close")
    before = stored(appliance, "frank@example.com")
    c.send("</stream:stream>")
    c.expect(r"</stream:stream>")
    c.close()
    wait(lambda: stored(appliance, "frank@example.com") == before + 1,
         "the unacked message in offline storage", timeout=15)

    got = next_sign_in(pool, appliance, "frank", "back",
                       "not acked at the close")
    assert [m["body"] for m in got].count("not acked at the close") == 1
    assert "acked before the close" not in [m["body"] for m in got]
    a.disconnect()


def login_sm(appliance, user, res):
    c = RawTCP(appliance.nginx.xmpps_port, tls=True)
    c.login(user, resource=res)
    return c


def test_bad_input(appliance):
    port = appliance.nginx.xmpps_port

    # <enable/> before a resource is bound
    c = RawTCP(port, tls=True)
    c.open()
    assert "<success" in c.auth("alice", "alice-pw")
    feats = c.open()
    assert "urn:xmpp:sm:3" in feats
    c.send("<enable xmlns='urn:xmpp:sm:3'/>")
    c.expect(r"<failed xmlns='urn:xmpp:sm:3'><unexpected-request")
    # an unknown token
    c.send("<resume xmlns='urn:xmpp:sm:3' previd='%s' h='0'/>"
           % ("0" * 32 + "nope"))
    c.expect(r"<failed xmlns='urn:xmpp:sm:3'><item-not-found")
    c.send("<resume xmlns='urn:xmpp:sm:3' previd='short' h='x'/>")
    c.expect(r"<failed xmlns='urn:xmpp:sm:3'><bad-request")
    c.close()

    # <r/> before <enable/>
    c = login_sm(appliance, "alice", "neg1")
    c.send("<r xmlns='urn:xmpp:sm:3'/>")
    c.expect(r"unsupported-stanza-type")
    assert c.closed_by_server()

    # an ack for more than was sent
    c = login_sm(appliance, "alice", "neg2")
    c.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
    r = c.expect(r"<enabled [^>]*/>")
    assert "resume='true'" in r and "max='4'" in r
    c.send("<r xmlns='urn:xmpp:sm:3'/>")
    c.expect(r"<a xmlns='urn:xmpp:sm:3' h='0'/>")
    c.send("<a xmlns='urn:xmpp:sm:3' h='7'/>")
    c.expect(r"undefined-condition")
    assert c.closed_by_server()

    # a token is only good for its own account
    c = login_sm(appliance, "bob", "neg3")
    c.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
    r = c.expect(r"<enabled [^>]*/>")
    token = re.search(r"id='([^']+)'", r).group(1)
    c.close()
    time.sleep(0.3)
    d = RawTCP(port, tls=True)
    d.open()
    assert "<success" in d.auth("alice", "alice-pw")
    d.open()
    d.send("<resume xmlns='urn:xmpp:sm:3' previd='%s' h='0'/>" % token)
    d.expect(r"<failed xmlns='urn:xmpp:sm:3'><item-not-found")
    # and with a wrong secret for the right account
    e = RawTCP(port, tls=True)
    e.open()
    assert "<success" in e.auth("bob", "bob-pw")
    e.open()
    e.send("<resume xmlns='urn:xmpp:sm:3' previd='%s' h='0'/>"
           % ("f" * 32 + token[32:]))
    e.expect(r"<failed xmlns='urn:xmpp:sm:3'><item-not-found")
    # the right one still works after those attempts
    e.send("<resume xmlns='urn:xmpp:sm:3' previd='%s' h='0'/>" % token)
    e.expect(r"<resumed xmlns='urn:xmpp:sm:3' previd='%s' h='0'/>"
             % re.escape(token))
    d.close()
    e.close()
