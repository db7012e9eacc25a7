"""ldap/ library in depth against a real slapd (issue 6).

Like test_ldap_lib.py, builds tests/lib/cdir_cli.c with ldap/src/*.c and
runs it against private slapd instances (tests/lib/slapd.py):

- TLS: ldaps:// and StartTLS verified against the harness CA; a wrong CA
  and a name mismatch are refused with a clear reason; verification can
  only be skipped explicitly;
- the AD-shaped directory (ad-schema.ldif): sAMAccountName and
  userPrincipalName logins, the JID name from sAMAccountName, the
  userAccountControl disabled flag, nested groups with a depth limit, a
  group loop, role groups (admin, compliance, auditor);
- memberOf and (member=<dn>) group lookups; a user in thousands of
  groups; oversized attributes;
- revalidation of a signed-in DN (deleted, disabled, removed from the
  group) and the outage cache (memory only, salted, TTL, refuse by
  default).

    /usr/bin/python3 -m pytest tests/integration/test_ldap_dir.py
"""

import os
import subprocess
import sys
import time

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(TOP, "tests", "lib"))

from slapd import (AD_ADMIN_GROUP_DN, AD_AUDITOR_GROUP_DN,  # noqa: E402
                   AD_COMPLIANCE_GROUP_DN, AD_GROUPS, AD_SIGNIN_GROUP_DN,
                   AD_USER_FILTER, BASE, GROUPS, SERVICE_DN, SERVICE_PW,
                   SIGNIN_GROUP_DN, USER_FILTER, Slapd, ad_dn, user_dn)

TIMEOUT_MS = 1000
SRCS = ["cdir.c", "cdir_conn.c", "cdir_group.c", "cdir_cache.c",
        "cdir_vcard.c"]

AD_ROLES = ["--set", "admin=" + AD_ADMIN_GROUP_DN,
            "--set", "compliance=" + AD_COMPLIANCE_GROUP_DN,
            "--set", "auditor=" + AD_AUDITOR_GROUP_DN]
AD_OPTS = ["--set", "name=sAMAccountName", "--set", "depth=4"] + AD_ROLES


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("cdir") / "cdir_cli")
    # CONCLAVE_SANITIZE=1: the library under ASan/UBSan as well
    san = (["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
            "-fno-sanitize-recover=undefined"]
           if os.environ.get("CONCLAVE_SANITIZE") == "1" else [])
    subprocess.run(
        ["cc", "-std=gnu99", "-O2", "-g", "-Wall", "-Werror"] + san + [
         "-I" + os.path.join(TOP, "ldap", "src"), "-o", out,
         os.path.join(TOP, "tests", "lib", "cdir_cli.c")]
        + [os.path.join(TOP, "ldap", "src", f) for f in SRCS]
        + ["-lldap", "-llber", "-lcrypto", "-lpthread"],
        check=True)
    return out


@pytest.fixture(scope="module")
def ad(tmp_path_factory):
    """The AD-shaped directory, with ldaps:// and StartTLS."""
    with Slapd(str(tmp_path_factory.mktemp("ad")), tls=True,
               flavor="ad") as s:
        yield s


@pytest.fixture
def own_ad(tmp_path):
    """An AD-shaped slapd the test may change, pause or stop."""
    s = Slapd(str(tmp_path / "ad"), flavor="ad")
    s.start()
    yield s
    s.stop()


def run(cli, uri, login, password, opts=(), filt=AD_USER_FILTER,
        group=AD_SIGNIN_GROUP_DN, stdin=None):
    r = subprocess.run(
        [cli, "--long"] + list(opts)
        + [uri, SERVICE_DN, SERVICE_PW, BASE, filt, group, str(TIMEOUT_MS)]
        + ([] if stdin is not None else [login, password]),
        input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, timeout=60)
    assert r.returncode != 3, r.stderr
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, \
        r.stderr
    return r.stdout.splitlines()


def one(cli, uri, login, password, opts=AD_OPTS, **kw):
    lines = run(cli, uri, login, password, opts, **kw)
    assert len(lines) == 1, lines
    return lines[0]


