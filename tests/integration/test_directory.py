"""The corporate directory in depth, end to end (issue 6).

The appliance signs users in against the AD-shaped directory
(tests/lib/ldap/ad-*.ldif) over ldaps:// verified with the harness CA:
userPrincipalName logins become sAMAccountName JIDs, nested groups let
people in, disabled accounts, group loops and oversized attributes do
not, and role groups show on the status page.  Separate appliances cover
StartTLS, a wrong CA, revocation of live sessions (disabled, deleted,
removed from the group; audited), the outage cache, and a frozen
directory during revalidation.  Clients: npm stanza and @xmpp/client
over WebSocket (tests/lib/xmppdriver.mjs), raw frames for injection.
"""

import json
import os
import re
import time

import pytest

from chathelp import status
from rawws import RawWS
from slapd import (AD_ADMIN_GROUP_DN, AD_AUDITOR_GROUP_DN, AD_GROUPS,
                   AD_COMPLIANCE_GROUP_DN, AD_SIGNIN_GROUP_DN,
                   AD_USER_FILTER, BASE, ad_dn)

DB = "conclave"

AD_HTTP = """
    conclave_ldap_user_filter "%s";
    conclave_ldap_group "%s";
    conclave_ldap_group_base "%s";
    conclave_ldap_name_attribute sAMAccountName;
    conclave_ldap_group_mode memberof;
    conclave_ldap_admin_group "%s";
    conclave_ldap_compliance_group "%s";
    conclave_ldap_auditor_group "%s";
""" % (AD_USER_FILTER, AD_SIGNIN_GROUP_DN, AD_GROUPS, AD_ADMIN_GROUP_DN,
       AD_COMPLIANCE_GROUP_DN, AD_AUDITOR_GROUP_DN)

APPLIANCE_LDAP_FLAVOR = "ad"
APPLIANCE_LDAP_TLS = True
APPLIANCE_EXTRA_HTTP = AD_HTTP + """
    conclave_ldap_search_max 2;
    conclave_ldap_shared_group "cn=Engineering,%(g)s";
    conclave_ldap_shared_group "cn=Sales,%(g)s";
    conclave_ldap_shared_group "cn=Conclave Auditors,%(g)s";
    conclave_ldap_uri @LDAPS_URI@;
    conclave_ldap_ca_file @LDAP_CA_FILE@;
    conclave_ldap_timeout 10s;
""" % {"g": AD_GROUPS}


def raw_auth(port, login, password):
    ws = RawWS(port)
    ws.open()
    try:
        return ws.auth(login, password)
    finally:
        ws.close()


def online(clients, app, login, password, lib="stanza"):
    c = clients(lib)
    ev = c.connect(app.ws_url, login, password)
    assert ev["ev"] == "online", (login, ev)
    return c


def refused(clients, app, login, password, condition="not-authorized"):
    c = clients("xmpp")
    ev = c.connect(app.ws_url, login, password)
    assert ev["ev"] == "error", (login, ev)
    assert ev.get("condition") == condition, (login, ev)


# -- AD-shaped directory over verified ldaps:// ---------------------------------

def test_upn_login_gets_the_sam_account_name_jid(appliance, clients):
    c = online(clients, appliance, "henry.hill", "hhill-pw")
    assert c.jid.startswith("hhill@example.com/"), c.jid


def test_nested_group_member_signs_in(appliance, clients):
    # erin: Platform, in Engineering, in Conclave Users
    c = online(clients, appliance, "erin", "erin-pw", lib="xmpp")
    assert c.jid.startswith("erin@example.com/"), c.jid


