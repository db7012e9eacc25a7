"""XEP-0045 fan-out between workers when the inter-worker socket is full.

A room's owner sends each room message once per other worker
(NGX_XMPP_IPC_FAN, docs/routing.md).  A receiving worker's socket holds
net.unix.max_dgram_qlen datagrams (10 by default); when it is full the
sender keeps the record in its FIFO and retries, as for a 1:1 stanza,
and only a record the FIFO (16 MiB) cannot take makes the occupants it
was for unreachable.  A room flood with occupants on both workers must
fill the socket (conclave_ipc_full_total grows), reach every occupant
with every message in order, and kick nobody.

Clients: Debian's python3-slixmpp with its xep_0045 plugin.
"""

import json
import re
import threading
import time
import urllib.request
import uuid

import pytest

from mucclient import MucClient
from slixclient import SlixPool

MUC = "conference.example.com"
# the flood must not meet the room's own rate limit (XEP-0045 flood
# control is test_muc.py::test_room_flood_gets_errors_not_a_queue)
APPLIANCE_EXTRA_HTTP = "conclave_muc_rate 100000;"
PER_WORKER = 6
FLOOD = 3000


@pytest.fixture
def pool():
    with SlixPool() as p:
        yield p


def status(app):
    with urllib.request.urlopen(app.status_url, timeout=5) as r:
        return json.loads(r.read())


def worker_of(app, full_jid):
    bare, _, res = full_jid.partition("/")
    for s in status(app)["sessions"]:
        if s["jid"] == bare and s["resource"] == res:
            return s["worker_pid"]
    return None


def room_owner(app, room):
    for r in status(app).get("rooms", []):
        if r["jid"] == room:
            return r["worker_pid"]
    return None


def metric(app, name):
    with urllib.request.urlopen(app.nginx.base_url + "/metrics",
                                timeout=10) as r:
        text = r.read().decode()
    m = re.search(r"^%s (\d+)$" % name, text, re.M)
    assert m, name
    return int(m.group(1))


def occupants(app, pool, pids, n):
    """n sessions on each worker, alternating users."""
    placed = {pid: [] for pid in pids}
    users = ("bob", "carol", "erin", "frank")
    i = 0
    while any(len(v) < n for v in placed.values()):
        assert i < 40 * n, "sessions did not spread over the workers"
        uid = users[i % len(users)]
        c = MucClient(pool, "%s@example.com/f%d" % (uid, i), uid + "-pw",
                      app.nginx.xmpp_port)
        pid = worker_of(app, c.jid)
        if len(placed[pid]) < n:
            placed[pid].append(c)
        else:
            c.disconnect()
        i += 1
    return [c for v in placed.values() for c in v]


def test_flood_over_a_full_socket_reaches_everyone_in_order(appliance,
                                                            pool):
    room = "flood%s@%s" % (uuid.uuid4().hex[:8], MUC)
    pids = appliance.nginx.worker_pids()
    assert len(pids) == 2
    alice = MucClient(pool, "alice@example.com/flood", "alice-pw",
                      appliance.nginx.xmpp_port)
    alice.join(room, "alice")
    occ = occupants(appliance, pool, pids, PER_WORKER)
    for k, c in enumerate(occ):
        c.join(room, "o%d" % k)
        c.drain(c.xmpp.groupchat, settle=0)
    alice.drain(alice.xmpp.presences, settle=0.5)
    full_before = metric(appliance, "conclave_ipc_full_total")

    # as fast as slixmpp sends, one stanza per call on its loop
    done = threading.Event()

    def flood():
        for i in range(FLOOD):
            alice.say(room, "f%04d" % i)
        done.set()
    threading.Thread(target=flood, daemon=True).start()
    assert done.wait(120)

    want = ["f%04d" % i for i in range(FLOOD)]
    for c in occ + [alice]:
        got = []
        deadline = time.monotonic() + 120
        while len(got) < FLOOD and time.monotonic() < deadline:
            got += [m["body"] for m in c.drain(c.xmpp.groupchat, 0.2)
                    if m["from"].endswith("/alice")]
        assert got == want, "%s (worker %s, room's %s): %d of %d, first " \
            "wrong at %r" % (
            c.jid, worker_of(appliance, c.jid), room_owner(appliance, room),
            len(got), FLOOD,
            next((i for i, (a, b) in enumerate(zip(got, want)) if a != b),
                 None))

    # nobody left or was removed (XEP-0045 status 333 and the like)
    for c in occ + [alice]:
        gone = [p for p in c.drain(c.xmpp.presences, 0.1)
                if p["type"] == "unavailable"]
        assert gone == []
        errors = [m for m in c.drain(c.xmpp.messages, 0) if m["error"]]
        assert errors == []

    full = metric(appliance, "conclave_ipc_full_total") - full_before
    print("flood of %d to %d occupants on 2 workers: the socket was full "
          "%d times" % (FLOOD, len(occ) + 1, full))
    assert full > 0, "the flood never filled the inter-worker socket"
    assert metric(appliance, "conclave_ipc_dropped_total") == 0