def fields(line):
    """"OK <dn> name=x roles=a,b, groups=3" -> ("OK", dn, {...})"""
    status, rest = line.split(" ", 1)
    parts = rest.split(" name=")
    kv = dict(p.split("=", 1) for p in ("name=" + parts[1]).split()
              if "=" in p)
    kv["roles"] = set(r for r in kv.get("roles", "").split(",") if r)
    kv["flags"] = set(p for p in parts[1].split() if "=" not in p)
    return status, parts[0], kv


# -- TLS -----------------------------------------------------------------------

def test_ldaps_verified(cli, ad):
    line = one(cli, ad.ldaps_uri, "alice", "alice-pw",
               AD_OPTS + ["--set", "ca=" + ad.ca_file])
    assert line.startswith("OK " + ad_dn("Alice Anderson")), line


def test_starttls_verified(cli, ad):
    line = one(cli, ad.uri, "alice", "alice-pw",
               AD_OPTS + ["--set", "ca=" + ad.ca_file,
                          "--set", "starttls=1"])
    assert line.startswith("OK " + ad_dn("Alice Anderson")), line


@pytest.mark.parametrize("starttls", [0, 1])
def test_wrong_ca_refused_with_clear_reason(cli, ad, starttls):
    uri = ad.uri if starttls else ad.ldaps_uri
    line = one(cli, uri, "alice", "alice-pw",
               AD_OPTS + ["--set", "ca=" + ad.wrong_ca_file,
                          "--set", "starttls=%d" % starttls])
    assert line.startswith("UNAVAILABLE TLS"), line
    assert uri in line and ad.wrong_ca_file in line, line


@pytest.mark.parametrize("starttls", [0, 1])
def test_name_mismatch_refused(cli, ad, starttls):
    # the certificate names IP 127.0.0.1 only
    uri = (ad.uri if starttls else ad.ldaps_uri).replace("127.0.0.1",
                                                         "localhost")
    line = one(cli, uri, "alice", "alice-pw",
               AD_OPTS + ["--set", "ca=" + ad.ca_file,
                          "--set", "starttls=%d" % starttls])
    assert line.startswith("UNAVAILABLE TLS"), line


def test_starttls_never_falls_back_to_plain(cli, tmp_path):
    # a server without TLS: StartTLS fails, nothing is sent in the clear
    with Slapd(str(tmp_path / "plain")) as plain:
        line = one(cli, plain.uri, "alice", "alice-pw", [
            "--set", "starttls=1"], filt=USER_FILTER, group=SIGNIN_GROUP_DN)
    assert line.startswith("UNAVAILABLE TLS (StartTLS)"), line


def test_verification_off_only_when_asked(cli, ad):
    line = one(cli, ad.ldaps_uri, "alice", "alice-pw",
               AD_OPTS + ["--set", "ca=" + ad.wrong_ca_file,
                          "--set", "insecure=1"])
    assert line.startswith("OK "), line


def test_tls_failover_to_good_server(cli, ad):
    uris = "%s %s" % (ad.ldaps_uri.replace("127.0.0.1", "localhost"),
                      ad.ldaps_uri)
    line = one(cli, uris, "bob", "bob-pw",
               AD_OPTS + ["--set", "ca=" + ad.ca_file])
    assert line.startswith("OK " + ad_dn("Bob Brown")), line


def test_tls_counted(cli, ad):
    lines = run(cli, ad.ldaps_uri, "alice", "alice-pw",
                AD_OPTS + ["--stats", "--set", "ca=" + ad.wrong_ca_file])
    assert "tls_errors=1" in lines[-1], lines


# -- AD-shaped directory: logins, names, disabled, groups, roles ----------------

@pytest.mark.parametrize("login,password,dn,name", [
    ("alice", "alice-pw", "Alice Anderson", "alice"),
    ("ALICE", "alice-pw", "Alice Anderson", "alice"),
    ("hhill", "hhill-pw", "Henry Hill", "hhill"),
    # userPrincipalName login; the JID name is still sAMAccountName
    ("henry.hill", "hhill-pw", "Henry Hill", "hhill"),
])
def test_ad_logins(cli, ad, login, password, dn, name):
    status, got_dn, kv = fields(one(cli, ad.uri, login, password))
    assert (status, got_dn, kv["name"]) == ("OK", ad_dn(dn), name)