@pytest.mark.parametrize("login,password,why", [
    ("carol", "carol-pw", "userAccountControl: disabled"),
    ("dave", "dave-pw", "only in a group loop outside the sign-in group"),
    ("oscar", "oscar-pw", "300-character sAMAccountName"),
    ("alice", "", "empty password"),
    ("alice", "bob-pw", "wrong password"),
])
def test_refused(appliance, clients, login, password, why):
    if password == "":
        # real clients refuse to send an empty password: raw SASL
        reply = raw_auth(appliance.nginx.http_port, login, password)
        assert "<not-authorized/>" in reply or "<malformed-request/>" \
            in reply, (why, reply)
        return
    refused(clients, appliance, login, password)


@pytest.mark.parametrize("login", [
    "*", "a*", "alice)(sAMAccountName=*", "*)(|(objectClass=*",
    "alice\\2a", "henry.hill)(cn=*"])
def test_filter_injection(appliance, login):
    reply = raw_auth(appliance.nginx.http_port, login, "alice-pw")
    assert "<not-authorized/>" in reply, (login, reply)


def test_roles_on_the_status_page(appliance, clients):
    online(clients, appliance, "frank", "frank-pw")
    online(clients, appliance, "grace", "grace-pw")
    online(clients, appliance, "alice", "alice-pw")
    roles = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(roles) < 3:
        for s in status(appliance)["sessions"]:
            roles[s["jid"]] = set(s["roles"])
        time.sleep(0.1)
    assert roles["frank@example.com"] == {"user", "admin", "auditor"}
    assert roles["grace@example.com"] == {"user", "compliance", "auditor"}
    assert roles["alice@example.com"] == {"user"}


def test_ldap_metrics_on_the_status_page(appliance, clients):
    online(clients, appliance, "bob", "bob-pw")
    ldap = status(appliance)["ldap"]
    for key in ("signin_ok", "signin_denied", "signin_unavailable",
                "cache_hits", "connects", "connect_errors", "tls_errors",
                "ops", "op_errors", "op_timeouts", "op_latency_avg_ms",
                "op_latency_max_ms", "busy", "idle", "revalidations",
                "sessions_revoked"):
        assert key in ldap, (key, ldap)
    assert ldap["tls_errors"] == 0, ldap
    # each worker answers for itself: one of them did the sign-ins
    seen = 0
    for _ in range(20):
        ldap = status(appliance)["ldap"]
        seen = max(seen, ldap["signin_ok"])
        if seen and ldap["ops"] and ldap["connects"]:
            break
    assert seen > 0


# -- shared rosters -------------------------------------------------------------

def roster(app, user, password):
    ws = RawWS(app.nginx.http_port)
    try:
        ws.login(user, password, presence=False)
        ws.send("<iq xmlns='jabber:client' type='get' id='r1'>"
                "<query xmlns='jabber:iq:roster'/></iq>")
        reply = ws.expect(r"id='r1'.*?</iq>|id='r1'[^>]*/>")
    finally:
        ws.close()
    return roster_items(reply)


def roster_items(reply):
    items = {}
    for jid, attrs, body in re.findall(
            r"<item jid='([^']+)'([^>]*)>(.*?)</item>", reply):
        name = re.search(r"name='([^']*)'", attrs)
        items[jid] = (name.group(1) if name else None,
                      set(re.findall(r"<group>([^<]*)</group>", body)),
                      re.search(r"subscription='([^']*)'", attrs).group(1))
    return reply, items


def test_shared_roster_from_department_groups(appliance):
    # each worker reads the groups once it starts: wait for that
    deadline = time.monotonic() + 20
    while True:
        reply, items = roster(appliance, "alice", "alice-pw")
        if items or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert "type='result'" in reply, reply
    # Engineering: bob and hhill; oscar's 300-character name is no JID
    assert items == {
        "bob@example.com": ("Bob Brown", {"Engineering"}, "both"),
        "hhill@example.com": ("Henry Hill", {"Engineering"}, "both"),
    }, reply


def test_shared_roster_contact_in_two_groups(appliance):
    # frank and grace are both auditors; grace's roster lists frank once
    _, items = roster(appliance, "grace", "grace-pw")
    assert items == {"frank@example.com":
                     ("Frank Fisher", {"Conclave Auditors"}, "both")}, items
    # carol (Sales) is disabled: nobody's contact, and she cannot sign in


