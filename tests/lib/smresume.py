"""Drop a slixmpp client's connection without a stream end and resume
its session (XEP-0198 section 5), as a phone that changes network does.

The client is a tests/lib/slixclient.py client made with connect=False
and Debian's slixmpp xep_0198 plugin registered (resumption is on by
default), with whatever other plugins the test needs:

    track(pool, c)                  # c.resumed, c.starts: the events
    connect_sm(c)                   # signed in, SM enabled, c.sm
    drop(pool, c)                   # the server parks the session
    resume(c)                       # and gives it back, same session
    resume_elsewhere(pool, app, c)  # drop and resume until the session
                                    # sits in the other nginx worker

Sessions are spread over the workers by the kernel (reuseport), so
landing on the other worker takes as many tries as it takes;
/conclave-status says where the session is (chathelp.worker_of).
"""

import time

import pytest

from chathelp import worker_of
from polling import wait


def track(pool, c):
    """c.resumed and c.starts collect slixmpp's session_resumed and
    session_start events: a resumption adds to the first, a new
    session to the second."""
    c.resumed, c.starts = [], []

    def setup():
        c.xmpp.add_event_handler("session_resumed", c.resumed.append)
        c.xmpp.add_event_handler("session_start", c.starts.append)
    pool.call(setup)


def connect_sm(c):
    """Signs c in and waits until the server has enabled stream
    management with resumption (an SM-ID to resume with)."""
    assert c.connect()
    c.sm = c.xmpp["xep_0198"]
    wait(lambda: c.sm.enabled_in and c.sm.sm_id, "SM enabled")


def drop(pool, c):
    """Cuts the TCP connection without a stream end (as a phone that
    changes network would), and waits until slixmpp has seen it."""
    c.xmpp.ended.clear()
    pool.call(lambda: c.xmpp.transport.abort())
    c.xmpp.ended.wait(10)


def resume(c):
    """Connects c again; its xep_0198 plugin asks to resume, and this
    waits until the session is resumed."""
    n = len(c.resumed)
    assert c.connect()
    wait(lambda: len(c.resumed) > n, "session_resumed")


def resume_elsewhere(pool, app, c, away=None, tries=20, settle=0.3):
    """Drops c's connection and resumes, until the session sits in the
    other worker; away() runs once, while it is parked, settle seconds
    after the drop (the server notices the lost connection).  Every
    attempt must resume (no new session)."""
    before = worker_of(app, c.jid)
    assert before is not None
    starts = len(c.starts)
    for _ in range(tries):
        drop(pool, c)
        time.sleep(settle)
        if away:
            away()
            away = None
        resume(c)
        assert len(c.starts) == starts, "a new session, not a resumed one"
        if worker_of(app, c.jid) not in (None, before):
            return
    pytest.fail("no resumption landed on the other worker")