@pytest.mark.parametrize("attr,name", [
    ("userPrincipalName", "henry.hill"), ("mail", "henry.hill"),
    ("sAMAccountName", "hhill")])
def test_name_attribute_mapping(cli, ad, attr, name):
    opts = AD_OPTS + ["--set", "name=" + attr]
    status, _, kv = fields(one(cli, ad.uri, "hhill", "hhill-pw", opts))
    assert (status, kv["name"]) == ("OK", name)


def test_disabled_account_refused_before_bind(cli, ad):
    # carol's userAccountControl is 514: ACCOUNTDISABLE
    assert one(cli, ad.uri, "carol", "carol-pw") == \
        "DENIED account disabled"


def test_disabled_excluded_by_filter_too(cli, ad):
    filt = ("(&(objectClass=user)(sAMAccountName=%u)"
            "(!(userAccountControl:1.2.840.113556.1.4.803:=2)))")
    assert one(cli, ad.uri, "carol", "carol-pw", filt=filt) == \
        "DENIED no such user"
    assert one(cli, ad.uri, "alice", "alice-pw", filt=filt).startswith("OK")


@pytest.mark.parametrize("mode", ["member", "memberof"])
@pytest.mark.parametrize("login,roles", [
    ("alice", {"user"}),                            # via Engineering
    ("erin", {"user"}),                             # Platform > Engineering
    ("frank", {"user", "admin", "auditor"}),        # admin via IT Ops
    ("grace", {"user", "compliance", "auditor"}),
])
def test_nested_groups_and_roles(cli, ad, mode, login, roles):
    line = one(cli, ad.uri, login, login + "-pw",
               AD_OPTS + ["--set", "mode=" + mode])
    status, _, kv = fields(line)
    assert status == "OK", line
    assert kv["roles"] == roles, line


@pytest.mark.parametrize("mode", ["member", "memberof"])
def test_depth_limit(cli, ad, mode):
    # erin is two levels below the sign-in group
    opts = AD_OPTS + ["--set", "mode=" + mode]
    assert one(cli, ad.uri, "erin", "erin-pw",
               opts + ["--set", "depth=1"]) == "DENIED not in group"
    assert one(cli, ad.uri, "erin", "erin-pw",
               opts + ["--set", "depth=2"]).startswith("OK")
    # no nesting at all: only direct members get in
    assert one(cli, ad.uri, "alice", "alice-pw",
               opts + ["--set", "depth=0"]) == "DENIED not in group"
    assert one(cli, ad.uri, "grace", "grace-pw",
               opts + ["--set", "depth=0"]).startswith("OK")


@pytest.mark.parametrize("mode", ["member", "memberof"])
def test_group_loop_terminates(cli, ad, mode):
    # dave is in Loop A; Loop A and Loop B contain each other
    start = time.monotonic()
    line = one(cli, ad.uri, "dave", "dave-pw",
               AD_OPTS + ["--set", "mode=" + mode, "--set", "depth=32"])
    assert line == "DENIED not in group"
    assert time.monotonic() - start < 10


def test_group_loop_member_signs_in(cli, own_ad):
    # put the loop inside the sign-in group: dave gets in, loop or not
    own_ad.modify("dn: %s\nchangetype: modify\nadd: member\nmember: %s\n"
                  % (AD_SIGNIN_GROUP_DN, "cn=Loop B," + AD_GROUPS))
    for mode in ("member", "memberof"):
        line = one(cli, own_ad.uri, "dave", "dave-pw",
                   AD_OPTS + ["--set", "mode=" + mode, "--set", "depth=32"])
        status, _, kv = fields(line)
        assert status == "OK" and kv["roles"] == {"user"}, line


def test_oversized_name_attribute(cli, ad):
    # oscar's sAMAccountName is 300 characters: refused, no crash
    assert one(cli, ad.uri, "oscar", "oscar-pw") == \
        "DENIED no usable sAMAccountName"


def test_oversized_attribute_value(cli, own_ad):
    # 200 kB in an attribute Conclave reads
    own_ad.modify("dn: %s\nchangetype: modify\nreplace: title\ntitle: %s\n"
                  "-\nreplace: department\ndepartment: %s\n"
                  % (ad_dn("Bob Brown"), "t" * 200000, "d" * 200000))
    assert one(cli, own_ad.uri, "bob", "bob-pw").startswith("OK")


