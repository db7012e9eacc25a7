"""An administrator ends an XMPP sign-in lockout from the console
(POST /api/unlock; docs/console.md "Operations", README "Sign-in
lockout").

Both lockouts are on here and last long, so that only the unlock can
end them: per account (conclave_max_account_failures) and per client
address (conclave_max_address_failures).  The clients connect from
their own loopback addresses (127.0.N.M).  The unlock is recorded in
the audit chain before it happens, with what it cleared.
"""

import os
import re

import pytest

from console import Console
from rawtcp import RawTCP
from test_console import wait_admin_record

HERE = os.path.dirname(os.path.abspath(__file__))
KEYFILE = os.path.join(os.path.dirname(HERE), "lib", "console-test.key")

LOCKOUT = 300

APPLIANCE_EXTRA_HTTP = """
conclave_admin_key_file %s;
conclave_max_account_failures 3;
conclave_account_lockout %ds;
conclave_max_address_failures 4;
conclave_address_lockout %ds;
""" % (KEYFILE, LOCKOUT, LOCKOUT)

THROTTLED = (r"<temporary-auth-failure/><text xml:lang='en'>too many "
             r"failed sign-ins (for this account|from this address); try "
             r"again in \d+ s</text>")


def auth(app, source, user, password):
    c = RawTCP(app.nginx.xmpp_port, source=source)
    if "starttls" in c.open():
        c.starttls()
        c.open()
    r = c.auth(user, password)
    c.close()
    return r


def throttled(app, source, user):
    """The right password from source: refused by which lockout?"""
    m = re.search(THROTTLED, auth(app, source, user, user + "-pw"))
    return m and m.group(1)


@pytest.fixture(scope="module")
def users(appliance):
    return appliance.ldap.add_users("unl", 3)


@pytest.fixture
def frank(appliance):
    c = Console(appliance.base_url)
    c.signin("frank", "frank-pw")
    return c


def test_an_admin_ends_an_account_lockout(appliance, users, frank):
    user = users[0]
    for i in range(3):
        r = auth(appliance, "127.0.3.%d" % (i + 1), user, "wrong")
        assert "<not-authorized/>" in r, r
    assert throttled(appliance, "127.0.3.4", user) == "for this account"

    # as the employee typed it, domain and capitals included
    status, doc = frank.post("unlock",
                             {"login": user.upper() + "@Example.com"})
    assert status == 200, doc
    assert doc["login"] == user and doc["failures"] == 3
    assert 0 < doc["locked_for"] <= LOCKOUT

    r = auth(appliance, "127.0.3.5", user, user + "-pw")
    assert "<success" in r, r

    rec = wait_admin_record(appliance, lambda r: r[2]["object"]["id"]
                            == "unlock" and r[2]["params"].get("login")
                            == user)
    assert rec[0] == "success" and rec[1] == "frank@example.com"
    assert rec[2]["params"] == {"login": user, "failures": 3,
                                "locked_for": doc["locked_for"]}

    # nothing is left to clear
    assert frank.post("unlock", {"login": user}) == (
        200, {"login": user, "failures": 0, "locked_for": 0})


def test_an_admin_ends_an_address_lockout(appliance, users, frank):
    source = "127.0.4.1"
    for i in range(4):
        r = auth(appliance, source, "nosuch%d" % i, "wrong")
        assert "<not-authorized/>" in r, r
    assert throttled(appliance, source, users[1]) == "from this address"

    # as a dual-stack listener would write it: the same IPv4 client
    status, doc = frank.post("unlock", {"address": "::ffff:" + source})
    assert status == 200, doc
    assert doc["address"] == "::ffff:" + source and doc["failures"] == 4
    assert 0 < doc["locked_for"] <= LOCKOUT

    r = auth(appliance, source, users[1], users[1] + "-pw")
    assert "<success" in r, r
    wait_admin_record(appliance, lambda r: r[2]["object"]["id"] == "unlock"
                      and r[2]["params"].get("address") == "::ffff:" + source)
    assert frank.post("unlock", {"address": source}) == (
        200, {"address": source, "failures": 0, "locked_for": 0})


def test_counts_below_the_threshold_are_cleared_too(appliance, users,
                                                    frank):
    user = users[2]
    for i in range(2):
        auth(appliance, "127.0.5.%d" % (i + 1), user, "wrong")
    assert frank.post("unlock", {"login": user}) == (
        200, {"login": user, "failures": 2, "locked_for": 0})
    # two more refusals do not reach the threshold of three now
    for i in range(2):
        auth(appliance, "127.0.5.%d" % (i + 3), user, "wrong")
    r = auth(appliance, "127.0.5.5", user, user + "-pw")
    assert "<success" in r, r


@pytest.mark.parametrize("body", [
    {}, {"login": ""}, {"login": 5}, {"address": ""},
    {"login": "alice", "address": "127.0.0.1"}, {"address": "not-an-ip"},
    {"address": "127.0.0.1:5222"}, {"login": "alice@elsewhere.org"},
    {"login": "a b"}, {"login": "x" * 2000}, {"user": "alice"},
])
def test_bad_bodies_are_a_400(appliance, frank, body):
    assert frank.post("unlock", body) == (400, {"error": "bad-request"})


def test_only_admins_unlock(appliance):
    erin = Console(appliance.base_url)
    erin.signin("erin", "erin-pw")
    assert erin.post("unlock", {"login": "alice"}) == (
        403, {"error": "forbidden"})


def test_without_lockouts_there_is_nothing_to_unlock(make_appliance):
    app = make_appliance(extra_http="conclave_admin_key_file %s;\n"
                         "conclave_max_address_failures 0;" % KEYFILE)
    frank = Console(app.base_url)
    frank.signin("frank", "frank-pw")
    assert frank.post("unlock", {"login": "alice"}) == (
        409, {"error": "lockouts-off"})
