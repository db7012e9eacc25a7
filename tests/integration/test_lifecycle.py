"""Worker lifecycle: reload, crash, and what sessions see.

- A reload ends the old workers' sessions with <system-shutdown/>, and the
  clients can sign in again at once.
- A worker killed outright loses its sessions; the registry forgets them
  and the users can sign in again on the replacement worker.
"""

import json
import os
import signal
import time
import urllib.request

from rawws import RawWS


def sessions(appliance):
    with urllib.request.urlopen(appliance.status_url, timeout=5) as r:
        return json.loads(r.read())["sessions"]


def test_reload_ends_sessions_with_system_shutdown(appliance):
    port = appliance.nginx.http_port
    a = RawWS(port)
    a.login("alice", resource="reload")
    b = RawWS(port)
    b.login("bob", resource="reload")

    appliance.nginx.reload()

    for ws in (a, b):
        assert ws.stream_error(timeout=10) == "system-shutdown"
        assert ws.close_code(timeout=10) == 1000
        ws.close()

    # new workers serve at once, and the registry holds no stale entries
    a = RawWS(port)
    a.login("alice", resource="reload")
    b = RawWS(port)
    b.login("bob", resource="reload")
    b.send("<message to='alice@example.com/reload' id='r1'>"
           "<body>after reload</body></message>")
    assert "<body>after reload</body>" in a.expect(r"id='r1'")
    a.close()
    b.close()


def test_killed_worker_is_forgotten(appliance):
    port = appliance.nginx.http_port
    victim = RawWS(port)
    victim.login("carol", resource="crash")
    pid = [s["worker_pid"] for s in sessions(appliance)
           if s["jid"] == "carol@example.com" and s["resource"] == "crash"][0]
    # carol has been available: she has offline storage (docs/chat.md)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and appliance.mariadb.scalar(
            "SELECT COUNT(*) FROM chat_user WHERE jid = 'carol@example.com'",
            database=appliance.mariadb.database) != "1":
        time.sleep(0.1)

    appliance.nginx.expect_alert(r"worker process %d exited on signal 9$"
                                 % pid)
    os.kill(pid, signal.SIGKILL)
    assert victim.closed_by_server(timeout=10)

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if pid not in appliance.nginx.worker_pids() and \
                len(appliance.nginx.worker_pids()) == 2:
            break
        time.sleep(0.1)

    # the replacement worker purged the dead worker's entries
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not any(s["worker_pid"] == pid for s in sessions(appliance)):
            break
        time.sleep(0.2)
    assert not any(s["worker_pid"] == pid for s in sessions(appliance))

    # a message to carol now goes to offline storage instead of to the
    # dead session, and reaches her at the next sign-in (XEP-0160)
    b = RawWS(port)
    b.login("bob", resource="crash")
    b.send("<message to='carol@example.com' type='chat' id='k1'>"
           "<body>x</body></message>")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and appliance.mariadb.scalar(
            "SELECT COUNT(*) FROM offline_message WHERE owner_jid = "
            "'carol@example.com'", database=appliance.mariadb.database) \
            != "1":
        time.sleep(0.1)
    c = RawWS(port)
    assert c.login("carol", resource="crash") == "carol@example.com/crash"
    m = c.expect(r"id='k1'")
    assert "<body>x</body>" in m and "urn:xmpp:delay" in m
    c.close()
    b.close()
    victim.close()
