"""XMPP sign-ins per account (README "Sign-in lockout per account"):
with conclave_max_account_failures set, that many refusals of one login
within conclave_account_lockout, from any addresses, refuse that login
for conclave_account_lockout without asking the directory, so that
guesses spread over many addresses stop before the directory's own
lockout.  A success clears the count, as it clears the directory's.

The clients connect from different loopback addresses (127.0.N.M), so
that the per-address limit, off here, could not be what locks them.
"""

import json
import re
import time

import pytest

from appliance import env_sanitize
from nginx import assert_config
from rawtcp import RawTCP

LOCKOUT = 6

APPLIANCE_EXTRA_HTTP = ("conclave_max_account_failures 3;\n"
                        "    conclave_account_lockout %ds;\n"
                        "    conclave_max_address_failures 0;" % LOCKOUT)

THROTTLED = (r"<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
             r"<temporary-auth-failure/><text xml:lang='en'>too many failed "
             r"sign-ins for this account; try again in (\d+) s</text>"
             r"</failure>")


def auth(app, source, user, password):
    """A stream from source (a loopback address): STARTTLS, then SASL
    PLAIN; the connection and the answer to <auth/>."""
    c = RawTCP(app.nginx.xmpp_port, source=source)
    if "starttls" in c.open():
        c.starttls()
        c.open()
    return c, c.auth(user, password)


def refuse(app, user, sources):
    for i, source in enumerate(sources):
        c, r = auth(app, source, user, "wrong-%d" % i)
        assert "<not-authorized/>" in r, (source, r)
        c.close()


def succeed(app, source, user):
    c, r = auth(app, source, user, user + "-pw")
    assert "<success" in r, (source, r)
    c.close()


def locked_out(c, r):
    m = re.search(THROTTLED, r)
    assert m, r
    assert 1 <= int(m.group(1)) <= LOCKOUT, r
    c.expect(r"<policy-violation xmlns='urn:ietf:params:xml:ns:"
             r"xmpp-streams'/>.*</stream:stream>")
    c.close()


def signin_fails(app, user):
    return [json.loads(p)["error"] for (p,) in app.mariadb.query(
        "SELECT payload FROM audit_record WHERE event='signin' AND "
        "status='fail' AND actor_user='%s@example.com' ORDER BY ts_utc_us"
        % user, database="conclave")]


def test_refusals_from_many_addresses_lock_the_account(appliance):
    before = appliance.nginx.metric("conclave_signins_total",
                                    result="throttled")
    refuse(appliance, "erin", ["127.0.2.1", "127.0.2.2", "127.0.2.3"])

    # the right password, from a fourth address: not asked
    c, r = auth(appliance, "127.0.2.4", "erin", "erin-pw")
    locked_out(c, r)
    # the login in another case is the same account
    c, r = auth(appliance, "127.0.2.5", "ERIN", "erin-pw")
    locked_out(c, r)

    # another account from the same addresses is not concerned
    succeed(appliance, "127.0.2.1", "frank")

    assert appliance.nginx.metric("conclave_signins_total",
                                  result="throttled") == before + 2
    assert 'sign-ins of "erin" refused for %d s: 3 refused within %d s' \
        % (LOCKOUT, LOCKOUT) in appliance.nginx.error_log()

    # every attempt is in the audit trail, the refused ones with why
    deadline = time.monotonic() + 20
    while len(signin_fails(appliance, "erin")) < 5:
        assert time.monotonic() < deadline, signin_fails(appliance, "erin")
        time.sleep(0.2)
    errors = [(e["code"], e["description"])
              for e in signin_fails(appliance, "erin")]
    assert [code for code, _ in errors[:3]] == ["not-authorized"] * 3
    assert errors[3:] == [("temporary-auth-failure",
                           "too many failed sign-ins for this account")] * 2

    # the lockout ends, and then the password works again
    time.sleep(LOCKOUT + 1)
    succeed(appliance, "127.0.2.6", "erin")


def test_a_success_clears_the_count(appliance):
    """As the directory's bad-password count: two refusals, a success,
    two more refusals do not lock the account."""
    refuse(appliance, "carol", ["127.0.3.1", "127.0.3.2"])
    succeed(appliance, "127.0.3.3", "carol")
    refuse(appliance, "carol", ["127.0.3.4", "127.0.3.5"])
    succeed(appliance, "127.0.3.6", "carol")


def test_one_address_many_accounts_is_not_an_account_lockout(appliance):
    """The per-address limit is off in this module: refusals of many
    logins from one address lock none of them."""
    for user in ("alice", "bob", "frank"):
        refuse(appliance, user, ["127.0.4.1"] * 2)
    for user in ("alice", "bob", "frank"):
        succeed(appliance, "127.0.4.1", user)


def test_real_clients_are_told_why(appliance, clients):
    refuse(appliance, "bob", ["127.0.5.1", "127.0.5.2", "127.0.5.3"])
    for lib in ("xmpp", "stanza"):
        ev = clients(lib).connect(appliance.ws_url, "bob", "bob-pw")
        # xmpp.js reports the stream error, stanza the SASL failure
        assert ev["ev"] == "error", (lib, ev)
        assert ev["condition"] in ("policy-violation",
                                   "temporary-auth-failure"), (lib, ev)
        assert ev["text"].startswith("too many failed sign-ins for this "
                                     "account"), (lib, ev)


@pytest.mark.parametrize("conf,error", [
    ("conclave_max_account_failures 5; conclave_account_lockout 500ms;",
     '"conclave_account_lockout" must be 1s or more'),
    ("conclave_max_account_failures some;",
     '"conclave_max_account_failures" directive invalid number'),
    ("conclave_max_account_failures 0; conclave_account_lockout 0s;", None),
    # off (the default): any lockout length is accepted
    ("conclave_account_lockout 0s;", None),
])
def test_configuration(tmp_path, conclave_module, conf, error):
    assert_config(str(tmp_path / "t"), conclave_module, conf, error,
                  sanitize=env_sanitize())
