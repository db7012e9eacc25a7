"""A journal that cannot be written (issue 3, "Disk"): a full journal
file system makes senders get <resource-constraint/>, a read-only one
makes sign-ins fail with <temporary-auth-failure/> (no access that cannot
be recorded), and in neither case does an unrecorded message reach
anyone.  The journal directory is a small tmpfs mounted for the test.
"""

import os
import subprocess

import pytest

from appliance import Appliance, env_sanitize
from rawws import RawWS


def mount_tmpfs(path, size, ro=False):
    os.makedirs(path, exist_ok=True)
    opts = "size=%s,mode=0700" % size + (",ro" if ro else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", path],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail("cannot mount a tmpfs for the journal (root needed): "
                    + r.stderr, pytrace=False)


def umount(path):
    subprocess.run(["umount", path], capture_output=True)


@pytest.fixture
def small_disk_app(tmp_path, conclave_module):
    made = []

    def make(size, ro=False):
        app = Appliance(str(tmp_path / ("app%d" % len(made))),
                        module_so=conclave_module, sanitize=env_sanitize())
        mount_tmpfs(app.nginx.audit_dir, size, ro)
        made.append(app)
        app.start()
        return app

    yield make
    problems = []
    for app in made:
        app.stop()
        umount(app.nginx.audit_dir)
        problems += app.check_logs()
    assert not problems, problems


def test_full_journal_refuses_messages(small_disk_app):
    app = small_disk_app("256k")
    a = RawWS(app.nginx.http_port)
    a.login("alice")
    b = RawWS(app.nginx.http_port)
    b.login("bob")

    filler = "x" * 1500
    refused = None
    accepted = []
    for i in range(2000):
        mid = "full-%d" % i
        a.send("<message xmlns='jabber:client' to='bob@example.com' "
               "id='%s' type='chat'><body>%s %s</body></message>"
               % (mid, mid, filler))
        # each message either reaches bob or bounces back to alice
        try:
            b.expect(r"<body>%s " % mid, timeout=3)
            accepted.append(mid)
            continue
        except TimeoutError:
            pass
        reply = a.expect(r"id='%s'" % mid, timeout=5)
        assert "type='error'" in reply, reply
        assert "resource-constraint" in reply, reply
        refused = mid
        break
    assert refused, "the 256k journal never filled up"
    assert accepted

    # nothing unrecorded goes out, later either
    with pytest.raises(TimeoutError):
        b.expect(r"<body>%s " % refused, timeout=2)

    # the refusal is logged as our own fault, at [error]
    log = app.nginx.error_log()
    assert "audit journal full, message refused" in log
    a.close()
    b.close()


def test_read_only_journal_refuses_sign_in(small_disk_app):
    app = small_disk_app("64k", ro=True)
    ws = RawWS(app.nginx.http_port)
    ws.open()
    r = ws.auth("alice", "alice-pw")
    assert "temporary-auth-failure" in r, r
    ws.close()
    log = app.nginx.error_log()
    assert "audit journal unavailable" in log
    assert "sign-in record not written" in log
