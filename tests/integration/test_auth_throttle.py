"""XMPP sign-ins per client address (README "Sign-in lockout per
address"): after conclave_max_address_failures refusals within
conclave_address_lockout, sign-ins from that address are refused for
conclave_address_lockout without asking the directory, on every
transport and worker; an IPv6 address counts by its /64.

The addresses come through nginx's realip modules (a PROXY-protocol
listener, X-Forwarded-For from the trusted 127.0.0.1), so one test
module can play many clients; the last test locks 127.0.0.1 itself and
signs in with real clients.
"""

import base64
import json
import re
import time

import pytest

from appliance import env_sanitize
from nginx import assert_config
from rawbosh import NS, from_ip
from rawtcp import RawTCP
from rawws import RawWS

LOCKOUT = 6

APPLIANCE_EXTRA_HTTP = ("conclave_max_address_failures 3;\n"
                        "    conclave_address_lockout %ds;" % LOCKOUT)

APPLIANCE_EXTRA_SERVER = """
        set_real_ip_from 127.0.0.1;
        real_ip_header X-Forwarded-For;
"""

APPLIANCE_EXTRA_STREAM = """
    server {
        listen 127.0.0.1:@EXTRA_PORT@ proxy_protocol;
        set_real_ip_from 127.0.0.1;
        conclave_xmpp;
    }
"""

THROTTLED = (r"<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
             r"<temporary-auth-failure/><text xml:lang='en'>too many failed "
             r"sign-ins from this address; try again in (\d+) s</text>"
             r"</failure>")


def tcp(app, addr):
    """A stream over the PROXY listener, from addr."""
    c = RawTCP(app.nginx.extra_port)
    if ":" in addr:
        c.send("PROXY TCP6 %s ::1 40000 5222\r\n" % addr)
    else:
        c.send("PROXY TCP4 %s 127.0.0.1 40000 5222\r\n" % addr)
    c.open()
    return c


def tcp_auth(app, addr, user, password):
    c = tcp(app, addr)
    r = c.auth(user, password)
    return c, r


def refuse(app, addr, n, user="alice"):
    for i in range(n):
        c, r = tcp_auth(app, addr, user, "wrong-%d" % i)
        assert "<not-authorized/>" in r, (addr, i, r)
        c.close()


def locked_out(c, r, closed=False):
    """r is the answer to <auth/>: the throttle's, then the stream
    ends with <policy-violation/> (and the connection within
    conclave_close_timeout, 5 s, checked where closed)."""
    m = re.search(THROTTLED, r)
    assert m, r
    assert 1 <= int(m.group(1)) <= LOCKOUT, r
    c.expect(r"<policy-violation xmlns='urn:ietf:params:xml:ns:"
             r"xmpp-streams'/>.*</stream:stream>")
    if closed:
        assert c.closed_by_server(10)
    c.close()


def signin_fails(app, user, ip):
    return app.mariadb.query(
        "SELECT payload FROM audit_record WHERE event='signin' AND "
        "status='fail' AND actor_user='%s@example.com' AND actor_ip='%s'"
        % (user, ip), database="conclave")


def test_refusals_from_one_address_lock_it_out(appliance):
    ip = "198.51.100.1"
    before = appliance.nginx.metric("conclave_signins_total",
                                    result="throttled")
    refuse(appliance, ip, 3)

    # the right password, from the same address: not asked
    c, r = tcp_auth(appliance, ip, "alice", "alice-pw")
    locked_out(c, r, closed=True)
    # nor for another account
    c, r = tcp_auth(appliance, ip, "bob", "bob-pw")
    locked_out(c, r)

    # another address is not concerned
    c, r = tcp_auth(appliance, "198.51.100.2", "alice", "alice-pw")
    assert "<success" in r, r
    c.close()

    assert appliance.nginx.metric("conclave_signins_total",
                                  result="throttled") == before + 2
    assert "sign-ins from %s refused for %d s: 3 refused within %d s" \
        % (ip, LOCKOUT, LOCKOUT) in appliance.nginx.error_log()

    # every attempt is in the audit trail, the refused ones with why
    deadline = time.monotonic() + 20
    while len(signin_fails(appliance, "alice", ip)) < 4:
        assert time.monotonic() < deadline, signin_fails(appliance, "alice",
                                                         ip)
        time.sleep(0.2)
    codes = sorted((p["error"]["code"], p["error"]["description"])
                   for p in map(lambda row: json.loads(row[0]),
                                signin_fails(appliance, "alice", ip)))
    assert codes[-1] == ("temporary-auth-failure",
                         "too many failed sign-ins from this address")
    assert [c for c, _ in codes[:3]] == ["not-authorized"] * 3


