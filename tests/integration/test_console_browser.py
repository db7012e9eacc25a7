"""The admin console in Debian's headless Chromium (issue 8 proof).

tests/browser/console.mjs (playwright-core) drives three browsers over
the real appliance: erin (compliance) finds alice's conversation with
bob by keyword and opens it, frank (admin) sees alice's live session and
kicks it, bob is refused.  erin also exports alice's conversations as
Actiance XML from the Exports view: the progress bar reaches done and
the downloaded zip passes `conclavectl verify-export`.  grace (auditor)
sees no export or hold views, and her page's own calls to those APIs
get 403.  The conversation holds a body with <script>
and <img onerror> in it, which must show as text and never run.  The
screenshots land in build/browser-artifacts/console-*.png and in the
pytest temp dir.  Afterwards the audit chain must hold erin's search
with its keyword, her view, frank's kick and bob's refusal.
"""

import json
import os
import signal
import subprocess
import zipfile

import pytest

from appliance import REPO
from rawtcp import RawTCP
from rawws import RawWS
from test_console import XSS, msg, shipped, wait_admin_record

SCRIPT = os.path.join(REPO, "tests", "browser", "console.mjs")
ARTIFACTS = os.path.join(REPO, "build", "browser-artifacts")
CHROMIUM = "/usr/bin/chromium"
KEYWORD = "nightingale7"
UNLOCK = "127.0.6.1"
# a checkpoint over every record: an export carries only signed records
APPLIANCE_EXTRA_HTTP = "conclave_audit_checkpoint_records 1;"


@pytest.fixture(scope="module", autouse=True)
def built():
    if not os.path.isfile(os.path.join(REPO, "build", "admin",
                                       "index.html")):
        pytest.fail("build/admin is missing: run `make adminweb`",
                    pytrace=False)


def run_browser(appliance, tmp_path, resource, unlock):
    cmd = ["node", SCRIPT, "--base", appliance.nginx.base_url + "/admin/",
           "--out", str(tmp_path / "screenshots"), "--out", ARTIFACTS,
           "--keyword", KEYWORD, "--resource", resource, "--markup", XSS,
           "--domain", appliance.domain, "--unlock", unlock]
    p = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail("console.mjs timed out:\n" + err[-4000:])
    lines = out.strip().splitlines()
    result = json.loads(lines[-1]) if lines else {}
    assert p.returncode == 0 and result.get("ok"), (
        "console.mjs exit %d: %s\n%s" % (
            p.returncode, json.dumps(result.get("errors"), indent=1),
            err[-4000:]))
    return result