@pytest.mark.parametrize("login", [
    "*", "a*", "alice)(sAMAccountName=*", "*)(|(objectClass=*",
    "alice\\2a", "(cn=*)", "henry.hill@example.com)(x=*"])
def test_ad_filter_injection(cli, ad, login):
    assert one(cli, ad.uri, login, "alice-pw") == "DENIED no such user"


def test_empty_password_never_binds(cli, ad):
    # RFC 4513 5.1.2: an empty password would be an unauthenticated bind
    assert one(cli, ad.uri, "alice", "") == "DENIED empty password"


# -- thousands of groups ---------------------------------------------------------

@pytest.fixture(scope="module")
def many_groups(tmp_path_factory):
    """The OpenLDAP demo directory with alice in 2,000 more groups."""
    s = Slapd(str(tmp_path_factory.mktemp("many")))
    s.start()
    # in batches: each ldapmodify run must finish within the harness's
    # 30 s on a loaded machine (memberof rewrites alice's entry per group)
    for lo in range(0, 2000, 200):
        s.modify("".join(
            "dn: cn=g%04d,ou=groups,%s\nchangetype: add\nobjectClass: "
            "groupOfNames\ncn: g%04d\nmember: %s\n\n"
            % (i, BASE, i, user_dn("alice")) for i in range(lo, lo + 200)))
    yield s
    s.stop()


@pytest.mark.parametrize("mode", ["member", "memberof"])
def test_user_in_thousands_of_groups(cli, many_groups, mode):
    opts = ["--set", "mode=" + mode, "--set", "depth=2",
            "--set", "admin=cn=conclave-admins," + GROUPS]
    start = time.monotonic()
    line = one(cli, many_groups.uri, "alice", "alice-pw", opts,
               filt=USER_FILTER, group=SIGNIN_GROUP_DN)
    elapsed = time.monotonic() - start
    status, _, kv = fields(line)
    assert status == "OK" and kv["roles"] == {"user"}, line
    assert int(kv["groups"]) >= 2000 or "truncated" in kv["flags"], line
    print("alice in %s groups (%s): %.2fs" % (kv["groups"], mode, elapsed))


# -- RFC 2696 paged results past a server size limit ---------------------------

SVC_LIMIT = ("dn: olcDatabase={1}mdb,cn=config\nchangetype: modify\n"
             "replace: olcLimits\nolcLimits: dn.exact=\"%s\" %%s "
             "time=unlimited\n" % SERVICE_DN)


@pytest.fixture
def ad_size_limit(many_groups):
    """AD's behaviour: a plain search stops at 300 entries (MaxPageSize
    is 1,000 there), a paged one may go on to the end."""
    many_groups.config_modify(
        SVC_LIMIT % "size.soft=300 size.hard=300 size.prtotal=unlimited")
    yield many_groups
    many_groups.config_modify(SVC_LIMIT % "size=unlimited")


def test_paged_group_search_past_the_size_limit(cli, ad_size_limit):
    opts = ["--set", "mode=member", "--set", "depth=0",
            "--set", "max=5000"]
    # unpaged, the server's limit truncates the (member=<dn>) search
    _, _, kv = fields(one(cli, ad_size_limit.uri, "alice", "alice-pw",
                          opts + ["--set", "page=-1"], filt=USER_FILTER,
                          group=SIGNIN_GROUP_DN))
    assert int(kv["groups"]) <= 300 and "truncated" in kv["flags"], kv
    # paged (200 a page), every one of alice's 2,000+ groups
    line = one(cli, ad_size_limit.uri, "alice", "alice-pw",
               opts + ["--set", "page=200"], filt=USER_FILTER,
               group=SIGNIN_GROUP_DN)
    status, _, kv = fields(line)
    assert status == "OK" and int(kv["groups"]) >= 2000, line
    assert "truncated" not in kv["flags"], line
    # the default page size (500) too
    _, _, kv = fields(one(cli, ad_size_limit.uri, "alice", "alice-pw", opts,
                          filt=USER_FILTER, group=SIGNIN_GROUP_DN))
    assert int(kv["groups"]) >= 2000 and "truncated" not in kv["flags"]


