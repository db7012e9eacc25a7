"""SASL PLAIN checked by an LDAP bind: real clients, failures, injection.

Real clients: npm @xmpp/client and stanza (tests/lib/xmppdriver.mjs).
Raw frames (tests/lib/rawws.py) for what real clients never send.
"""

import base64
import re

import pytest

from rawws import RawWS

LIBS = ["xmpp", "stanza"]


@pytest.fixture(scope="module")
def port(appliance):
    return appliance.nginx.http_port


@pytest.mark.parametrize("lib", LIBS)
def test_signin_and_bind(appliance, clients, lib):
    c = clients(lib)
    ev = c.connect(appliance.ws_url, "alice", "alice-pw")
    assert ev["ev"] == "online", ev
    assert re.match(r"^alice@example\.com/.+", ev["jid"]), ev


@pytest.mark.parametrize("lib", LIBS)
def test_signin_with_chosen_resource(appliance, clients, lib):
    c = clients(lib)
    ev = c.connect(appliance.ws_url, "bob", "bob-pw", resource="desk-" + lib)
    assert ev["ev"] == "online", ev
    assert ev["jid"] == "bob@example.com/desk-" + lib


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("user,password,why", [
    ("alice", "wrong-pw", "wrong password"),
    ("nobody", "nobody-pw", "unknown user"),
    ("dave", "dave-pw", "outside the sign-in group"),
])
def test_signin_refused(appliance, clients, lib, user, password, why):
    c = clients(lib)
    ev = c.connect(appliance.ws_url, user, password)
    assert ev["ev"] == "error", (why, ev)
    assert ev.get("condition") == "not-authorized", (why, ev)


@pytest.mark.parametrize("login", [
    "*", "al*", "*ice", "alice)(uid=*", "alice)(|(uid=*", "\\", "al\\2a",
])
def test_ldap_filter_metacharacters_are_literal(port, login):
    # with alice's real password: a filter that matched alice would succeed
    ws = RawWS(port)
    ws.open()
    assert "<not-authorized/>" in ws.auth(login, "alice-pw"), login
    ws.close()


def test_login_as_user_at_domain(port):
    ws = RawWS(port)
    ws.open()
    assert "<success" in ws.auth("alice@example.com", "alice-pw")
    ws.close()


def test_login_for_another_domain_is_refused(port):
    ws = RawWS(port)
    ws.open()
    assert "<not-authorized/>" in ws.auth("alice@elsewhere.org", "alice-pw")
    ws.close()


def sasl_failure(port, text=None, raw=None):
    ws = RawWS(port)
    ws.open()
    if raw is not None:
        ws.send(raw)
    else:
        ws.send_auth(text)
    reply = ws.expect(r"<failure|<challenge|stream:error")
    ws.close()
    return reply


def test_sasl_payload_without_nul(port):
    text = base64.b64encode(b"alicealice-pw").decode()
    assert "<malformed-request/>" in sasl_failure(port, text)


def test_sasl_payload_with_one_nul(port):
    text = base64.b64encode(b"alice\0alice-pw").decode()
    assert "<malformed-request/>" in sasl_failure(port, text)


def test_sasl_oversized_payload(port):
    text = base64.b64encode(b"\0" + b"a" * 700 + b"\0pw").decode()
    assert "<malformed-request/>" in sasl_failure(port, text)


def test_sasl_bad_base64(port):
    assert "<incorrect-encoding/>" in sasl_failure(port, "@@not base64@@")


def test_sasl_wrong_authzid(port):
    text = base64.b64encode(b"bob@example.com\0alice\0alice-pw").decode()
    assert "<invalid-authzid/>" in sasl_failure(port, text)


def test_sasl_unknown_mechanism(port):
    raw = ("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
           "mechanism='DIGEST-MD5'/>")
    assert "<invalid-mechanism/>" in sasl_failure(port, raw=raw)


def test_sasl_plain_without_initial_response(port):
    ws = RawWS(port)
    ws.open()
    ws.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
            "mechanism='PLAIN'/>")
    assert "<challenge" in ws.expect(r"<challenge")
    ws.send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s"
            "</response>" % base64.b64encode(b"\0bob\0bob-pw").decode())
    assert "<success" in ws.expect(r"<success|<failure")
    ws.close()


def test_sasl_abort(port):
    ws = RawWS(port)
    ws.open()
    ws.send("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
    assert "<aborted/>" in ws.expect(r"<failure")
    ws.close()


def test_repeated_failures_end_the_stream(port):
    ws = RawWS(port)
    ws.open()
    for _ in range(2):
        assert "<not-authorized/>" in ws.auth("alice", "nope")
    assert "<not-authorized/>" in ws.auth("alice", "nope")
    assert ws.stream_error() == "policy-violation"
    assert ws.close_code() == 1000


def test_no_plaintext_auth_without_tls_by_default(make_appliance):
    """The harness allows SASL PLAIN on plain ws:// for loopback tests; the
    default must refuse it.  A second appliance with the default shows it."""
    app = make_appliance(plaintext_auth=False)
    ws = RawWS(app.nginx.http_port)
    ws.send("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' "
            "to='example.com' version='1.0'/>")
    assert ws.stream_error() == "policy-violation"
    ws.close()
