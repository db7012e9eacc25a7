"""A worker killed with SIGKILL in the middle of a burst of messages
(issue 3, "Crash"): afterwards every message that any recipient
received, and every message whose sender's session survived without
getting an error, is in MariaDB exactly once, and verify passes.

Two senders, one on each worker, each write to a recipient on the other
worker; the worker of the first sender is killed mid-burst.  The master
respawns it, the new worker resumes the dead one's journal (cutting a
torn tail) and ships it.
"""

import re
import signal
import threading
import time
import os

from auditwait import wait_drained
from rawws import Closed

from test_audit import login_on, verify, rows

N = 400


class Burst(threading.Thread):
    """Sends N messages as fast as the socket takes them, noting which
    got an error back (a bounce carries the message id)."""

    def __init__(self, ws, to, tag):
        super().__init__(daemon=True)
        self.ws, self.to, self.tag = ws, to, tag
        self.sent = []
        self.dead = False

    def run(self):
        try:
            for i in range(N):
                mid = "%s-%d" % (self.tag, i)
                self.ws.send("<message xmlns='jabber:client' to='%s' "
                             "id='%s' type='chat'><body>%s</body>"
                             "</message>" % (self.to, mid, mid))
                self.sent.append(mid)
                time.sleep(0.002)
        except (OSError, Closed):
            self.dead = True


def drain_bodies(ws, seconds):
    """Every body a session receives (and error ids) until it is quiet."""
    bodies, errors = set(), set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            text = ws.recv(timeout=0.5)
        except (OSError, Closed):
            break
        except Exception:
            continue
        if text is None:
            continue
        bodies.update(re.findall(r"<body>([^<]+)</body>", text))
        for m in re.finditer(r"<message[^>]*type='error'[^>]*>", text):
            i = re.search(r"id='([^']+)'", m.group(0))
            if i:
                errors.add(i.group(1))
    return bodies, errors


def test_kill_a_worker_mid_burst(make_appliance):
    app = make_appliance()
    pids = app.nginx.worker_pids()
    assert len(pids) == 2

    s1, w1 = login_on(app, "alice", None, True)
    r1, _ = login_on(app, "bob", w1, False)          # other worker
    s2, w2 = login_on(app, "carol", w1, False)
    r2, _ = login_on(app, "erin", w1, True)          # the doomed worker
    assert w2 != w1

    b1 = Burst(s1, "bob@example.com", "k1")          # sender on w1
    b2 = Burst(s2, "erin@example.com", "k2")         # sender on w2
    got = {}

    def collect(name, ws):
        got[name] = drain_bodies(ws, 12)

    readers = [threading.Thread(target=collect, args=(n, w), daemon=True)
               for n, w in (("r1", r1), ("r2", r2), ("s1", s1),
                            ("s2", s2))]
    for t in readers:
        t.start()
    b1.start()
    b2.start()
    time.sleep(0.4)
    os.kill(w1, signal.SIGKILL)
    app.nginx.expect_alert(r"worker process %d exited on signal 9$" % w1)
    b1.join(20)
    b2.join(20)
    for t in readers:
        t.join(20)

    received = got["r1"][0] | got["r2"][0]
    errors = got["s2"][1]
    # the survivor's sender: all it sent without an error back
    accepted = {m for m in b2.sent if m not in errors}
    print("crash: s1 sent %d (dead %s), s2 sent %d, received %d, "
          "s2 errors %d" % (len(b1.sent), b1.dead, len(b2.sent),
                            len(received), len(errors)))
    assert b2.sent and not b2.dead
    assert received, "nothing was delivered before the kill"

    # the respawned worker resumes the journal; everything gets shipped
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if w1 not in app.nginx.worker_pids() and \
                len(app.nginx.worker_pids()) == 2:
            break
        time.sleep(0.1)
    wait_drained(app, 60)

    ids = rows(app, "SELECT stanza_id, COUNT(*) FROM audit_record WHERE "
               "event='message' AND (stanza_id LIKE 'k1-%' OR stanza_id "
               "LIKE 'k2-%') GROUP BY stanza_id")
    in_db = {i for i, _ in ids}
    dups = [(i, n) for i, n in ids if int(n) != 1]
    print("crash: %d message records in MariaDB" % len(in_db))
    assert not dups, dups
    assert not (received - in_db), sorted(received - in_db)[:10]
    assert not (accepted - in_db), sorted(accepted - in_db)[:10]
    # and nothing reached a recipient without being recorded
    assert received <= in_db
    verify(app)
    for s in (s1, s2, r1, r2):
        s.close()