def test_shared_roster_empty_outside_groups(appliance):
    # erin's team (Platform) is not a shared group itself
    _, items = roster(appliance, "erin", "erin-pw")
    assert items == {}, items


def test_shared_and_personal_roster_merged(appliance):
    # the personal roster (MariaDB, docs/chat.md) and the shared contacts
    # in one result; a contact in both shows the personal item
    ws = RawWS(appliance.nginx.http_port)
    try:
        ws.login("alice", "alice-pw", presence=False)
        ws.send("<iq type='set' id='p1'><query xmlns='jabber:iq:roster'>"
                "<item jid='bob@example.com' name='Bobby'><group>Mine"
                "</group></item></query></iq>")
        assert "type='result'" in ws.expect(r"id='p1'")
        ws.send("<iq type='set' id='p2'><query xmlns='jabber:iq:roster'>"
                "<item jid='zed@example.com'/></query></iq>")
        assert "type='result'" in ws.expect(r"id='p2'")
    finally:
        ws.close()
    reply, items = roster(appliance, "alice", "alice-pw")
    # (roster() reads <item>...</item> only; zed's item is empty)
    assert "<item jid='zed@example.com' subscription='none'/>" in reply
    reply = reply.replace(
        "<item jid='zed@example.com' subscription='none'/>", "")
    _, items = roster_items(reply)
    assert items == {
        "bob@example.com": ("Bobby", {"Mine"}, "none"),
        "hhill@example.com": ("Henry Hill", {"Engineering"}, "both"),
    }, reply
    # the version covers the shared part: offered back, nothing comes
    ver = re.search(r"ver='([^']+)'", reply).group(1)
    assert "-" in ver
    ws = RawWS(appliance.nginx.http_port)
    try:
        ws.login("alice", "alice-pw", presence=False)
        ws.send("<iq type='get' id='v1'><query xmlns='jabber:iq:roster' "
                "ver='%s'/></iq>" % ver)
        r = ws.expect(r"id='v1'")
        assert "type='result'" in r and "<item" not in r, r
    finally:
        ws.close()


# -- user search (XEP-0055) ------------------------------------------------------

def search(app, query, user="alice"):
    ws = RawWS(app.nginx.http_port)
    try:
        ws.login(user, user + "-pw", presence=False)
        ws.send("<iq xmlns='jabber:client' type='%s' id='s1' "
                "to='example.com'><query xmlns='jabber:iq:search'>%s"
                "</query></iq>" % ("get" if query is None else "set",
                                   query or ""))
        return ws.expect(r"id='s1'.*?</iq>")
    finally:
        ws.close()


def form(**fields):
    return ("<x xmlns='jabber:x:data' type='submit'>"
            "<field var='FORM_TYPE'><value>jabber:iq:search</value></field>"
            + "".join("<field var='%s'><value>%s</value></field>" % kv
                      for kv in fields.items()) + "</x>")


def jids(reply):
    return sorted(set(re.findall(r"jid='([^']+)'", reply)
                      + re.findall(r"<field var='jid'><value>([^<]+)<",
                                   reply)))


def test_search_form(appliance):
    reply = search(appliance, None)
    assert "type='result'" in reply, reply
    assert "<first/>" in reply and "var='department'" in reply, reply


def test_search_legacy_fields(appliance):
    assert jids(search(appliance, "<first>Al</first>")) == \
        ["alice@example.com"]
    assert jids(search(appliance, "<email>henry.h</email>")) == \
        ["hhill@example.com"]
    assert jids(search(appliance, "<last>Gr</last>")) == \
        ["grace@example.com"]


def test_search_department_form_and_limit(appliance):
    # Engineering has alice, bob and hhill (oscar has no usable name);
    # conclave_ldap_search_max is 2 here
    reply = search(appliance, form(department="Engineering"))
    assert "jabber:x:data" in reply and "type='result'" in reply, reply
    got = jids(reply)
    assert len(got) == 2, reply
    assert set(got) <= {"alice@example.com", "bob@example.com",
                        "hhill@example.com"}, got


