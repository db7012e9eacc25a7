"""Brute-force throttling of console sign-ins (issue 8 item 2).

Failures are counted per login and per client address in shared memory,
so both nginx workers see them; after conclave_admin_max_failures within
conclave_admin_lockout, sign-ins are refused with 429 and Retry-After
without asking the directory.  A locked-out client may retry at any
rate, so the refusals are summarised in the audit chain like forged
cookies: the first of a quiet period at once, then at most one record
per worker per conclave_admin_forged_summary, the counts adding up to
every refusal.
"""

import json
import time

from console import Console

APPLIANCE_EXTRA_HTTP = """
conclave_admin_max_failures 3;
conclave_admin_lockout 3s;
conclave_admin_forged_summary 2s;
"""


def admin_fails(app, code):
    rows = app.mariadb.query(
        "SELECT actor_user, payload FROM audit_record WHERE event = 'admin'"
        " AND status = 'fail'", database=app.mariadb.database)
    return [r[0] for r in rows
            if json.loads(r[1]).get("error", {}).get("code") == code]


def throttled_records(app):
    rows = app.mariadb.query(
        "SELECT actor_user, actor_ip, payload FROM audit_record"
        " WHERE event = 'admin' AND status = 'fail'",
        database=app.mariadb.database)
    out = []
    for user, ip, payload in rows:
        doc = json.loads(payload)
        if (doc.get("object", {}).get("id") == "signin"
                and doc.get("error", {}).get("code") == "throttled"):
            out.append((user, ip, doc.get("params", {})))
    return out


def throttled_count(app):
    return sum(p["count"] for _, _, p in throttled_records(app))


def wait_fails(app, code, user, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if user in admin_fails(app, code):
            return
        time.sleep(0.2)
    raise AssertionError("no %s record for %s" % (code, user))


def signin(app, user, pw):
    c = Console(app.base_url)
    status, doc = c.signin(user, pw, check=False)
    return status, doc, c.last_headers


def test_a_login_is_locked_out_then_released(appliance):
    for _ in range(3):
        assert signin(appliance, "erin", "guess")[0] == 401
    # even the right password now: the directory is not asked
    status, doc, h = signin(appliance, "erin", "erin-pw")
    assert (status, doc) == (429, {"error": "throttled"})
    assert 1 <= int(h["Retry-After"]) <= 3
    wait_fails(appliance, "throttled", "erin@example.com")
    time.sleep(4.5)
    assert signin(appliance, "erin", "erin-pw")[0] == 200


def test_an_address_is_locked_out_across_logins(appliance):
    time.sleep(4.5)     # the last test's address count runs out
    for user in ("nobody1", "nobody2", "nobody3"):
        assert signin(appliance, user, "x")[0] == 401
    # frank never failed, but this address did
    assert signin(appliance, "frank", "frank-pw")[0] == 429
    time.sleep(4.5)
    assert signin(appliance, "frank", "frank-pw")[0] == 200


def test_a_success_clears_the_login_count(appliance):
    time.sleep(4.5)
    assert signin(appliance, "grace", "nope")[0] == 401
    assert signin(appliance, "grace", "nope")[0] == 401
    assert signin(appliance, "grace", "grace-pw")[0] == 200
    time.sleep(4.5)     # the address count (2) expires; grace's was reset
    assert signin(appliance, "grace", "nope")[0] == 401
    assert signin(appliance, "grace", "nope")[0] == 401
    assert signin(appliance, "grace", "grace-pw")[0] == 200


def test_throttled_attempts_are_summarised_and_every_one_counted(appliance):
    time.sleep(4.5)
    before = throttled_count(appliance)
    for _ in range(3):
        assert signin(appliance, "mallory", "guess")[0] == 401
    # a client hammering the lockout: every 429 must be in the chain,
    # though not as a record each (a lockout that ends meanwhile gives
    # 401s until it is locked again: only the 429s count)
    t0 = time.monotonic()
    refused = 0
    for _ in range(60):
        status, doc, h = signin(appliance, "mallory", "guess")
        if status == 429:
            assert doc == {"error": "throttled"} and "Retry-After" in h
            refused += 1
        else:
            assert status == 401
    took = time.monotonic() - t0
    assert refused >= 3
    deadline = time.monotonic() + 30
    while throttled_count(appliance) < before + refused:
        assert time.monotonic() < deadline, (throttled_count(appliance),
                                             before + refused)
        time.sleep(0.3)
    time.sleep(2.5)                 # one more period: nothing extra comes
    assert throttled_count(appliance) == before + refused
    recs = [r for r in throttled_records(appliance)
            if r[0] == "mallory@example.com"]
    assert sum(p["count"] for _, _, p in recs) == refused
    # the address of the refused client, never anything else
    assert {ip for _, ip, _ in recs} == {"127.0.0.1"}
    assert all(p["since"] <= p["until"] for _, _, p in recs)
    # at most one record per worker per period, plus the first of each
    # worker's quiet period (2 workers, conclave_admin_forged_summary 2s)
    workers = 2
    print("%d throttled sign-ins in %d records over %.1f s"
          % (refused, len(recs), took))
    assert len(recs) <= workers * (int(took / 2) + 3), (len(recs), took)
