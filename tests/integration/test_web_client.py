"""The bundled web client (issue 5): converse.js from build/webclient at
/, signed into and used in Debian's headless Chromium.

tests/browser/webclient.mjs (playwright-core) drives two browsers: alice
and bob sign in through the page, alice starts a chat with bob and sends
a message, and bob's page shows it.  The screenshots land in the pytest
temp dir and in build/browser-artifacts/.  The message's audit record
must then reach MariaDB.
"""

import json
import os
import signal
import subprocess
import time
import urllib.request
import uuid

import pytest

from appliance import REPO

WEBCLIENT = os.path.join(REPO, "build", "webclient")
SCRIPT = os.path.join(REPO, "tests", "browser", "webclient.mjs")
ARTIFACTS = os.path.join(REPO, "build", "browser-artifacts")
CHROMIUM = "/usr/bin/chromium"

# as the other integration tests: plain ws on loopback, SASL PLAIN allowed
APPLIANCE_TLS = False


@pytest.fixture(scope="module", autouse=True)
def built():
    if not os.path.isfile(os.path.join(WEBCLIENT, "index.html")):
        pytest.fail("%s is missing: run `make webclient`" % WEBCLIENT,
                    pytrace=False)


def fetch(app, path):
    with urllib.request.urlopen(app.nginx.base_url + path, timeout=10) as r:
        return r.headers, r.read()


def test_page_and_its_settings_are_served_at_root(appliance):
    h, body = fetch(appliance, "/")
    assert h["Content-Type"].startswith("text/html")
    for src in (b"conclave-config.js", b"converse/converse.min.js",
                b"conclave.js", b"Content-Security-Policy"):
        assert src in body
    h, body = fetch(appliance, "/conclave-config.js")
    assert h["Content-Type"] == "application/javascript"
    assert b'domain: "example.com"' in body


@pytest.mark.parametrize("path, ctype", [
    ("/converse/converse.min.js", "application/javascript"),
    ("/converse/converse.min.css", "text/css"),
    ("/converse/emoji.json", "application/json"),
    ("/converse/webfonts/muli.ttf", "font/ttf"),
    ("/logo.svg", "image/svg+xml"),
])
def test_assets_have_their_types(appliance, path, ctype):
    h, body = fetch(appliance, path)
    assert h["Content-Type"] == ctype and len(body) > 0


def test_only_minified_converse_without_source_maps():
    names = []
    for _, _, files in os.walk(WEBCLIENT):
        names += files
    assert "converse.min.js" in names and "LICENSE" in names
    assert not [n for n in names if n.endswith(".map")]
    assert "converse.js" not in names and "website.css" not in names


def run_browser(appliance, tmp_path, message, artifacts=ARTIFACTS,
                config=None):
    """webclient.mjs in its own process group, killed whole on timeout;
    returns its JSON result.  config: merged into conclave-config.js."""
    shots = tmp_path / "screenshots"
    users = appliance.users
    cmd = ["node", SCRIPT, "--base", appliance.nginx.base_url + "/",
           "--out", str(shots), "--out", artifacts, "--message", message,
           "--alice", "alice:%s" % users["alice"],
           "--bob", "bob@%s:%s" % (appliance.domain, users["bob"]),
           "--peer", appliance.jid("bob"), "--domain", appliance.domain]
    if config is not None:
        cmd += ["--config", json.dumps(config)]
    p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail("webclient.mjs timed out:\n" + err[-4000:])
    lines = out.strip().splitlines()
    result = json.loads(lines[-1]) if lines else {}
    assert p.returncode == 0 and result.get("ok"), (
        "webclient.mjs exit %d: %s\n%s" % (
            p.returncode, json.dumps(result.get("errors"), indent=1),
            err[-4000:]))
    return result


def test_alice_and_bob_chat_in_the_browser(appliance, tmp_path):
    assert os.access(CHROMIUM, os.X_OK), "apt-get install chromium"
    message = "hello bob, from the browser %s" % uuid.uuid4().hex[:12]
    result = run_browser(appliance, tmp_path, message)

    shots = {os.path.basename(p) for p in result["screenshots"]}
    assert shots == {"alice.png", "bob.png"}
    for p in result["screenshots"]:
        assert os.path.getsize(p) > 10000, p
    assert result["foreign"] == []
    # the WebSocket URL came from host-meta, and both pages used it
    ws = appliance.nginx.ws_url
    assert result["websocket_url"] == ws
    assert sorted(result["websockets"]) == ["alice: " + ws, "bob: " + ws]
    assert result["bosh"] == []
    # preconfigured: the domain, BOSH as the fallback, MUC on conference.
    base = appliance.nginx.base_url
    assert result["settings"] == {
        "websocket_url": ws, "bosh_service_url": base + "/http-bind",
        "muc_domain": "conference." + appliance.domain,
        "default_domain": appliance.domain}
    # the brand of the shipped conclave-config.js
    assert result["brand"] == {"title": "Conclave", "name": "Conclave",
                               "logo": base + "/logo.svg"}
    assert audited_transport(appliance, message) == "websocket"


def audited_transport(appliance, message):
    """The transport of the message's audit record (journal -> MariaDB);
    sender and recipient checked."""
    sql = ("SELECT actor_user, peer, transport FROM audit_record "
           "WHERE event='message' AND body='%s'" % message)
    deadline = time.monotonic() + 20
    rows = []
    while time.monotonic() < deadline:
        rows = appliance.mariadb.query(sql, database="conclave")
        if rows:
            break
        time.sleep(0.2)
    assert len(rows) == 1, "no audit record of the message in 20 s"
    actor, peer, transport = rows[0]
    assert actor.startswith(appliance.jid("alice"))
    assert peer.startswith(appliance.jid("bob"))
    return transport


def test_branding_and_the_bosh_fallback(appliance, tmp_path):
    """conclave-config.js as an administrator edits it: another product
    name and logo, and a WebSocket path that the network in between
    does not pass (here: a plain location, so the upgrade gets a 404).
    The page shows the brand, tries the WebSocket, falls back to BOSH,
    and the two users chat over BOSH."""
    message = "over bosh %s" % uuid.uuid4().hex[:12]
    result = run_browser(appliance, tmp_path, message,
                         artifacts=os.path.join(ARTIFACTS, "bosh"),
                         config={"productName": "Acme Chat",
                                 "logoUrl": "/logo.svg#acme",
                                 "discover": False,
                                 "websocketPath": "/no-websocket-here"})
    base = appliance.nginx.base_url
    assert result["brand"] == {"title": "Acme Chat", "name": "Acme Chat",
                               "logo": base + "/logo.svg#acme"}
    blocked = base.replace("http", "ws", 1) + "/no-websocket-here"
    assert result["settings"]["websocket_url"] == blocked
    assert {"alice: " + blocked, "bob: " + blocked} <= \
        set(result["websockets"])
    assert {"alice: POST", "bob: POST"} <= set(result["bosh"])
    assert result["foreign"] == []
    assert audited_transport(appliance, message) == "bosh"


def test_chat_over_tls_as_the_demo_serves_it(make_appliance, tmp_path):
    """https: page, wss: from host-meta (self-signed certificate)."""
    app = make_appliance(tls=True)
    result = run_browser(app, tmp_path, "over tls %s" % uuid.uuid4().hex,
                         artifacts=os.path.join(ARTIFACTS, "tls"))
    assert result["websocket_url"].startswith("wss://")
    assert result["websocket_url"] == app.nginx.ws_url
    assert result["foreign"] == []