def test_erin_finds_frank_kicks_bob_is_refused(appliance, tmp_path):
    assert os.access(CHROMIUM, os.X_OK), "apt-get install chromium"
    port = appliance.nginx.http_port
    a = RawWS(port)
    a.login("alice", resource="laptop")
    b = RawWS(port)
    b.login("bob", resource="desk")
    # each waits for the other's message: the records' times then
    # follow the conversation (two workers, two clocks of events)
    a.send(msg("bob@example.com", "Did you see the %s report?" % KEYWORD,
               "k1"))
    b.expect(r"id='k1'")
    b.send(msg("alice@example.com", "Yes, looks fine", "k2"))
    a.expect(r"id='k2'")
    a.send(msg("bob@example.com", XSS, "k3"))
    b.expect(r"id='k3'")
    shipped(appliance, ["k1", "k2", "k3"])

    # the session frank will end: a live one of alice's
    victim = RawWS(port)
    victim.login("alice", resource="browser-kick")

    # the refused XMPP sign-ins frank will clear (an address counts them)
    for i in range(2):
        c = RawTCP(appliance.nginx.xmpp_port, source=UNLOCK)
        if "starttls" in c.open():
            c.starttls()
            c.open()
        assert "<not-authorized/>" in c.auth("carol", "wrong-%d" % i)
        c.close()

    result = run_browser(appliance, tmp_path, "browser-kick", UNLOCK)

    # erin: the hit, then the conversation around it, bodies as text
    assert "compliance" in result["erin_roles"]
    assert result["hit"][1:4] == ["alice@example.com", "bob@example.com",
                                  "Did you see the %s report?" % KEYWORD]
    assert result["conversation"] == [
        "Did you see the %s report?" % KEYWORD, "Yes, looks fine", XSS]
    assert result["conversation_title"] == \
        "alice@example.com \u2194 bob@example.com"
    assert result["xss"] is None and result["injected"] == 0

    # erin's export: the bar at its end, the zip verifies offline
    assert result["erin_tabs"] == ["Search", "Exports", "Holds & retention",
                                   "Sign-ins", "Console audit"]
    value, top = result["export_progress"]
    assert value == top and top >= 3, result["export_progress"]
    assert result["export_row"][2] == "actiance"
    assert "user=alice@example.com" in result["export_row"][3]
    assert result["export_name"].startswith("conclave-actiance-")
    vkey = appliance.conclavectl("vkey").stdout.strip()
    r = appliance.conclavectl("verify-export", "--vkey", vkey,
                              result["export_zip"], check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    with zipfile.ZipFile(result["export_zip"]) as zf:
        xml = [n for n in zf.namelist() if n.endswith(".xml")]
        assert xml and KEYWORD in zf.read(xml[0]).decode()

    # grace: read-only views, and the API says no to her page
    assert result["grace_tabs"] == ["Search", "Sign-ins", "Console audit"]
    assert result["grace_api"] == {
        "exports": [403, "forbidden"], "holds": [403, "forbidden"],
        "retention": [403, "forbidden"], "list": [403, "forbidden"]}

    # frank: admin tabs only, alice's session with its details, kicked
    assert result["frank_tabs"] == ["Sign-ins", "Console audit", "Sessions",
                                    "Status"]
    row = result["session_row"]
    assert row[:4] == ["alice@example.com", "browser-kick", "127.0.0.1",
                       "websocket"]
    assert victim.stream_error(10) == "policy-violation"
    assert result["unlock_text"] == \
        "Cleared 2 refused sign-ins of address %s." % UNLOCK

    # bob: refused, nothing shown
    assert result["bob_tabs_hidden"] is True

    shots = {os.path.basename(p) for p in result["screenshots"]}
    assert shots == {"console-erin-search.png",
                     "console-erin-conversation.png",
                     "console-frank-sessions.png",
                     "console-frank-kicked.png",
                     "console-bob-refused.png",
                     "console-erin-export.png",
                     "console-grace-readonly.png"}
    for p in result["screenshots"]:
        assert os.path.getsize(p) > 5000, p
    assert result["foreign"] == []

    # the auditors are audited
    wait_admin_record(appliance, lambda r: r[1] == "erin@example.com"
                      and r[2]["object"]["id"] == "search"
                      and r[2]["params"].get("q") == KEYWORD)
    wait_admin_record(appliance, lambda r: r[1] == "erin@example.com"
                      and r[2]["object"]["id"] == "conversation")
    wait_admin_record(appliance, lambda r: r[1] == "frank@example.com"
                      and r[2]["object"]["id"] == "kick"
                      and r[2]["params"]["resource"] == "browser-kick")
    wait_admin_record(appliance, lambda r: r[1] == "erin@example.com"
                      and r[2]["object"]["id"] == "download"
                      and r[0] == "success")
    wait_admin_record(appliance, lambda r: r[1] == "grace@example.com"
                      and r[2]["object"]["id"] == "exports"
                      and r[2]["error"]["code"] == "forbidden")
    wait_admin_record(appliance, lambda r: r[1] == "bob@example.com"
                      and r[0] == "fail"
                      and r[2]["object"]["id"] == "signin")
    for ws in (a, b, victim):
        ws.close()