def test_search_skips_disabled(appliance):
    assert jids(search(appliance, form(department="Sales"))) == []


@pytest.mark.parametrize("query", [
    "<first>*</first>", "<nick>*)(sAMAccountName=*</nick>",
    "<first>A*</first>", "<email>*@example.com</email>",
    "<last>\\2a</last>", "<first>)(|(objectClass=*</first>"])
def test_search_injection(appliance, query):
    reply = search(appliance, query)
    assert "type='result'" in reply, reply
    assert jids(reply) == [], (query, reply)


@pytest.mark.parametrize("query", [
    "", "<first/>", "<first>%s</first>" % ("a" * 65), form(),
    "<unknown>x</unknown>"])
def test_search_not_acceptable(appliance, query):
    reply = search(appliance, query)
    assert "type='error'" in reply and "<not-acceptable" in reply, reply


# -- TLS variants ------------------------------------------------------------------

def test_starttls_verified(make_appliance, clients):
    # a generous timeout: TLS set-up on a loaded 2-core test machine
    app = make_appliance(ldap_tls=True, extra_http="""
        conclave_ldap_starttls on;
        conclave_ldap_ca_file @LDAP_CA_FILE@;
        conclave_ldap_timeout 10s;
    """)
    online(clients, app, "alice", "alice-pw")


@pytest.mark.parametrize("starttls", [False, True])
def test_wrong_ca_is_refused_and_logged(make_appliance, clients, starttls):
    app = make_appliance(ldap_tls=True, extra_http="""
        conclave_ldap_uri %s;
        conclave_ldap_starttls %s;
        conclave_ldap_ca_file @LDAP_WRONG_CA_FILE@;
        conclave_ldap_timeout 2s;
    """ % ("@LDAP_URI@" if starttls else "@LDAPS_URI@",
           "on" if starttls else "off"))
    refused(clients, app, "alice", "alice-pw", "temporary-auth-failure")
    log = app.nginx.error_log() if hasattr(app.nginx, "error_log") else \
        open(os.path.join(app.nginx.workdir, "logs", "error.log")).read()
    line = [ln for ln in log.splitlines() if "sign-in of \"alice\"" in ln]
    assert line and "TLS" in line[-1] and "other-ca.pem" in line[-1], line
    assert "alice-pw" not in log


# -- revocation ----------------------------------------------------------------

def wait_event(client, what, timeout):
    return client.wait_for(lambda e: e["ev"] in what, timeout=timeout)


