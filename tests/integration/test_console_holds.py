"""Legal holds and retention policies edited in the admin console
(issue 8 item 6, docs/console.md "Holds and retention").

Real slapd, mariadbd and nginx.  alice and bob chat; erin (compliance)
puts alice on hold and sets a one-day retention policy from the API the
web app uses; a retention run a few days later (conclavectl, the same
engine) deletes bob's words and keeps alice's, and the chain still
verifies.  The compliance profile's floor is enforced, every change is
in the chain twice (the engine's record with prior and resulting state,
the console's with the session), and what the brief names is refused
and recorded: CSRF, other roles, malformed bodies.
"""

import json
import time

import pytest

from console import Console
from polling import wait
from rawws import RawWS

APPLIANCE_EXTRA_HTTP = """
conclave_audit_checkpoint_records 1;
"""


def msg(to, body, id):
    return ("<message xmlns='jabber:client' to='%s' type='chat' id='%s'>"
            "<body>%s</body></message>" % (to, id, body))


def rows(app, sql):
    return app.mariadb.query(sql, database=app.mariadb.database)


def count(app, where):
    return int(rows(app, "SELECT COUNT(*) FROM audit_record WHERE "
                    + where)[0][0])


def console_records(app, action):
    return [(r[0], r[1], json.loads(r[2])) for r in rows(
        app, "SELECT status, actor_user, payload FROM audit_record WHERE "
        "event = 'admin' AND peer = '%s' ORDER BY ts_utc_us" % action)]


def engine_events(app, event):
    return [json.loads(r[0]) for r in rows(
        app, "SELECT payload FROM audit_record WHERE event = '%s' "
        "ORDER BY ts_utc_us" % event)]


def wait_for(pred, what):
    """What pred() gives once true: the console and MariaDB are polled
    less often than a client (every 0.2 s, for up to 20 s)."""
    return wait(pred, what, timeout=20, interval=0.2)


def wait_console_record(app, action, pred):
    return wait_for(lambda: next((r for r in console_records(app, action)
                                  if pred(r)), None),
                    "a %r console record" % action)


@pytest.fixture(scope="module")
def chat(appliance):
    port = appliance.nginx.http_port
    a = RawWS(port)
    a.login("alice", resource="desk")
    b = RawWS(port)
    b.login("bob", resource="phone")
    c = RawWS(port)
    c.login("carol", resource="desk")
    d = RawWS(port)
    d.login("frank", resource="desk")
    for i in range(5):
        a.send(msg("bob@example.com", "held words %d" % i, "a%d" % i))
        c.send(msg("frank@example.com", "unheld words %d" % i, "c%d" % i))
    b.expect(r"id='a4'")
    d.expect(r"id='c4'")
    wait_for(lambda: count(appliance, "event = 'message'") >= 10,
             "the messages in MariaDB")
    yield
    for w in (a, b, c, d):
        w.close()


def signed_in(app, user):
    c = Console(app.base_url)
    c.signin(user, user + "-pw")
    return c


@pytest.fixture
def erin(appliance):
    return signed_in(appliance, "erin")


