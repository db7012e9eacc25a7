"""A slow or dead directory must not stall anyone else.

While slapd is stopped with SIGSTOP (TCP still accepts, nothing answers),
a pair of signed-in users keeps chatting, and a new sign-in gets
<temporary-auth-failure/> once conclave_ldap_timeout has passed; over
ldaps:// with no pooled connections the new sign-ins wait in their TLS
handshakes, which are off the event loop as well.
"""

import base64
import os
import socket
import time

import pytest

from rawws import RawWS

APPLIANCE_EXTRA_HTTP = """
    conclave_ldap_timeout 2s;
"""


def start_auth(port, user):
    ws = RawWS(port)
    ws.open()
    ws.send_auth(base64.b64encode(("\0%s\0%s-pw" % (user, user))
                                  .encode()).decode())
    return ws


def test_chat_continues_while_ldap_is_stalled(appliance, clients):
    stall_and_chat(appliance, clients)


def test_chat_continues_while_ldaps_handshakes_stall(make_appliance,
                                                     clients):
    """Issue 6.1: the TLS handshake to the directory is off the event
    loop too.  With no idle connections kept (pool size 0) every
    sign-in opens a new ldaps:// connection; while slapd is stopped the
    kernel still completes TCP, so each one waits in its TLS handshake,
    in the thread pool, and the pair keeps chatting."""
    app = make_appliance(ldap_tls=True, extra_http="""
        conclave_ldap_uri @LDAPS_URI@;
        conclave_ldap_ca_file @LDAP_CA_FILE@;
        conclave_ldap_pool_size 0;
        conclave_ldap_timeout 2s;
    """)
    stall_and_chat(app, clients)
    log = open(os.path.join(app.nginx.workdir, "logs", "error.log")).read()
    assert "carol-pw" not in log


def stall_and_chat(appliance, clients):
    port = appliance.nginx.http_port
    a = clients("xmpp")
    assert a.connect(appliance.ws_url, "alice", "alice-pw")["ev"] == "online"
    b = clients("stanza")
    ev = b.connect(appliance.ws_url, "bob", "bob-pw")
    assert ev["ev"] == "online"
    a.presence()
    b.available()

    appliance.ldap.pause()
    try:
        # several sign-ins now hang in the directory, one per worker or more
        pending = [start_auth(port, "carol") for _ in range(4)]

        # meanwhile the signed-in pair keeps chatting, both ways
        for i in range(10):
            a.message(ev["jid"], "during outage %d" % i)
            b.wait_for(lambda e: e["ev"] == "message"
                       and e.get("body") == "during outage %d" % i, 5)
            b.message("alice@example.com", "reply %d" % i)
            a.wait_for(lambda e: e["ev"] == "message"
                       and e.get("body") == "reply %d" % i, 5)

        # the chat finished before any pending sign-in was answered
        # (nothing readable: neither an answer nor a closed connection)
        for ws in pending:
            ws.sock.setblocking(False)
            try:
                early = ws.sock.recv(1, socket.MSG_PEEK)
                pytest.fail("sign-in answered or closed too early: %r"
                            % early)
            except BlockingIOError:
                pass
            ws.sock.setblocking(True)

        t0 = time.monotonic()
        for ws in pending:
            reply = ws.expect(r"<failure|<success", timeout=10)
            assert "<temporary-auth-failure/>" in reply, reply
        assert time.monotonic() - t0 < 8, "not within the LDAP timeout"
        for ws in pending:
            ws.close()
    finally:
        appliance.ldap.resume()

    # the directory is back: sign-in works again
    ws = RawWS(port)
    ws.open()
    assert "<success" in ws.auth("carol", "carol-pw", )
    ws.close()


def test_dead_ldap_gives_temporary_failure(appliance, clients):
    # come back on the same port: nginx's configuration names it
    appliance.ldap.fixed_port = appliance.ldap.port
    appliance.ldap.stop()
    try:
        c = clients("stanza")
        ev = c.connect(appliance.ws_url, "erin", "erin-pw")
        assert ev["ev"] == "error", ev
        assert ev.get("condition") == "temporary-auth-failure", ev
    finally:
        appliance.ldap.start()
    c2 = clients("xmpp")
    assert c2.connect(appliance.ws_url, "erin", "erin-pw")["ev"] == "online"
