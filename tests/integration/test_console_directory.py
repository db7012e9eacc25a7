"""Console sign-in with the directory's full settings (issue 8 item 2).

The console's role handles are built from the same settings as the XMPP
sign-in (ngx_xmpp_dir_config): the AD-shaped directory
(tests/lib/ldap/ad-*.ldif) over ldaps:// verified with the harness CA,
sAMAccountName logins, memberOf group mode and nested groups.  frank
is an admin only through "IT Ops", a member of "Conclave Admins".
Separate appliances sign in over StartTLS with the CA file, and are
refused (503, logged with the TLS reason) with a wrong CA.  Real slapd,
mariadbd and nginx; the console's JSON API as the web app uses it.
"""

import os

import pytest

from console import Console
from slapd import (AD_ADMIN_GROUP_DN, AD_AUDITOR_GROUP_DN, AD_GROUPS,
                   AD_COMPLIANCE_GROUP_DN, AD_SIGNIN_GROUP_DN,
                   AD_USER_FILTER)

APPLIANCE_LDAP_FLAVOR = "ad"
APPLIANCE_LDAP_TLS = True
APPLIANCE_EXTRA_HTTP = """
    conclave_ldap_user_filter "%s";
    conclave_ldap_group "%s";
    conclave_ldap_group_base "%s";
    conclave_ldap_name_attribute sAMAccountName;
    conclave_ldap_group_mode memberof;
    conclave_ldap_uri @LDAPS_URI@;
    conclave_ldap_ca_file @LDAP_CA_FILE@;
    conclave_ldap_timeout 10s;
    conclave_admin_role_group admin "%s";
    conclave_admin_role_group compliance "%s";
    conclave_admin_role_group auditor "%s";
""" % (AD_USER_FILTER, AD_SIGNIN_GROUP_DN, AD_GROUPS, AD_ADMIN_GROUP_DN,
       AD_COMPLIANCE_GROUP_DN, AD_AUDITOR_GROUP_DN)


def error_log(app):
    with open(os.path.join(app.nginx.workdir, "logs", "error.log")) as f:
        return f.read()


# -- the AD-shaped directory over verified ldaps:// ---------------------------

def test_nested_admin_group_gives_the_admin_role(appliance):
    c = Console(appliance.base_url)
    status, me = c.signin("frank", "frank-pw")
    assert status == 200, me
    # admin through IT Ops -> Conclave Admins; auditor directly
    assert sorted(me["roles"]) == ["admin", "auditor"]
    assert me["user"] == "frank"
    status, doc = c.get("sessions")
    assert status == 200, doc


def test_upn_login_becomes_the_sam_account_name(appliance):
    # frank@example.com is his userPrincipalName; the console's user is
    # the directory's name attribute, as an XMPP sign-in's JID is
    c = Console(appliance.base_url)
    status, me = c.signin("frank@example.com", "frank-pw")
    assert status == 200, me
    assert me["user"] == "frank"


def test_compliance_officer_on_ad(appliance):
    c = Console(appliance.base_url)
    status, me = c.signin("grace", "grace-pw")
    assert status == 200, me
    assert sorted(me["roles"]) == ["auditor", "compliance"]
    assert c.get("search", q="x")[0] == 200


@pytest.mark.parametrize("login,password", [
    ("alice", "alice-pw"),          # a user, in no console group
    ("frank", "alice-pw"),          # wrong password
    ("carol", "carol-pw"),          # disabled account
])
def test_refused_on_ad(appliance, login, password):
    c = Console(appliance.base_url)
    status, doc = c.signin(login, password, check=False)
    assert (status, doc) == (401, {"error": "refused"}), login
    assert password not in error_log(appliance)


# -- TLS variants (the OpenLDAP-shaped directory) -----------------------------

def test_starttls_with_the_ca_file(make_appliance):
    app = make_appliance(ldap_tls=True, extra_http="""
        conclave_ldap_starttls on;
        conclave_ldap_ca_file @LDAP_CA_FILE@;
        conclave_ldap_timeout 10s;
    """)
    c = Console(app.base_url)
    status, me = c.signin("erin", "erin-pw")
    assert status == 200, me
    assert me["roles"] == ["compliance"]


@pytest.mark.parametrize("starttls", [False, True])
def test_wrong_ca_is_refused_and_logged(make_appliance, starttls):
    app = make_appliance(ldap_tls=True, extra_http="""
        conclave_ldap_uri %s;
        conclave_ldap_starttls %s;
        conclave_ldap_ca_file @LDAP_WRONG_CA_FILE@;
        conclave_ldap_timeout 2s;
    """ % ("@LDAP_URI@" if starttls else "@LDAPS_URI@",
           "on" if starttls else "off"))
    c = Console(app.base_url)
    status, doc = c.signin("erin", "erin-pw", check=False)
    assert (status, doc) == (503, {"error": "directory-unavailable"})
    log = error_log(app)
    line = [ln for ln in log.splitlines()
            if "console: sign-in of \"erin\": directory unavailable" in ln]
    assert line and "TLS" in line[-1] and "other-ca.pem" in line[-1], line
    assert "erin-pw" not in log
