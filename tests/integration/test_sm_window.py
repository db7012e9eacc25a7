"""XEP-0198 resumption on another worker, with traffic in the window.

Between the new worker's SM_TAKE and the old worker's SM_TAKEN (one
inter-worker round trip, docs/routing.md "Resuming on another worker")
whatever is addressed to the session is held and delivered after the
stanzas the old worker hands over, in order: messages, PEP
notifications (XEP-0163), room messages (XEP-0045).  The window is
made likely, not forced: senders run continuously while the client
drops its TCP connection without a stream end and resumes, round after
round, until several resumptions crossed workers (and the server's log
shows that something arrived inside a window, or enough rounds went
by: the figures are printed).  Every sequence must then be complete,
in order and without duplicates.

Clients: Debian's python3-slixmpp with its xep_0198, xep_0060/0163/0115
and xep_0045 plugins.
"""

import asyncio
import re
import time
import xml.etree.ElementTree as ET

import pytest

from chathelp import slix, worker_of
from mariadb import table_lock
from mucclient import MucClient
from slixclient import SlixPool

DOMAIN = "example.com"
MUC = "conference.example.com"
NODE = "urn:xmpp:conclave:sm-window:0"
NODE2 = "urn:xmpp:conclave:sm-window:1"
# The senders run without pause while the client resumes; on a loaded
# machine with the ASan build a resumption can take over a second, and
# 5,000 stanzas for the parked session overflowed its queue (the rest
# goes to offline storage, docs/routing.md): the limit here is the
# window's, not what this file tests (tests/integration/test_sm_overflow.py).
APPLIANCE_EXTRA_HTTP = ("conclave_sm_resume_timeout 60s;\n"
                        "conclave_sm_max_unacked 20000;")
HELD = re.compile(r'resumed "([^"]+)", \d+ stanzas sent again, '
                  r'(\d+) held while the state came, (\d+) had waited')


@pytest.fixture
def pool():
    with SlixPool() as p:
        yield p


