"""Process helpers for the harness.

SIGSTOP is asynchronous: kill() returns once the signal is queued, and on
a loaded machine a thread of the target may still run (and answer a
request) for a while.  freeze() returns only when every thread of the
process is in the stopped state, so a test that freezes a server and then
sends it a request knows that nobody will answer.
"""

import os
import signal
import time


def _states(pid):
    states = []
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                # the state follows the ")" that closes the command name
                states.append(f.read().rsplit(")", 1)[1].split()[0])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return states


def freeze(pid, timeout=10.0):
    """SIGSTOP pid and wait until all its threads are stopped."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = _states(pid)
        if states and all(s in ("T", "t") for s in states):
            return
        time.sleep(0.005)
    raise AssertionError("pid %d did not stop: %r" % (pid, _states(pid)))


def thaw(pid):
    os.kill(pid, signal.SIGCONT)
