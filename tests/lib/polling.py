"""wait(): poll a condition until it holds or a timeout passes.

The tests watch servers and clients that answer in their own time, so
they poll instead of sleeping a fixed while: wait() returns the first
true value cond() gives and fails the test, naming what it waited for,
when timeout seconds pass without one.  The timeout is how long a
correct server may take on a loaded machine, not a performance bound
(tests never assert timing).

    from polling import wait
    wait(lambda: c.sm.enabled_in and c.sm.sm_id, "SM enabled")
"""

import time

import pytest


def wait(cond, what, timeout=15, interval=0.05):
    """cond()'s first true value within timeout seconds, polled every
    interval seconds; pytest.fail("timed out waiting for " + what)
    if none comes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(interval)
    pytest.fail("timed out waiting for " + what)
