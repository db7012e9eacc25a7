"""Brute-force throttling of console sign-ins (issue 8 item 2).

Failures are counted per login and per client address in shared memory,
so both nginx workers see them; after conclave_admin_max_failures within
conclave_admin_lockout, sign-ins are refused with 429 and Retry-After
without asking the directory, and each refusal is an audit record.
"""

import json
import time

from console import Console

APPLIANCE_EXTRA_HTTP = """
conclave_admin_max_failures 3;
conclave_admin_lockout 3s;
"""


def admin_fails(app, code):
    rows = app.mariadb.query(
        "SELECT actor_user, payload FROM audit_record WHERE event = 'admin'"
        " AND status = 'fail'", database=app.mariadb.database)
    return [r[0] for r in rows
            if json.loads(r[1]).get("error", {}).get("code") == code]


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