def wait(cond, what, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    pytest.fail("timed out waiting for " + what)


def held(app, jid):
    """How many stanzas each resumption of jid held in its window."""
    return [int(n) for j, n, _ in HELD.findall(app.nginx.error_log())
            if j == jid]


def waited(app, jid):
    """How many stanzas each resumption of jid got that had waited for
    the old session's blocklist (read again at every resumption)."""
    return [int(n) for j, _, n in HELD.findall(app.nginx.error_log())
            if j == jid]


def sm_setup(pool, c, plugins=()):
    """Registers xep_0198 (and plugins) on a slixmpp client before it
    connects; resumptions land in c.resumed, new sessions in c.starts."""
    c.resumed, c.starts = [], []

    def go():
        for p in plugins + ("xep_0198",):
            c.xmpp.register_plugin(p)
        c.xmpp.add_event_handler("session_resumed", c.resumed.append)
        c.xmpp.add_event_handler("session_start", c.starts.append)
    pool.call(go)


def resume_rounds(pool, app, c, pumps, crossed_min=4, crossed_max=12,
                  rounds=40):
    """Drops c's connection and resumes, again and again; the pumps
    send without pause while the client resumes (between its new
    connection and <resumed/>, where the window is) and slowly else.
    Stops after crossed_min resumptions crossed workers once a window
    held something, else after crossed_max: the window is one round
    trip between the workers, made likely by the traffic, not forced,
    so how many windows held stanzas is printed, not asserted."""
    crossed = 0
    starts = len(c.starts)
    for r in range(rounds):
        before = worker_of(app, c.jid)
        c.xmpp.ended.clear()
        pool.call(lambda: c.xmpp.transport.abort())
        c.xmpp.ended.wait(10)
        time.sleep(0.2)          # the server notices the lost connection
        n = len(c.resumed)
        for p in pumps:
            p.fast = True
        try:
            c.connect()
            wait(lambda: len(c.resumed) > n, "session_resumed")
        finally:
            for p in pumps:
                p.fast = False
        assert len(c.starts) == starts, "a new session, not a resumed one"
        after = wait(lambda: worker_of(app, c.jid), "the session's worker")
        if after != before:
            crossed += 1
        if crossed >= crossed_max or (crossed >= crossed_min
                                      and any(held(app, c.jid))):
            break
        time.sleep(0.1)
    h = held(app, c.jid)
    w = waited(app, c.jid)
    print("%s: %d rounds, %d crossed workers, %d windows held stanzas "
          "(%d in all), %d resumptions took stanzas that waited for the "
          "blocklist (%d in all)"
          % (c.jid, r + 1, crossed, len([x for x in h if x]), sum(h),
             len([x for x in w if x]), sum(w)))
    assert crossed >= crossed_min, "too few resumptions crossed workers"
    return crossed


def check_sequence(app, jid, tag, got, n):
    """got holds tag0 .. tag<n-1> once each, in order; else the failure
    names what is missing, doubled or out of order, and the server's
    resumptions of jid (worker, what each sent again and held)."""
    seq = [int(x[1:]) for x in got if x[0] == tag]
    if seq == list(range(n)):
        return
    seen = set(seq)
    missing = [i for i in range(n) if i not in seen]
    doubled = sorted(i for i in seen if seq.count(i) > 1)
    back = [(a, b) for a, b in zip(seq, seq[1:]) if b <= a]
    log = [line for line in app.nginx.error_log().splitlines()
           if "resumed \"%s\"" % jid in line
           or "handed to worker" in line or "did not hand" in line]
    pytest.fail("sender %s: %d sent, %d got; missing %r, doubled %r, "
                "out of order after %r\nresumptions:\n%s"
                % (tag, n, len(seq), missing[:50], doubled[:50], back[:20],
                   "\n".join(log[-60:])))


class Pump:
    """A coroutine on the pool's loop that sends until stopped; count
    tells how many it sent."""

    def __init__(self, pool, step, pause=0.01):
        self.stop = False
        self.fast = False
        self.count = 0
        self.step = step

        async def run():
            while not self.stop:
                await self.step(self)
                # fast: only let the loop's other work run in between
                await asyncio.sleep(0 if self.fast else pause)
        self.fut = asyncio.run_coroutine_threadsafe(run(), pool.loop)

    def finish(self):
        self.stop = True
        self.fut.result(30)
        return self.count


def test_messages_and_pep_in_the_window_arrive_in_order(appliance, pool):
    """alice/a and alice/b (one on each worker) send bob/keep chat
    messages, bob/p1 and bob/p2 (one on each worker) publish to a node
    bob/keep's caps ask for (+notify), all without pause while bob/keep
    resumes on the other worker again and again: every message and
    every notification arrives once, in the order its sender sent it."""
    keep = pool.client("bob@%s/keep" % DOMAIN, "bob-pw",
                       appliance.nginx.xmpp_port, connect=False)
    sm_setup(pool, keep, ("xep_0030", "xep_0004", "xep_0060", "xep_0163",
                          "xep_0115"))
    notes = []
    pool.call(lambda: keep.xmpp.add_event_handler(
        "pubsub_publish",
        lambda m: notes.append(
            m["pubsub_event"]["items"]["item"]["payload"].text)))
    assert keep.connect()
    wait(lambda: keep.xmpp["xep_0198"].sm_id, "SM enabled")

    async def caps():
        keep.xmpp["xep_0030"].add_feature(NODE + "+notify")
        await keep.xmpp["xep_0115"].update_caps(broadcast=False)
    keep.run(caps)
    keep.send(lambda x: x.send_presence())
    full = keep.jid

    pep = ("xep_0030", "xep_0004", "xep_0060", "xep_0163")
    p1 = slix(pool, appliance, "bob", "p1", presence=False, plugins=pep)
    p2 = slix(pool, appliance, "bob", "p2", presence=False, plugins=pep,
              not_pid=p1.worker)
    wa = slix(pool, appliance, "alice", "wa", presence=False)
    wb = slix(pool, appliance, "alice", "wb", presence=False,
              not_pid=wa.worker)

    def chat(c, tag):
        async def step(p):
            c.xmpp.make_message(mto=full, mbody="%s%d" % (tag, p.count),
                                mtype="chat").send()
            p.count += 1
        return step

    def publish(c, tag):
        async def step(p):
            e = ET.Element("{%s}entry" % NODE)
            e.text = "%s%d" % (tag, p.count)
            await c.xmpp["xep_0060"].publish(None, NODE, payload=e,
                                             timeout=20)
            p.count += 1
        return step

    pumps = {"a": Pump(pool, chat(wa, "a"), 0.002),
             "b": Pump(pool, chat(wb, "b"), 0.002),
             "x": Pump(pool, publish(p1, "x")),
             "y": Pump(pool, publish(p2, "y"))}
    time.sleep(0.5)
    try:
        resume_rounds(pool, appliance, keep, list(pumps.values()))
    finally:
        sent = {t: p.finish() for t, p in pumps.items()}

    keep.all = []

    def lasts():
        keep.all += keep.drain(settle=0.1)
        bodies = [m["body"] for m in keep.all]
        return "a%d" % (sent["a"] - 1) in bodies and \
            "b%d" % (sent["b"] - 1) in bodies and \
            "x%d" % (sent["x"] - 1) in notes and \
            "y%d" % (sent["y"] - 1) in notes
    wait(lasts, "the last messages and notifications", 30)
    keep.all += keep.drain(settle=1.0)

    bodies = [m["body"] for m in keep.all if m["body"]]
    for t in "ab":
        check_sequence(appliance, keep.jid, t, bodies, sent[t])
    for t in "xy":
        check_sequence(appliance, keep.jid, t, notes, sent[t])
    assert [m for m in keep.all if m["type"] == "error"] == []
    print("sent %r" % sent)


def room_pair(pool, app, room, resource):
    """alice/r and bob/<resource> in room; bob has XEP-0198 enabled
    (so that he can resume) and has read the join's history."""
    alice = MucClient(pool, "alice@%s/r" % DOMAIN, "alice-pw",
                      app.nginx.xmpp_port)
    alice.join(room, "alice")
    bob = MucClient(pool, "bob@%s/%s" % (DOMAIN, resource), "bob-pw",
                    app.nginx.xmpp_port, connect=False)
    sm_setup(pool, bob)
    bob.connect()
    wait(lambda: bob.xmpp["xep_0198"].sm_id, "SM enabled")
    bob.join(room, "bob")
    bob.drain(bob.xmpp.groupchat, settle=0.5)
    return alice, bob


def test_room_messages_in_the_window_arrive_in_order(appliance, pool):
    """bob/m sits in a room with alice, who talks without pause while
    bob/m resumes on the other worker again and again: bob gets every
    room message once, in order, and stays in the room."""
    room = "window@" + MUC
    alice, bob = room_pair(pool, appliance, room, "m")

    async def say(p):
        alice.xmpp.make_message(mto=room, mbody="g%d" % p.count,
                                mtype="groupchat").send()
        p.count += 1
        if p.fast:
            # conclave_muc_rate (200/s): a burst, within the bucket
            await asyncio.sleep(0.003)

    talk = Pump(pool, say, 0.01)
    time.sleep(0.3)
    try:
        resume_rounds(pool, appliance, bob, [talk], crossed_min=2,
                      crossed_max=6)
    finally:
        n = talk.finish()

    got = []

    def last():
        got.extend(bob.drain(bob.xmpp.groupchat, settle=0.1))
        return any(m["body"] == "g%d" % (n - 1) for m in got)
    wait(last, "the last room message", 30)
    got.extend(bob.drain(bob.xmpp.groupchat, settle=1.0))
    assert [m["body"] for m in got if m["from"].endswith("/alice")] == \
        ["g%d" % i for i in range(n)]
    # nobody left the room meanwhile
    assert [p for p in bob.drain(bob.xmpp.presences, 0.1)
            if p["type"] == "unavailable"] == []


def test_what_waited_for_the_blocklist_follows_the_session(appliance,
                                                           pool):
    """A resumed session reads its blocklist again (XEP-0191 3.5), and
    what is routed to it meanwhile waits for the list.  With the list's
    table locked (MariaDB slow to answer), bob/w resumes, alice sends,
    bob/w drops and resumes again (in the same or the other worker)
    while those messages still wait, three times: once the lock goes,
    bob/w gets every message once, in the order alice sent them; what
    waited went with the session instead of staying with the old one
    and coming after later messages."""
    bob = pool.client("bob@%s/w" % DOMAIN, "bob-pw",
                      appliance.nginx.xmpp_port, connect=False)
    sm_setup(pool, bob)
    assert bob.connect()
    wait(lambda: bob.xmpp["xep_0198"].sm_id, "SM enabled")
    alice = slix(pool, appliance, "alice", "wl", presence=False)
    starts = len(bob.starts)
    full = bob.jid
    sent = 0
    workers = [worker_of(appliance, full)]

    lock = table_lock(appliance.mariadb, "blocklist")
    try:
        for r in range(3):
            bob.xmpp.ended.clear()
            pool.call(lambda: bob.xmpp.transport.abort())
            bob.xmpp.ended.wait(10)
            n = len(bob.resumed)
            bob.connect()
            wait(lambda: len(bob.resumed) > n, "session_resumed")
            assert len(bob.starts) == starts, "a new session"
            workers.append(wait(lambda: worker_of(appliance, full),
                                "the session's worker"))
            for i in range(5):
                alice.send(lambda x: x.make_message(
                    mto=full, mbody="w%d" % sent, mtype="chat").send())
                sent += 1
            time.sleep(0.5)     # they reach bob's session, and wait
    finally:
        lock.release()

    got = []

    def last():
        got.extend(m["body"] for m in bob.drain(settle=0.1) if m["body"])
        return "w%d" % (sent - 1) in got
    wait(last, "the last message", 30)
    got.extend(m["body"] for m in bob.drain(settle=1.0) if m["body"])
    w = waited(appliance, full)
    print("workers %r; stanzas that waited for the blocklist, per "
          "resumption: %r" % (workers, w))
    check_sequence(appliance, full, "w", got, sent)
    # the server says what it carried over
    assert sum(w) > 0


def test_notifications_wait_for_the_blocklist_with_the_messages(appliance,
                                                                pool):
    """A resumed session reads its blocklist again (XEP-0191 3.5) and
    what reaches it meanwhile waits for the list, PEP notifications
    (XEP-0163) included: a notification that an old session forwarded
    is a plain delivery and waits there, so one routed to the new
    session directly must wait behind it, not overtake it (RFC 6120
    10.1).  With the list's table locked, erin/n resumes; erin/np
    publishes and frank sends: nothing reaches erin/n while the lock
    holds; once it goes, both arrive once (users and node of their own:
    no offline message or last item of another test comes)."""
    keep = pool.client("erin@%s/n" % DOMAIN, "erin-pw",
                       appliance.nginx.xmpp_port, connect=False)
    sm_setup(pool, keep, ("xep_0030", "xep_0004", "xep_0060", "xep_0163",
                          "xep_0115"))
    notes = []
    pool.call(lambda: keep.xmpp.add_event_handler(
        "pubsub_publish",
        lambda m: notes.append(
            m["pubsub_event"]["items"]["item"]["payload"].text)))
    assert keep.connect()
    wait(lambda: keep.xmpp["xep_0198"].sm_id, "SM enabled")

    async def caps():
        keep.xmpp["xep_0030"].add_feature(NODE2 + "+notify")
        await keep.xmpp["xep_0115"].update_caps(broadcast=False)
    keep.run(caps)
    keep.send(lambda x: x.send_presence())
    full = keep.jid
    pub = slix(pool, appliance, "erin", "np", presence=False,
               plugins=("xep_0030", "xep_0004", "xep_0060", "xep_0163"))
    frank = slix(pool, appliance, "frank", "nm", presence=False)

    def publish(text):
        e = ET.Element("{%s}entry" % NODE2)
        e.text = text
        return pub.run(lambda: pub.xmpp["xep_0060"].publish(
            None, NODE2, payload=e, timeout=20))

    publish("before")
    wait(lambda: "before" in notes, "the notification before the lock")

    lock = table_lock(appliance.mariadb, "blocklist")
    try:
        keep.xmpp.ended.clear()
        pool.call(lambda: keep.xmpp.transport.abort())
        keep.xmpp.ended.wait(10)
        n = len(keep.resumed)
        keep.connect()
        wait(lambda: len(keep.resumed) > n, "session_resumed")
        publish("during")
        frank.send(lambda x: x.make_message(
            mto=full, mbody="during", mtype="chat").send())
        time.sleep(1.0)     # both reach erin/n's session, and wait
        early = list(notes), [m["body"] for m in keep.drain(settle=0.1)]
    finally:
        lock.release()
    assert early == (["before"], []), \
        "delivered while the blocklist was read: %r" % (early,)

    wait(lambda: "during" in notes, "the notification after the lock")
    bodies = [m["body"] for m in keep.drain(settle=1.0)]
    assert notes == ["before", "during"]
    assert bodies.count("during") == 1


FORWARD_S = 2


def test_rooms_follow_a_chain_of_resumptions(make_appliance, pool):
    """bob/c sits in a room with alice and resumes again and again,
    quickly, on whichever worker the kernel gives it (cross-worker
    hand-overs and takeovers in the same worker, A->B->A->B...), with
    alice talking in between.  Once the last old session's forwarding
    is over (conclave_sm_forward_timeout, shortened here), the room
    must name the newest session: alice's later messages arrive, and
    bob never left the room."""
    app = make_appliance(extra_http=(
        "conclave_sm_resume_timeout 60s;\n"
        "conclave_sm_forward_timeout %ds;" % FORWARD_S))
    room = "chain@" + MUC
    alice, bob = room_pair(pool, app, room, "c")

    said = 0
    crossed = same = 0
    starts = len(bob.starts)
    workers = [worker_of(app, bob.jid)]
    for r in range(40):
        bob.xmpp.ended.clear()
        pool.call(lambda: bob.xmpp.transport.abort())
        bob.xmpp.ended.wait(10)
        n = len(bob.resumed)
        bob.connect()
        wait(lambda: len(bob.resumed) > n, "session_resumed")
        assert len(bob.starts) == starts, "a new session, not a resumed one"
        w = wait(lambda: worker_of(app, bob.jid), "the session's worker")
        crossed += w != workers[-1]
        same += w == workers[-1]
        workers.append(w)
        alice.say(room, "c%d" % said)
        said += 1
        if r >= 15 and crossed >= 6 and same >= 2:
            break
    print("%d resumptions: %d crossed workers, %d in the same worker"
          % (r + 1, crossed, same))
    assert crossed >= 6, "too few resumptions crossed workers"

    # every old session of the chain has stopped forwarding by now
    time.sleep(FORWARD_S + 1.5)
    for i in range(5):
        alice.say(room, "late%d" % i)

    got = []

    def last():
        got.extend(bob.drain(bob.xmpp.groupchat, settle=0.1))
        return any(m["body"] == "late4" for m in got)
    wait(last, "the room messages sent after the forwarding ended", 20)
    got.extend(bob.drain(bob.xmpp.groupchat, settle=0.5))
    assert [m["body"] for m in got if m["from"].endswith("/alice")] == \
        ["c%d" % i for i in range(said)] + ["late%d" % i for i in range(5)]
    assert [p for p in bob.drain(bob.xmpp.presences, 0.1)
            if p["type"] == "unavailable"] == []
