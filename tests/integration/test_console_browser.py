"""The admin console in Debian's headless Chromium (issue 8 proof).

tests/browser/console.mjs (playwright-core) drives three browsers over
the real appliance: erin (compliance) finds alice's conversation with
bob by keyword and opens it, frank (admin) sees alice's live session and
kicks it, bob is refused.  The conversation holds a body with <script>
and <img onerror> in it, which must show as text and never run.  The
screenshots land in build/browser-artifacts/console-*.png and in the
pytest temp dir.  Afterwards the audit chain must hold erin's search
with its keyword, her view, frank's kick and bob's refusal.
"""

import json
import os
import signal
import subprocess
import time

import pytest

from appliance import REPO
from rawws import RawWS
from test_console import XSS, msg, shipped, wait_admin_record

SCRIPT = os.path.join(REPO, "tests", "browser", "console.mjs")
ARTIFACTS = os.path.join(REPO, "build", "browser-artifacts")
CHROMIUM = "/usr/bin/chromium"
KEYWORD = "nightingale7"


@pytest.fixture(scope="module", autouse=True)
def built():
    if not os.path.isfile(os.path.join(REPO, "build", "admin",
                                       "index.html")):
        pytest.fail("build/admin is missing: run `make adminweb`",
                    pytrace=False)


def run_browser(appliance, tmp_path, resource):
    cmd = ["node", SCRIPT, "--base", appliance.nginx.base_url + "/admin/",
           "--out", str(tmp_path / "screenshots"), "--out", ARTIFACTS,
           "--keyword", KEYWORD, "--resource", resource, "--markup", XSS,
           "--domain", appliance.domain]
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

    result = run_browser(appliance, tmp_path, "browser-kick")

    # erin: the hit, then the conversation around it, bodies as text
    assert "compliance" in result["erin_roles"]
    assert result["hit"][1:4] == ["alice@example.com", "bob@example.com",
                                  "Did you see the %s report?" % KEYWORD]
    assert result["conversation"] == [
        "Did you see the %s report?" % KEYWORD, "Yes, looks fine", XSS]
    assert result["conversation_title"] == \
        "alice@example.com \u2194 bob@example.com"
    assert result["xss"] is None and result["injected"] == 0

    # frank: admin tabs only, alice's session with its details, kicked
    assert result["frank_tabs"] == ["Sign-ins", "Console audit", "Sessions",
                                    "Status"]
    row = result["session_row"]
    assert row[:4] == ["alice@example.com", "browser-kick", "127.0.0.1",
                       "websocket"]
    assert victim.stream_error(10) == "policy-violation"

    # bob: refused, nothing shown
    assert result["bob_tabs_hidden"] is True

    shots = {os.path.basename(p) for p in result["screenshots"]}
    assert shots == {"console-erin-search.png",
                     "console-erin-conversation.png",
                     "console-frank-sessions.png",
                     "console-frank-kicked.png",
                     "console-bob-refused.png"}
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
    wait_admin_record(appliance, lambda r: r[1] == "bob@example.com"
                      and r[0] == "fail"
                      and r[2]["object"]["id"] == "signin")
    for ws in (a, b, victim):
        ws.close()
