"""conclave_realtime_priority: each worker's event loop and its journal's
sync thread in SCHED_RR while the worker is not busy
(docs/operations.md "Latency on a shared machine").

What the kernel says about each thread (/proc/PID/task/TID/stat: the
policy and the real-time priority), what /metrics says, and the
demotion of a busy event loop and its return, driven by slixmpp.
"""

import os
import time

import pytest

from chathelp import slix
from appliance import env_sanitize
from nginx import assert_config

SCHED_OTHER, SCHED_RR = 0, 2
CAP_SYS_RESOURCE = 24


def has_cap(pid, bit):
    with open("/proc/%d/status" % pid) as f:
        eff = [ln.split()[1] for ln in f if ln.startswith("CapEff:")][0]
    return bool(int(eff, 16) >> bit & 1)


def rtprio_limit(pid):
    with open("/proc/%d/limits" % pid) as f:
        line = [ln for ln in f if ln.startswith("Max realtime priority")][0]
    return int(line.split()[3])


def threads(pid):
    """{tid: (name, policy, rt_priority)} of a process."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        # fields 40 and 41 of proc(5), counted from the state (field 3)
        out[int(tid)] = (name, int(fields[38]), int(fields[37]))
    return out


def policies(pid):
    """(event loop, sync thread, every other thread): (policy, prio)."""
    ts = threads(pid)
    loop = ts[pid][1:]
    sync = [t[1:] for tid, t in ts.items() if t[0] == "conclave-sync"]
    rest = {t[1:] for tid, t in ts.items()
            if tid != pid and t[0] != "conclave-sync"}
    assert len(sync) == 1, ts
    return loop, sync[0], rest


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def test_off_by_default(appliance):
    for pid in appliance.nginx.worker_pids():
        loop, sync, rest = policies(pid)
        assert loop == (SCHED_OTHER, 0)
        assert sync == (SCHED_OTHER, 0)
        assert rest == {(SCHED_OTHER, 0)}
        assert appliance.nginx.metric("conclave_worker_realtime",
                                      pid=pid) == 0


def test_event_loop_and_sync_thread_only(make_appliance):
    app = make_appliance(extra_http="conclave_realtime_priority 7;")
    pids = app.nginx.worker_pids()
    assert len(pids) == 2
    # the master raises RLIMIT_RTPRIO for workers that are not root (the
    # harness's are root: it runs as root); root without
    # CAP_SYS_RESOURCE cannot, and nginx says so
    if has_cap(app.nginx.pid, CAP_SYS_RESOURCE):
        assert rtprio_limit(app.nginx.pid) >= 7
    else:
        r = app.nginx.config_test()
        assert 'setrlimit(RLIMIT_RTPRIO, 7) failed: workers that are ' \
            'not root cannot use "conclave_realtime_priority"' in r.stderr, \
            r.stderr
    for pid in pids:
        # the sync thread gets it at the event loop's next tick
        assert wait_for(lambda: policies(pid)[1] == (SCHED_RR, 7))
        loop, sync, rest = policies(pid)
        assert loop == (SCHED_RR, 7)
        # the thread pools, the shipper, the directory threads: not
        assert rest == {(SCHED_OTHER, 0)}, threads(pid)
        assert app.nginx.metric("conclave_worker_realtime", pid=pid) == 1
        assert app.nginx.metric("conclave_worker_realtime_demotions_total",
                                pid=pid) == 0


def test_busy_event_loop_leaves_and_returns(make_appliance, pool):
    # max_busy=1%: a burst of messages is enough to cross it
    app = make_appliance(
        extra_http="conclave_realtime_priority 5 max_busy=1%;")
    a = slix(pool, app, "alice", "rt")
    pid = a.worker
    assert wait_for(lambda: policies(pid)[:2] == ((SCHED_RR, 5),
                                                 (SCHED_RR, 5)))

    # alice to herself: the whole path runs on her worker
    demoted = False
    for burst in range(40):
        for i in range(100):
            a.message(a.jid, "burst %d %d" % (burst, i))
        a.wait_message(lambda m, b=burst: m["body"] == "burst %d 99" % b,
                       10)
        if app.nginx.metric("conclave_worker_realtime_demotions_total",
                            pid=pid):
            demoted = True
            break
    assert demoted, "the event loop never crossed 1% of a CPU"

    # idle again: back to SCHED_RR, the sync thread with it
    assert wait_for(lambda: policies(pid)[:2] == ((SCHED_RR, 5),
                                                 (SCHED_RR, 5)), 15)
    assert app.nginx.metric("conclave_worker_realtime", pid=pid) == 1
    assert app.nginx.metric("conclave_worker_realtime_demotions_total",
                            pid=pid) >= 1
    # it went on delivering throughout
    a.message(a.jid, "after")
    a.wait_message(lambda m: m["body"] == "after", 10)


@pytest.mark.parametrize("value,error", [
    ("0", 'must be "off" or a priority from 1 to 99, not "0"'),
    ("100", 'must be "off" or a priority from 1 to 99, not "100"'),
    ("high", 'must be "off" or a priority from 1 to 99, not "high"'),
    ("10 max_busy=0%", 'expected "max_busy=N%" with N from 1 to 100, '
                       'not "max_busy=0%"'),
    ("10 max_busy=101%", 'not "max_busy=101%"'),
    ("10 max_busy=50", 'not "max_busy=50"'),
    ("off max_busy=50%", 'takes no "max_busy=" with "off"'),
])
def test_bad_values_are_config_errors(tmp_path, conclave_module, value,
                                      error):
    assert_config(str(tmp_path / "t"), conclave_module,
                  "conclave_realtime_priority %s;" % value, error,
                  sanitize=env_sanitize())
