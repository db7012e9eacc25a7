"""XEP-0156 connection discovery: /.well-known/host-meta (XRD) and
host-meta.json (JRD) from conclave_host_meta.

The file's appliance sets no URL, so the WebSocket URL comes from the
request (scheme by TLS, then the Host header) and there is no BOSH link.
Configured URLs, TLS and bad configurations run on nginx alone (no
directory or database: host-meta needs neither).
"""

import http.client
import json
import socket
import subprocess
import xml.etree.ElementTree as ET

import pytest

from appliance import env_sanitize
from nginx import NGINX, Nginx

XRD = "{http://docs.oasis-open.org/ns/xri/xrd-1.0}"
WS = "urn:xmpp:alt-connections:websocket"
BOSH = "urn:xmpp:alt-connections:xbosh"


def get(port, path, method="GET", host=None, tls=False):
    if tls:
        import ssl
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        c = http.client.HTTPSConnection("127.0.0.1", port, timeout=10,
                                        context=ctx)
    else:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {}
    if host is not None:
        c.putrequest(method, path, skip_host=True)
        c.putheader("Host", host)
        c.endheaders()
    else:
        c.request(method, path, headers=headers)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r, body


def xrd_links(body):
    root = ET.fromstring(body)
    assert root.tag == XRD + "XRD"
    return {link.get("rel"): link.get("href")
            for link in root.findall(XRD + "Link")}


def jrd_links(body):
    doc = json.loads(body)
    return {link["rel"]: link["href"] for link in doc["links"]}


@pytest.fixture(scope="module")
def port(appliance):
    return appliance.nginx.http_port


def test_xrd_parses_and_names_the_websocket(port):
    r, body = get(port, "/.well-known/host-meta")
    assert r.status == 200
    assert r.getheader("Content-Type") == "application/xrd+xml"
    assert int(r.getheader("Content-Length")) == len(body)
    assert body.startswith(b"<?xml ")
    links = xrd_links(body)
    assert links == {WS: "ws://127.0.0.1:%d/xmpp-websocket" % port,
                     BOSH: "http://127.0.0.1:%d/http-bind" % port}


def test_jrd_parses_and_names_the_websocket(port):
    r, body = get(port, "/.well-known/host-meta.json")
    assert r.status == 200
    assert r.getheader("Content-Type") == "application/json"
    assert jrd_links(body) == {WS: "ws://127.0.0.1:%d/xmpp-websocket" % port,
                               BOSH: "http://127.0.0.1:%d/http-bind" % port}


@pytest.mark.parametrize("path", ["/.well-known/host-meta",
                                  "/.well-known/host-meta.json"])
def test_cors_and_cache_headers(port, path):
    r, _ = get(port, path)
    assert r.getheader("Access-Control-Allow-Origin") == "*"
    cc = r.getheader("Cache-Control")
    assert cc.startswith("max-age=")
    assert 0 < int(cc.split("=", 1)[1]) <= 3600


def test_head_has_headers_and_no_body(port):
    g, gbody = get(port, "/.well-known/host-meta.json")
    r, body = get(port, "/.well-known/host-meta.json", method="HEAD")
    assert r.status == 200 and body == b""
    assert r.getheader("Content-Length") == str(len(gbody))
    assert r.getheader("Access-Control-Allow-Origin") == "*"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
def test_other_methods_are_405(port, method):
    r, _ = get(port, "/.well-known/host-meta", method=method)
    assert r.status == 405
    assert r.getheader("Allow") == "GET, HEAD"


def test_url_follows_the_host_header(port):
    _, body = get(port, "/.well-known/host-meta",
                  host="chat.example.org:8443")
    assert xrd_links(body)[WS] == "ws://chat.example.org:8443/xmpp-websocket"
    assert xrd_links(body)[BOSH] == "http://chat.example.org:8443/http-bind"
    _, body = get(port, "/.well-known/host-meta.json", host="[::1]:5280")
    assert jrd_links(body)[WS] == "ws://[::1]:5280/xmpp-websocket"


@pytest.mark.parametrize("host", ['a"b', "a<b>", "a'b", "a%20b", "a@b"])
def test_host_that_is_no_host_is_400(port, host):
    r, body = get(port, "/.well-known/host-meta", host=host)
    assert r.status == 400
    assert host.encode() not in body


