"""make demo's nginx: configured by conclavectl setup from the package's
template (tests/lib/packaged.py), served over TLS with the package's
hardening; real clients sign in and chat over WebSocket (stanza.js) and
TCP (slixmpp) the way they would against an installed appliance."""

import os
import ssl
import urllib.request

from slixclient import SlixPool


def get(app, path):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(app.base_url + path, context=ctx,
                                timeout=10) as r:
        return r.status, r.headers, r.read()


def test_demo_runs_the_package_configuration(make_appliance, clients):
    app = make_appliance(packaged=True, tls=True)
    conf = app.nginx.conf_path
    assert conf.endswith("/root/etc/conclave/nginx.conf"), conf
    text = open(conf).read()
    assert "Written by\n# \"conclavectl setup\"" in text
    assert "include %s/hardening.conf;" % os.path.dirname(conf) in text

    status, headers, body = get(app, "/health")
    assert status == 200 and body == b"ok\n"
    assert headers["Strict-Transport-Security"] == "max-age=63072000"
    assert headers["Server"] == "nginx"
    status, _, body = get(app, "/")
    assert status == 200 and b"conclave.js" in body
    status, _, body = get(app, "/conclave-config.js")
    assert b'domain: "example.com"' in body

    a = clients("stanza")
    ev = a.connect(app.ws_url, "alice", "alice-pw", insecure=True)
    assert ev["ev"] == "online", ev
    with SlixPool() as pool:
        b = pool.client("bob@example.com/demo", "bob-pw", app.nginx.xmpp_port)
        a.message("bob@example.com/demo", "from the demo")
        b.wait_message(lambda m: m["body"] == "from the demo")