def test_revocation_of_live_sessions(make_appliance, clients):
    app = make_appliance(ldap_flavor="ad", extra_http=AD_HTTP + """
        conclave_ldap_revalidate 1s;
    """)
    alice = online(clients, app, "alice", "alice-pw")
    bob = online(clients, app, "bob", "bob-pw", lib="xmpp")
    erin = online(clients, app, "erin", "erin-pw")
    frank = online(clients, app, "frank", "frank-pw", lib="xmpp")
    grace = online(clients, app, "grace", "grace-pw")
    for c in (frank, grace):
        c.presence()

    # a frozen directory revokes nothing: live sessions are unaffected
    app.ldap.pause()
    try:
        time.sleep(3)
        frank.message("grace@example.com", "during the outage")
        grace.wait_for(lambda e: e["ev"] == "message"
                       and e.get("body") == "during the outage", timeout=10)
    finally:
        app.ldap.resume()
    for c in (alice, bob, erin):
        c.expect_none(("stream-error", "offline"), timeout=0.5)

    # alice disabled, bob deleted, erin's team out of Engineering
    app.ldap.modify(
        "dn: %s\nchangetype: modify\nreplace: userAccountControl\n"
        "userAccountControl: 514\n\n"
        "dn: %s\nchangetype: delete\n\n"
        "dn: cn=Engineering,%s\nchangetype: modify\ndelete: member\n"
        "member: cn=Platform,%s\n"
        % (ad_dn("Alice Anderson"), ad_dn("Bob Brown"), AD_GROUPS,
           AD_GROUPS))

    for c in (alice, bob, erin):
        ev = wait_event(c, ("stream-error",), timeout=15)
        assert ev["condition"] == "policy-violation", ev

    # the others chat on
    frank.message("grace@example.com", "still here")
    grace.wait_for(lambda e: e["ev"] == "message"
                   and e.get("body") == "still here", timeout=10)

    # and the revoked cannot come back
    refused(clients, app, "alice", "alice-pw")

    reasons = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(reasons) < 3:
        for user, payload in app.mariadb.query(
                "SELECT actor_user, payload FROM audit_record WHERE "
                "event='session_end' AND actor_user IN ('alice@example.com',"
                "'bob@example.com','erin@example.com')", database=DB):
            reasons[user] = json.loads(payload)["params"]["reason"]
        time.sleep(0.3)
    assert reasons == {
        "alice@example.com": "revoked: account disabled",
        "bob@example.com":
            "revoked: account deleted or no longer matches the filter",
        "erin@example.com": "revoked: not in the sign-in group",
    }, reasons


# -- password changes -------------------------------------------------------------

def test_password_change_takes_effect_at_next_sign_in(make_appliance,
                                                      clients):
    """Issue 6.6: a password changed in the directory is the one the
    next sign-in needs; live sessions are not re-authenticated."""
    app = make_appliance()
    a = online(clients, app, "alice", "alice-pw", lib="xmpp")
    b = online(clients, app, "bob", "bob-pw")
    a.presence()
    b.available()
    app.ldap.modify("dn: uid=alice,ou=people,%s\nchangetype: modify\n"
                    "replace: userPassword\nuserPassword: alice-new-pw\n"
                    % BASE)
    # the live session goes on
    a.message(b.jid, "still signed in")
    b.wait_for(lambda e: e["ev"] == "message"
               and e.get("body") == "still signed in", 10)
    refused(clients, app, "alice", "alice-pw")
    online(clients, app, "alice", "alice-new-pw").disconnect()
    log = open(os.path.join(app.nginx.workdir, "logs", "error.log")).read()
    assert "alice-new-pw" not in log and "alice-pw" not in log


# -- outage policy --------------------------------------------------------------

def test_outage_cache(make_appliance, clients):
    # one worker: the cache is per worker process (README)
    app = make_appliance(workers=1, extra_http="""
        conclave_ldap_outage cache;
        conclave_ldap_cache_ttl 60s;
        conclave_ldap_timeout 1s;
    """)
    online(clients, app, "alice", "alice-pw").disconnect()
    app.ldap.stop()
    c = online(clients, app, "alice", "alice-pw")
    assert c.jid.startswith("alice@example.com/")
    refused(clients, app, "bob", "bob-pw", "temporary-auth-failure")
    refused(clients, app, "alice", "not-her-pw", "temporary-auth-failure")
    assert status(app)["ldap"]["cache_hits"] >= 1
    log = open(os.path.join(app.nginx.workdir, "logs", "error.log")).read()
    assert "from the credentials cache" in log
    assert "alice-pw" not in log
    # memory only: no file nginx wrote (logs, audit journal, temp files)
    # holds the password
    for top, _, files in os.walk(app.nginx.workdir):
        for name in files:
            path = os.path.join(top, name)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    assert b"alice-pw" not in f.read(), path


def test_outage_refuses_by_default(make_appliance, clients):
    app = make_appliance(workers=1, extra_http="""
        conclave_ldap_timeout 1s;
    """)
    online(clients, app, "alice", "alice-pw").disconnect()
    app.ldap.stop()
    refused(clients, app, "alice", "alice-pw", "temporary-auth-failure")
