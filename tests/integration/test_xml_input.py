"""Bad XML and limits: RFC 6120 section 11 restrictions, stream errors.

Each case must end with a precise stream error, the XMPP <close/> and a
WebSocket close (code 1000); never a crash, hang or silent drop.  The
harness fails the module on any [alert] in the error log.
"""


import pytest

from rawws import RawWS

# limits the appliance fixture applies (see APPLIANCE_EXTRA_HTTP)
APPLIANCE_EXTRA_HTTP = """
    conclave_max_stanza_size 16k;
    conclave_max_stanza_size_preauth 4k;
    conclave_max_depth 10;
    conclave_max_attributes 20;
"""


@pytest.fixture(scope="module")
def port(appliance):
    return appliance.nginx.http_port


def stream_error_after(port, payload, login=False):
    ws = RawWS(port)
    if login:
        ws.login("alice")
    else:
        ws.open()
    ws.send(payload)
    cond = ws.stream_error()
    assert ws.expect(r"<close ")
    assert ws.close_code() == 1000
    ws.close()
    return cond


@pytest.mark.parametrize("name,payload,cond", [
    ("mismatched tags", "<iq><a></iq>", "not-well-formed"),
    ("unquoted attribute", "<iq type=get/>", "not-well-formed"),
    ("duplicate attribute", "<iq a='1' a='2'/>", "not-well-formed"),
    ("unbound prefix", "<x:iq/>", "not-well-formed"),
    ("bad char reference", "<message><body>&#0;</body></message>",
     "not-well-formed"),
    ("XML declaration inside the stream",
     "<?xml version='1.0'?><iq/>", "restricted-xml"),
    ("processing instruction", "<iq><?php x ?></iq>", "restricted-xml"),
    ("comment", "<iq><!-- hi --></iq>", "restricted-xml"),
    ("undeclared entity", "<message><body>&lol9;</body></message>",
     "restricted-xml"),
])
def test_bad_xml_before_auth(port, name, payload, cond):
    assert stream_error_after(port, payload) == cond, name


def test_dtd_with_entity_declarations_billion_laughs(port):
    laughs = ("<!DOCTYPE lolz [<!ENTITY lol 'lol'>"
              + "".join("<!ENTITY lol%d '%s'>" % (i, ("&lol%d;" % (i - 1)
                                                     if i > 1 else "&lol;")
                                                    * 10)
                        for i in range(1, 10))
              + "]><message><body>&lol9;</body></message>")
    assert stream_error_after(port, laughs, login=True) in (
        "restricted-xml", "not-well-formed")


def test_entity_reference_after_auth(port):
    assert stream_error_after(
        port, "<message to='bob@example.com'><body>&xxe;</body></message>",
        login=True) == "restricted-xml"


def test_predefined_entities_are_fine(port):
    ws = RawWS(port)
    ws.login("alice", resource="ent")
    ws.send("<iq type='get' id='e&amp;1' to='example.com'>"
            "<ping xmlns='urn:xmpp:ping'/></iq>")
    reply = ws.expect(r"type='result'")
    assert "id='e&amp;1'" in reply
    ws.close()


def test_depth_over_limit(port):
    deep = "<message>" + "<x>" * 12 + "</x>" * 12 + "</message>"
    assert stream_error_after(port, deep, login=True) == "policy-violation"


def test_stanza_over_size_limit(port):
    big = "<message to='bob@example.com'><body>%s</body></message>" % (
        "a" * 20000)
    assert stream_error_after(port, big, login=True) == "policy-violation"


def test_many_attributes(port):
    attrs = " ".join("a%d='x'" % i for i in range(30))
    assert stream_error_after(port, "<iq %s/>" % attrs,
                              login=True) == "policy-violation"


def test_preauth_limit_is_tighter(port):
    payload = ("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' "
               "mechanism='PLAIN'>%s</auth>" % ("A" * 6000))
    assert stream_error_after(port, payload) == "policy-violation"


def test_unterminated_attribute_is_cut(port):
    # libxml2 holds the bytes without a callback; the limit still applies
    ws = RawWS(port)
    ws.open()
    ws.send_frame(1, "<iq id='" + "a" * 3000, fin=False)
    ws.send_frame(0, "b" * 3000, fin=False)
    assert ws.stream_error() == "policy-violation"
    ws.close()


@pytest.mark.parametrize("payload", [
    "<message to='bob@example.com'><body>hi</body></message>",
    "<presence/>",
    "<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>",
])
def test_stanzas_before_auth_are_not_authorized(port, payload):
    assert stream_error_after(port, payload) == "not-authorized"


def test_stanza_before_bind_is_not_authorized(port):
    ws = RawWS(port)
    ws.open()
    assert "<success" in ws.auth("alice", "alice-pw")
    ws.open()
    ws.send("<message to='bob@example.com'><body>x</body></message>")
    assert ws.stream_error() == "not-authorized"


def test_unknown_top_level_element(port):
    assert stream_error_after(port, "<foo xmlns='urn:x'/>",
                              login=True) == "unsupported-stanza-type"


def test_open_for_another_domain(port):
    ws = RawWS(port)
    ws.send("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' "
            "to='elsewhere.org' version='1.0'/>")
    assert ws.stream_error() == "host-unknown"


def test_open_with_wrong_version(port):
    ws = RawWS(port)
    ws.send("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' "
            "to='example.com' version='2.0'/>")
    assert ws.stream_error() == "unsupported-version"


def test_server_still_serves_after_bad_input(port):
    ws = RawWS(port)
    assert ws.login("bob", resource="after").endswith("/after")
    ws.close()