def test_a_hold_and_a_policy_from_the_console_steer_retention(appliance,
                                                              chat, erin):
    status, doc = erin.post("holds", {
        "action": "create", "matter": "SEC-2026-017",
        "description": "subpoena of 3 March", "custodians": ["alice"]})
    assert (status, doc) == (200, {"ok": True})
    status, doc = erin.post("retention", {
        "action": "set", "scope": "global", "messages_days": 1,
        "signins_days": 1})
    assert (status, doc) == (200, {"ok": True})

    status, doc = erin.get("holds")
    assert status == 200, doc
    hold = {h["matter"]: h for h in doc["holds"]}["SEC-2026-017"]
    assert hold["custodians"] == "alice@example.com"
    assert hold["created_by"] == "erin@example.com"
    assert hold["released_at"] is None
    assert {"scope": "global", "target": "", "messages_days": "1",
            "signins_days": "1"}.items() <= doc["policies"][0].items()
    assert erin.get("retention") == (200, doc)

    # both changes are in the chain: the engine's and the console's
    ev = wait_for(lambda: engine_events(appliance, "legal_hold_create"),
                  "the engine's hold record")
    assert ev[-1]["actor"]["user"] == "erin@example.com"
    assert ev[-1]["resulting_state"]["custodians"] == ["alice@example.com"]
    wait_console_record(appliance, "hold", lambda r: r[0] == "success"
                        and r[2]["params"]["matter"] == "SEC-2026-017")
    wait_console_record(appliance, "retention", lambda r: r[0] == "success"
                        and r[2]["params"]["messages_days"] == 1)

    # three days later: carol's words go, alice's (to bob) stay, and the
    # chain verifies
    later = "@%d" % (int(time.time()) + 3 * 86400)
    r = appliance.conclavectl("retention", "run", "--now", later)
    assert "kept by legal holds" in r.stdout, r.stdout
    assert count(appliance, "event = 'message' AND actor_user = "
                 "'carol@example.com'") == 0
    assert count(appliance, "event = 'message' AND actor_user = "
                 "'alice@example.com'") == 5
    r = appliance.conclavectl("verify", "--db-only", check=False)
    assert r.returncode == 0 and r.stdout.strip().endswith(": OK"), \
        r.stdout + r.stderr

    # released: alice's words fall back under retention, not purged now
    status, doc = erin.post("holds", {"action": "release",
                                      "matter": "SEC-2026-017"})
    assert (status, doc) == (200, {"ok": True})
    assert count(appliance, "event = 'message' AND actor_user = "
                 "'alice@example.com'") == 5
    status, doc = erin.get("holds")
    hold = {h["matter"]: h for h in doc["holds"]}["SEC-2026-017"]
    assert hold["released_by"] == "erin@example.com"
    wait_console_record(appliance, "hold-release", lambda r: r[0] ==
                        "success")

    status, doc = erin.post("retention", {"action": "remove",
                                          "scope": "global"})
    assert (status, doc) == (200, {"ok": True})
    assert erin.get("holds")[1]["policies"] == []


def test_engine_refusals_come_back_as_422_with_the_reason(appliance, erin):
    body = {"action": "create", "matter": "dup-1", "rooms":
            ["ops@conference.example.com"], "since": 1000, "until": 2000}
    assert erin.post("holds", body) == (200, {"ok": True})
    status, doc = erin.post("holds", body)
    assert status == 422 and doc["error"] == "refused"
    assert "already has an active hold" in doc["reason"]
    status, doc = erin.post("holds", {"action": "release",
                                      "matter": "no-such-matter"})
    assert status == 422 and "no active hold" in doc["reason"]
    wait_console_record(appliance, "hold", lambda r: r[0] == "fail"
                        and r[2]["error"]["code"] == "refused")
    erin.post("holds", {"action": "release", "matter": "dup-1"})


def test_the_profile_floor_is_enforced(appliance, erin):
    appliance.conclavectl("retention", "profile", "cn")
    try:
        status, doc = erin.post("retention", {
            "action": "set", "scope": "user", "target": "bob",
            "messages_days": 30, "signins_days": 30})
        assert status == 422, doc
        assert "floor of 180 days" in doc["reason"], doc
        status, doc = erin.post("retention", {
            "action": "set", "scope": "user", "target": "bob",
            "messages_days": 200, "signins_days": 200})
        assert (status, doc) == (200, {"ok": True})
        assert erin.post("retention", {"action": "remove", "scope": "user",
                                       "target": "bob@example.com"}) \
            == (200, {"ok": True})
    finally:
        appliance.conclavectl("retention", "profile", "none")


