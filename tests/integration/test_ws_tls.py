"""XMPP over WebSocket behind nginx's TLS (wss://), as the demo serves it.

Over TLS, SASL PLAIN is offered without conclave_allow_plaintext_auth.
"""

from rawws import RawWS

APPLIANCE_TLS = True
# debug logging reads every timer event as a connection: keep it covered
APPLIANCE_LOG_LEVEL = "debug"


def test_signin_and_chat_over_tls(appliance):
    port = appliance.nginx.http_port
    a = RawWS(port, tls=True)
    assert a.status == 101
    assert "PLAIN" in a.open()
    a.close()

    a = RawWS(port, tls=True)
    a.login("alice", resource="tls")
    b = RawWS(port, tls=True)
    b.login("bob", resource="tls")
    # large enough for several TLS records
    body = "x" * 40000
    a.send("<message to='bob@example.com/tls' id='t1'><body>%s</body>"
           "</message>" % body)
    msg = b.expect(r"id='t1'")
    assert "<body>%s</body>" % body in msg
    assert "from='alice@example.com/tls'" in msg
    b.send("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>")
    assert b.close_code() == 1000
    a.close()
    b.close()