def test_paged_shared_group_read_past_the_size_limit(cli, ad_size_limit):
    dept = "cn=paged-dept," + GROUPS
    ad_size_limit.modify("dn: %s\nchangetype: add\nobjectClass: "
                         "groupOfNames\ncn: paged-dept\nmember: %s\n"
                         % (dept, user_dn("alice")))
    ad_size_limit.add_users("pd", 600, group=dept)
    args = ["--members", dept, "--set", "mode=memberof",
            "--set", "name=uid"]
    lines = run(cli, ad_size_limit.uri, None, None,
                args + ["--set", "page=-1"], filt=USER_FILTER,
                group=SIGNIN_GROUP_DN, stdin="")
    # unpaged, the server stops at 300: half the department is missing
    assert lines[-1] == "MEMBERS 300", lines[-1]
    lines = run(cli, ad_size_limit.uri, None, None,
                args + ["--set", "page=200"], filt=USER_FILTER,
                group=SIGNIN_GROUP_DN, stdin="")
    assert lines[-1] == "MEMBERS 601", lines[-1]


def test_group_limit_is_enforced(cli, many_groups):
    line = one(cli, many_groups.uri, "bob", "bob-pw",
               ["--set", "mode=memberof", "--set", "max=1"],
               filt=USER_FILTER, group=SIGNIN_GROUP_DN)
    # bob is in engineering and conclave-users: one of them is seen
    assert line.startswith("OK") or line == "DENIED not in group", line
    line = one(cli, many_groups.uri, "alice", "alice-pw",
               ["--set", "mode=memberof", "--set", "max=50"],
               filt=USER_FILTER, group=SIGNIN_GROUP_DN)
    if line.startswith("OK"):
        assert "truncated" in fields(line)[2]["flags"], line


# -- revalidation ---------------------------------------------------------------

def test_revalidate(cli, own_ad):
    alice, bob, erin = (ad_dn("Alice Anderson"), ad_dn("Bob Brown"),
                        ad_dn("Erin Evans"))
    lines = run(cli, own_ad.uri, None, None, AD_OPTS + ["--stdin"],
                stdin="!%s\n!%s\n!%s\n" % (alice, bob, erin))
    assert [ln.split()[0] for ln in lines] == ["OK", "OK", "OK"], lines

    # alice disabled, bob deleted, erin's team taken out of Engineering
    own_ad.modify(
        "dn: %s\nchangetype: modify\nreplace: userAccountControl\n"
        "userAccountControl: 514\n\n"
        "dn: %s\nchangetype: delete\n\n"
        "dn: cn=Engineering,%s\nchangetype: modify\ndelete: member\n"
        "member: cn=Platform,%s\n" % (alice, bob, AD_GROUPS, AD_GROUPS))

    lines = run(cli, own_ad.uri, None, None, AD_OPTS + ["--stdin"],
                stdin="!%s\n!%s\n!%s\n!%s\n"
                % (alice, bob, erin, ad_dn("Frank Fisher")))
    assert lines[0] == "DENIED account disabled", lines
    assert lines[1] == "DENIED no such user", lines
    assert lines[2] == "DENIED not in group", lines
    assert lines[3].startswith("OK"), lines


def test_revalidate_applies_user_filter(cli, own_ad):
    filt = ("(&(objectClass=user)(sAMAccountName=%u)"
            "(!(userAccountControl:1.2.840.113556.1.4.803:=2)))")
    own_ad.modify("dn: %s\nchangetype: modify\nreplace: userAccountControl\n"
                  "userAccountControl: 514\n" % ad_dn("Alice Anderson"))
    lines = run(cli, own_ad.uri, None, None,
                ["--set", "depth=4", "--stdin"], filt=filt,
                stdin="!%s\n" % ad_dn("Alice Anderson"))
    assert lines == ["DENIED no such user"], lines


def test_revalidate_unavailable_is_not_denied(cli, own_ad):
    own_ad.pause()
    try:
        lines = run(cli, own_ad.uri, None, None, AD_OPTS + ["--stdin"],
                    stdin="!%s\n" % ad_dn("Alice Anderson"))
    finally:
        own_ad.resume()
    # no answer is never a refusal (the reason may be a timeout or a
    # reset, depending on where the frozen server stopped)
    assert len(lines) == 1 and lines[0].startswith("UNAVAILABLE "), lines


