"""Raw BOSH requests (XEP-0124/XEP-0206) for tests that need the exact
HTTP answer or a header a real client does not send (X-Forwarded-For
from a trusted proxy)."""

import http.client
import ssl

NS = "http://jabber.org/protocol/httpbind"
XBOSH = "urn:xmpp:xbosh"


def post(app, body, method="POST", headers=None, timeout=70):
    """One request to /http-bind: (status, {lower-case header: value},
    body bytes)."""
    if app.nginx.tls:
        # the harness's certificate is self-signed
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", app.nginx.port,
                                           timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", app.nginx.port,
                                          timeout=timeout)
    h = {"Content-Type": "text/xml; charset=utf-8"}
    h.update(headers or {})
    conn.request(method, "/http-bind", body=body, headers=h)
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data


def from_ip(app, body, ip):
    """A request that a proxy forwarded for ip; asserts 200, returns the
    body text."""
    status, _, data = post(app, body, headers={"X-Forwarded-For": ip},
                           timeout=30)
    assert status == 200, (status, data)
    return data.decode()