def test_http10_without_host_uses_the_local_address(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET /.well-known/host-meta.json HTTP/1.0\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert jrd_links(body)[WS] == "ws://127.0.0.1:%d/xmpp-websocket" % port


# nginx alone: configured URLs, TLS, configuration errors


@pytest.fixture
def bare_nginx(tmp_path, conclave_module):
    made = []

    def make(**kwargs):
        n = Nginx(str(tmp_path / ("nginx%d" % len(made))), conclave_module,
                  sanitize=env_sanitize(), workers=1, **kwargs)
        made.append(n)
        return n

    yield make
    problems = []
    for n in made:
        n.stop()
        problems += n.check_logs()
    assert not problems, "\n".join(problems)


def nginx_t(n):
    n.render_conf()
    return subprocess.run([NGINX, "-t", "-p", n.workdir + "/",
                           "-c", "conf/nginx.conf"], env=n.env(),
                          capture_output=True, text=True, timeout=60)


def test_tls_derives_wss_and_bosh_is_escaped(bare_nginx):
    bosh = "https://chat.example.com/http-bind?a=1&b=2"
    n = bare_nginx(tls=True, extra_http="conclave_bosh_url %s;" % bosh)
    n.start()
    _, body = get(n.http_port, "/.well-known/host-meta", tls=True)
    assert b"&amp;b=2" in body
    assert xrd_links(body) == {
        WS: "wss://127.0.0.1:%d/xmpp-websocket" % n.http_port, BOSH: bosh}
    _, body = get(n.http_port, "/.well-known/host-meta.json", tls=True)
    assert jrd_links(body) == {
        WS: "wss://127.0.0.1:%d/xmpp-websocket" % n.http_port, BOSH: bosh}


def test_tls_derives_https_for_the_bosh_location(bare_nginx):
    n = bare_nginx(tls=True)
    n.start()
    _, body = get(n.http_port, "/.well-known/host-meta.json", tls=True)
    assert jrd_links(body) == {
        WS: "wss://127.0.0.1:%d/xmpp-websocket" % n.http_port,
        BOSH: "https://127.0.0.1:%d/http-bind" % n.http_port}


def test_configured_websocket_url_wins_over_host(bare_nginx):
    ws = "wss://chat.example.com/xmpp-websocket"
    n = bare_nginx(extra_http="conclave_websocket_url %s;\n"
                              "conclave_bosh_url http://127.0.0.1/http-bind;"
                   % ws)
    n.start()
    _, body = get(n.http_port, "/.well-known/host-meta", host="other.org")
    assert xrd_links(body) == {WS: ws, BOSH: "http://127.0.0.1/http-bind"}
    r, body = get(n.http_port, "/.well-known/host-meta.json", host='a"b')
    assert r.status == 200                 # the Host header is not used
    assert jrd_links(body)[WS] == ws


@pytest.mark.parametrize("line, why", [
    ("conclave_websocket_url https://chat.example.com/ws;",
     "must be an absolute wss:// or ws:// URL"),
    ("conclave_websocket_url /xmpp-websocket;",
     "must be an absolute wss:// or ws:// URL"),
    ("conclave_websocket_url wss:///xmpp-websocket;",
     "must be an absolute wss:// or ws:// URL"),
    ("conclave_bosh_url wss://chat.example.com/http-bind;",
     "must be an absolute https:// or http:// URL"),
    ("conclave_bosh_url 'https://chat.example.com/a\"b';",
     "has a character not allowed in a URL"),
    ("conclave_bosh_url http://a/b;\nconclave_bosh_url http://a/c;",
     "is duplicate"),
])
def test_bad_url_is_a_config_error(bare_nginx, line, why):
    r = nginx_t(bare_nginx(extra_http=line))
    assert r.returncode != 0
    assert why in r.stderr, r.stderr


def test_host_meta_outside_a_location_is_a_config_error(bare_nginx):
    r = nginx_t(bare_nginx(extra_server="conclave_host_meta;"))
    assert r.returncode != 0
    assert "is not allowed here" in r.stderr, r.stderr