# -- outage cache ------------------------------------------------------------------

def session(cli, uri, opts, script):
    """Feed cdir_cli --stdin line by line; callables run in between."""
    p = subprocess.Popen(
        [cli, "--long", "--stdin"] + opts
        + [uri, SERVICE_DN, SERVICE_PW, BASE, AD_USER_FILTER,
           AD_SIGNIN_GROUP_DN, str(TIMEOUT_MS)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    out = []
    try:
        for step in script:
            if callable(step):
                step()
                continue
            p.stdin.write(step + "\n")
            p.stdin.flush()
            out.append(p.stdout.readline().strip())
    finally:
        p.stdin.close()
        p.wait(timeout=30)
    return out


def test_outage_refuse_by_default(cli, own_ad):
    out = session(cli, own_ad.uri, AD_OPTS + ["--set", "ttl=60"], [
        "alice\talice-pw", own_ad.pause, "alice\talice-pw", own_ad.resume])
    assert out[0].startswith("OK"), out
    assert out[1] == "UNAVAILABLE timeout", out


def test_outage_cache(cli, own_ad):
    own_ad.fixed_port = own_ad.port
    opts = AD_OPTS + ["--set", "ttl=60", "--set", "outage=cache"]
    out = session(cli, own_ad.uri, opts, [
        "alice\talice-pw", "frank\tfrank-pw", own_ad.stop,
        "alice\talice-pw",          # cached: accepted, same roles
        "frank\tfrank-pw",
        "alice\twrong-pw",          # never a different password
        "bob\tbob-pw",              # never signed in: not cached
        own_ad.start,
        "alice\tWRONG", own_ad.stop,
        "alice\talice-pw"])         # a refusal dropped the entry
    assert out[0].startswith("OK") and out[1].startswith("OK"), out
    status, _, kv = fields(out[2])
    assert status == "OK" and "cached" in kv["flags"], out
    status, _, kv = fields(out[3])
    assert status == "OK" and kv["roles"] == {"user", "admin", "auditor"}
    assert out[4] == "UNAVAILABLE server down", out
    assert out[5] == "UNAVAILABLE server down", out
    assert out[6] == "DENIED invalid credentials", out
    assert out[7] == "UNAVAILABLE server down", out


def test_outage_cache_ttl(cli, own_ad):
    opts = AD_OPTS + ["--set", "ttl=1", "--set", "outage=cache"]
    out = session(cli, own_ad.uri, opts, [
        "alice\talice-pw", own_ad.pause, lambda: time.sleep(2.2),
        "alice\talice-pw", own_ad.resume])
    assert out[0].startswith("OK"), out
    assert out[1] == "UNAVAILABLE timeout", out


# -- group members (shared rosters) ----------------------------------------------

@pytest.mark.parametrize("mode", ["member", "memberof"])
def test_group_members(cli, ad, mode):
    def members(group):
        lines = run(cli, ad.uri, None, None,
                    ["--members", "cn=%s,%s" % (group, AD_GROUPS),
                     "--set", "mode=" + mode,
                     "--set", "name=sAMAccountName"], stdin="")
        assert lines[-1].startswith("MEMBERS "), lines
        return dict(ln[len("MEMBER "):].split("\t")
                    for ln in lines if ln.startswith("MEMBER "))

    # oscar's name is too long, Platform is a group, not a user
    assert members("Engineering") == {
        "alice": "Alice Anderson", "bob": "Bob Brown",
        "hhill": "Henry Hill"}
    # carol is disabled
    assert members("Sales") == {}
    assert members("No Such Group") == {}


def test_group_members_thousand(cli, many_groups):
    # conclave-users plus 1,000 more members (no memberOf size limit for
    # the service account in the harness)
    many_groups.add_users("m", 1000)
    start = time.monotonic()
    lines = run(cli, many_groups.uri, None, None,
                ["--members", SIGNIN_GROUP_DN, "--set", "mode=memberof",
                 "--set", "name=uid"], filt=USER_FILTER,
                group=SIGNIN_GROUP_DN, stdin="")
    elapsed = time.monotonic() - start
    assert lines[-1] == "MEMBERS 1005", lines[-1]
    print("1,005 members read in %.3fs" % elapsed)