def test_the_lockout_ends(appliance):
    ip = "198.51.100.3"
    refuse(appliance, ip, 3)
    c, r = tcp_auth(appliance, ip, "alice", "alice-pw")
    locked_out(c, r)
    time.sleep(LOCKOUT + 1)
    c, r = tcp_auth(appliance, ip, "alice", "alice-pw")
    assert "<success" in r, r
    c.close()
    # counting starts again: two refusals do not lock it
    refuse(appliance, ip, 2)
    c, r = tcp_auth(appliance, ip, "alice", "alice-pw")
    assert "<success" in r, r
    c.close()


def test_a_success_does_not_clear_the_count(appliance):
    """An attacker who knows one password cannot reset the count
    between guesses."""
    ip = "198.51.100.4"
    refuse(appliance, ip, 2)
    c, r = tcp_auth(appliance, ip, "bob", "bob-pw")
    assert "<success" in r, r
    c.close()
    refuse(appliance, ip, 1)
    c, r = tcp_auth(appliance, ip, "bob", "bob-pw")
    locked_out(c, r)


def test_one_count_for_every_transport(appliance):
    """Refusals over TCP lock the address out of WebSocket too (and the
    two may be served by different workers)."""
    ip = "198.51.100.5"
    refuse(appliance, ip, 3)
    ws = RawWS(appliance.nginx.http_port, connect=False)
    ws.upgrade(extra="X-Forwarded-For: %s" % ip)
    ws.open()
    # over WebSocket each element is one message
    r = ws.auth("alice", "alice-pw")
    assert re.search(THROTTLED, r), r
    assert "policy-violation" in ws.stream_error()

    # and the other way round
    ip = "198.51.100.6"
    for i in range(3):
        ws = RawWS(appliance.nginx.http_port, connect=False)
        ws.upgrade(extra="X-Forwarded-For: %s" % ip)
        ws.open()
        assert "<not-authorized/>" in ws.auth("alice", "wrong")
        ws.close()
    c, r = tcp_auth(appliance, ip, "alice", "alice-pw")
    locked_out(c, r)


def test_bosh_too(appliance):
    """BOSH counts the address of the request that created the session
    (XEP-0206 over one HTTP request after another)."""
    ip = "198.51.100.7"
    refuse(appliance, ip, 3)
    first = from_ip(appliance, "<body rid='500' wait='5' hold='1' "
                    "to='example.com' ver='1.11' xmpp:version='1.0' "
                    "xmlns='%s' xmlns:xmpp='urn:xmpp:xbosh'/>" % NS, ip)
    sid = first.split("sid='", 1)[1].split("'", 1)[0]
    auth = base64.b64encode(b"\0alice\0alice-pw").decode()
    r = from_ip(appliance, "<body rid='501' sid='%s' xmlns='%s'><auth "
                "xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                "%s</auth></body>" % (sid, NS, auth), ip)
    assert re.search(THROTTLED, r), r
    # in the same answer the stream error ends the BOSH session
    assert "type='terminate' condition='remote-stream-error'" in r, r
    assert "<policy-violation xmlns='urn:ietf:params:xml:ns:" \
        "xmpp-streams'/>" in r, r


def test_ipv6_counts_by_its_64(appliance):
    refuse(appliance, "2001:db8:1:2::5", 2)
    refuse(appliance, "2001:db8:1:2:ffff::7", 1)
    # the same /64: locked
    c, r = tcp_auth(appliance, "2001:db8:1:2::99", "alice", "alice-pw")
    locked_out(c, r)
    # the next /64: not
    c, r = tcp_auth(appliance, "2001:db8:1:3::5", "alice", "alice-pw")
    assert "<success" in r, r
    c.close()


def test_real_clients_from_a_locked_address(appliance, clients):
    """Last: locks 127.0.0.1 itself (the address every client here
    connects from); real clients over WebSocket are then refused, and
    say why."""
    for i in range(3):
        c = RawTCP(appliance.nginx.xmpp_port)
        c.open()
        c.starttls()
        c.open()
        assert "<not-authorized/>" in c.auth("carol", "wrong-%d" % i)
        c.close()
    for lib in ("xmpp", "stanza"):
        ev = clients(lib).connect(appliance.ws_url, "alice", "alice-pw")
        # xmpp.js reports the stream error, stanza the SASL failure
        assert ev["ev"] == "error", (lib, ev)
        assert ev["condition"] in ("policy-violation",
                                   "temporary-auth-failure"), (lib, ev)
        assert ev["text"].startswith("too many failed sign-ins from this "
                                     "address"), (lib, ev)


@pytest.mark.parametrize("conf,error", [
    ("conclave_address_lockout 500ms;",
     '"conclave_address_lockout" must be 1s or more'),
    ("conclave_max_address_failures many;",
     '"conclave_max_address_failures" directive invalid number'),
    ("conclave_max_address_failures -1;",
     '"conclave_max_address_failures" directive invalid number'),
    ("conclave_max_address_failures 0; conclave_address_lockout 0s;", None),
])
def test_configuration(tmp_path, conclave_module, conf, error):
    assert_config(str(tmp_path / "t"), conclave_module, conf, error,
                  sanitize=env_sanitize())
