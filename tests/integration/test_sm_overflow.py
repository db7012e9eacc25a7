"""XEP-0198: a resumption that sends more again than the unacked limit.

What an inactive client's session held for it (XEP-0352) joins the
unacked queue when the session is parked, so a resumption can send more
again than conclave_sm_max_unacked allows: the stream then ends with
<policy-violation/> in the middle of that replay.  The end used to free
the queues the replay was still reading (a worker crash, which took
every other session of that worker with it); the worker must survive
and the client be told.  Debian's python3-slixmpp (xep_0198, xep_0352)
resumes on the other worker; the held stanzas are directed presences
from other sessions.
"""

import re
import time

from chathelp import slix, status
from polling import wait
from smresume import connect_sm, drop, track

DOMAIN = "example.com"
MAX = 10
APPLIANCE_EXTRA_HTTP = ("conclave_sm_max_unacked %d;\n"
                        "    conclave_sm_resume_timeout 30s;" % MAX)


def test_replay_past_the_unacked_limit_ends_the_stream_not_the_worker(
        appliance, pool):
    senders = [slix(pool, appliance, "alice", "o%d" % i, presence=False,
                    plugins=["xep_0199"])
               for i in range(MAX + 4)]
    for attempt in range(10):
        bob = pool.client("bob@%s/ovf%d" % (DOMAIN, attempt), "bob-pw",
                          appliance.nginx.xmpp_port, connect=False,
                          presence=False)
        bob.errors = []

        def setup():
            for p in ("xep_0198", "xep_0352", "xep_0199"):
                bob.xmpp.register_plugin(p)
            bob.xmpp.add_event_handler(
                "stream_error", lambda e: bob.errors.append(
                    e["condition"]))
        pool.call(setup)
        track(pool, bob)
        connect_sm(bob)
        bob.send(lambda x: x.send_presence())
        bob.send(lambda x: x["xep_0352"].send_inactive())
        bob.run(lambda: bob.xmpp["xep_0199"].send_ping(DOMAIN, timeout=10))
        for i, s in enumerate(senders):
            s.send(lambda x, i=i: x.send_presence(pto=bob.jid,
                                                  pstatus="held %d" % i))
        for s in senders:       # each sender's presence has gone out
            s.run(lambda s=s: s.xmpp["xep_0199"].send_ping(DOMAIN,
                                                           timeout=10))
        time.sleep(0.5)         # and reached bob's session
        drop(pool, bob)
        time.sleep(0.3)         # the server parks it
        n = len(bob.resumed)
        assert bob.connect()
        wait(lambda: len(bob.resumed) > n, "session_resumed")
        wait(lambda: "policy-violation" in bob.errors,
             "<policy-violation/> after the replay")
        log = appliance.nginx.error_log()
        crossed = 'session of "%s" handed to worker' % bob.jid in log
        # the worker that sent again survived, and its other sessions
        assert not re.search(r"worker process \d+ exited", log), log[-3000:]
        assert "too many unacknowledged stanzas" in log
        listed = {s["resource"] for s in status(appliance)["sessions"]
                  if s["jid"] == "alice@" + DOMAIN}
        assert listed >= {"o%d" % i for i in range(MAX + 4)}, listed
        if crossed:
            return
    raise AssertionError("no resumption crossed workers in 10 tries")