@pytest.mark.parametrize("name, body", [
    ("holds", {}),
    ("holds", {"action": "create", "matter": "m"}),
    ("holds", {"action": "create", "custodians": ["alice"]}),
    ("holds", {"action": "create", "matter": "m", "custodians": "alice"}),
    ("holds", {"action": "create", "matter": "m",
               "custodians": ["alice/desk"]}),
    ("holds", {"action": "create", "matter": "m", "rooms": ["ops"]}),
    ("holds", {"action": "create", "matter": "m\n", "custodians": ["a"]}),
    ("holds", {"action": "create", "matter": "x" * 300,
               "custodians": ["a"]}),
    ("holds", {"action": "create", "matter": "m", "custodians": ["a"],
               "since": "monday"}),
    ("holds", {"action": "create", "matter": "m",
               "custodians": ["u%d" % i for i in range(65)]}),
    ("holds", {"action": "release"}),
    ("holds", {"action": "release", "matter": "m", "extra": 1}),
    ("holds", {"action": "purge", "matter": "m"}),
    ("retention", {}),
    ("retention", {"action": "set", "scope": "team", "messages_days": 1,
                   "signins_days": 1}),
    ("retention", {"action": "set", "scope": "global", "target": "alice",
                   "messages_days": 1, "signins_days": 1}),
    ("retention", {"action": "set", "scope": "room", "target": "ops",
                   "messages_days": 1, "signins_days": 1}),
    ("retention", {"action": "set", "scope": "global", "messages_days": 0,
                   "signins_days": 1}),
    ("retention", {"action": "set", "scope": "global",
                   "messages_days": "30", "signins_days": 1}),
    ("retention", {"action": "set", "scope": "global",
                   "messages_days": 10 ** 9, "signins_days": 1}),
    ("retention", {"action": "remove", "scope": "user"}),
])
def test_malformed_bodies_are_a_400(appliance, erin, name, body):
    assert erin.post(name, body) == (400, {"error": "bad-request"}), body


def test_without_a_csrf_token_nothing_changes(appliance, erin):
    for name, body in (("holds", {"action": "create", "matter": "csrf-1",
                                  "custodians": ["alice"]}),
                       ("retention", {"action": "set", "scope": "global",
                                      "messages_days": 1,
                                      "signins_days": 1})):
        assert erin.post(name, body, csrf=False) == (403, {"error": "csrf"})
        wait_console_record(appliance, name, lambda r: r[0] == "fail"
                            and r[2]["error"]["code"] == "csrf")
    status, doc = erin.get("holds")
    assert "csrf-1" not in [h["matter"] for h in doc["holds"]]
    assert doc["policies"] == []


@pytest.mark.parametrize("who", ["grace", "frank"])
def test_other_roles_are_refused_and_recorded(appliance, who):
    c = signed_in(appliance, who)
    for method, name, body in (
            ("GET", "holds", None), ("GET", "retention", None),
            ("POST", "holds", {"action": "create", "matter": "x",
                               "custodians": ["alice"]}),
            ("POST", "retention", {"action": "remove", "scope": "global"})):
        assert c.api(method, name, body=body) == \
            (403, {"error": "forbidden"}), (method, name)
    wait_console_record(appliance, "retention", lambda r: r[0] == "fail"
                        and r[1] == "%s@example.com" % who
                        and r[2]["error"]["code"] == "forbidden")


def test_a_hold_is_invisible_to_its_custodian(appliance, erin):
    """Nothing reaches the custodian when a hold on her starts or ends
    (COMPLIANCE.md 7.4): her stream carries only what she asks for."""
    a = RawWS(appliance.nginx.http_port)
    a.login("alice", resource="unaware")
    try:
        status, doc = erin.post("holds", {
            "action": "create", "matter": "QUIET-1",
            "custodians": ["alice"]})
        assert (status, doc) == (200, {"ok": True})
        status, doc = erin.post("holds", {"action": "release",
                                          "matter": "QUIET-1"})
        assert (status, doc) == (200, {"ok": True})
        wait_console_record(appliance, "hold-release",
                            lambda r: r[0] == "success")
        # a ping of her own: the first thing she receives is its answer
        a.send("<iq xmlns='jabber:client' type='get' id='quiet1'>"
               "<ping xmlns='urn:xmpp:ping'/></iq>")
        first = a.recv(10)
        assert "id='quiet1'" in first or 'id="quiet1"' in first, first
        assert "QUIET-1" not in first and "hold" not in first.lower()
    finally:
        a.close()
