"""ldap/ library against a real slapd: search + group compare + bind.

Builds tests/lib/cdir_cli.c with ldap/src/cdir.c into a temp dir and runs it
against a private slapd (tests/lib/slapd.py).  Covers the sign-in outcomes,
filter injection, a frozen (SIGSTOP) and a stopped server, stale pooled
connections after a restart, and concurrent callers.

    /usr/bin/python3 -m pytest tests/integration/test_ldap_lib.py
"""

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(TOP, "tests", "lib"))

from ports import free_port  # noqa: E402
from slapd import (BASE, SERVICE_DN, SERVICE_PW, SIGNIN_GROUP_DN,  # noqa
                   USER_FILTER, USERS, Slapd, user_dn)

TIMEOUT_MS = 500


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("cdir") / "cdir_cli")
    subprocess.run(
        ["cc", "-std=gnu99", "-O2", "-g", "-Wall", "-Werror",
         "-I" + os.path.join(TOP, "ldap", "src"), "-o", out,
         os.path.join(TOP, "tests", "lib", "cdir_cli.c"),
         os.path.join(TOP, "ldap", "src", "cdir.c"),
         os.path.join(TOP, "ldap", "src", "cdir_group.c"),
         os.path.join(TOP, "ldap", "src", "cdir_cache.c"),
         os.path.join(TOP, "ldap", "src", "cdir_conn.c"),
         os.path.join(TOP, "ldap", "src", "cdir_vcard.c"),
         "-lldap", "-llber", "-lcrypto", "-lpthread"],
        check=True)
    return out


@pytest.fixture(scope="module")
def ldap(tmp_path_factory):
    """One slapd for the read-only cases of this file."""
    with Slapd(str(tmp_path_factory.mktemp("slapd"))) as s:
        yield s


@pytest.fixture
def own_ldap(tmp_path):
    """A slapd that the test may pause, stop or restart."""
    s = Slapd(str(tmp_path / "slapd"))
    s.start()
    yield s
    s.stop()


def config(uri, group=SIGNIN_GROUP_DN, bind_pw=SERVICE_PW):
    return [uri, SERVICE_DN, bind_pw, BASE, USER_FILTER, group,
            str(TIMEOUT_MS)]


def auth(cli, uri, login, password, group=SIGNIN_GROUP_DN,
         bind_pw=SERVICE_PW, opts=()):
    """Run one cdir_cli; returns (stdout lines, seconds taken)."""
    start = time.monotonic()
    r = subprocess.run([cli] + list(opts)
                       + config(uri, group, bind_pw) + [login, password],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=30)
    elapsed = time.monotonic() - start
    assert r.returncode != 3, r.stderr.decode()
    return r.stdout.decode().splitlines(), elapsed


def one(cli, uri, login, password, **kw):
    lines, _ = auth(cli, uri, login, password, **kw)
    assert len(lines) == 1, lines
    return lines[0]


class Session:
    """cdir_cli --stdin: one cdir_t, so pooled connections persist."""

    def __init__(self, cli, uri):
        self.proc = subprocess.Popen([cli, "--stdin"] + config(uri),
                                     stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def auth(self, login="alice", password="alice-pw"):
        start = time.monotonic()
        self.proc.stdin.write("%s\t%s\n" % (login, password))
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().strip()
        return line, time.monotonic() - start

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture
def session(cli):
    sessions = []

    def make(uri):
        s = Session(cli, uri)
        sessions.append(s)
        return s

    yield make
    for s in sessions:
        s.close()


# -- outcomes ------------------------------------------------------------------

def test_alice_ok(cli, ldap):
    assert one(cli, ldap.uri, "alice", "alice-pw") == \
        "OK " + user_dn("alice")


@pytest.mark.parametrize("uid", ["alice", "bob", "carol", "erin", "frank"])
def test_signin_group_members_ok(cli, ldap, uid):
    assert one(cli, ldap.uri, uid, USERS[uid]) == "OK " + user_dn(uid)


def test_wrong_password(cli, ldap):
    assert one(cli, ldap.uri, "alice", "bob-pw") == \
        "DENIED invalid credentials"


def test_unknown_user(cli, ldap):
    assert one(cli, ldap.uri, "mallory", "x") == "DENIED no such user"


def test_dave_not_in_group(cli, ldap):
    assert one(cli, ldap.uri, "dave", "dave-pw") == "DENIED not in group"


def test_no_group_restriction(cli, ldap):
    assert one(cli, ldap.uri, "dave", "dave-pw", group="") == \
        "OK " + user_dn("dave")


def test_missing_group_denies(cli, ldap):
    group = "cn=no-such-group,ou=groups," + BASE
    assert one(cli, ldap.uri, "alice", "alice-pw", group=group) == \
        "DENIED not in group"


def test_empty_password_never_sent(cli, ldap):
    assert one(cli, ldap.uri, "alice", "") == "DENIED empty password"


@pytest.mark.parametrize("login", [
    "*", "al*", "alice)(uid=*", "\\", "*)(|(uid=*", "alice\\2a",
    "alice)", "(uid=alice)", "alice\\",
])
def test_filter_metacharacters_are_literal(cli, ldap, login):
    # unescaped, "*" would match six users ("ambiguous user") and the
    # others would be filter errors or alice herself
    assert one(cli, ldap.uri, login, "alice-pw") == "DENIED no such user"


def test_ambiguous_user(cli, ldap):
    r = subprocess.run(
        [cli, ldap.uri, SERVICE_DN, SERVICE_PW, BASE,
         "(|(uid=%u)(uid=bob))", "", str(TIMEOUT_MS), "alice", "alice-pw"],
        stdout=subprocess.PIPE, timeout=30)
    assert r.stdout.decode().strip() == "DENIED ambiguous user"


def test_wrong_service_password_is_unavailable(cli, ldap):
    line = one(cli, ldap.uri, "alice", "alice-pw", bind_pw="nope")
    assert line.startswith("UNAVAILABLE service account rejected"), line


def test_failover_to_second_uri(cli, ldap):
    uris = "ldap://127.0.0.1:%d %s" % (free_port(), ldap.uri)
    assert one(cli, uris, "alice", "alice-pw") == "OK " + user_dn("alice")


@pytest.fixture
def hangup_uri():
    """A server that accepts TCP connections and closes them at once."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    srv.settimeout(0.05)
    done = threading.Event()

    def serve():
        while not done.is_set():
            try:
                conn, _ = srv.accept()
            except socket.timeout:
                continue
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield "ldap://127.0.0.1:%d" % srv.getsockname()[1]
    done.set()
    t.join()
    srv.close()


def test_failover_past_server_that_hangs_up(cli, ldap, hangup_uri):
    uris = "%s %s" % (hangup_uri, ldap.uri)
    lines, _ = auth(cli, uris, "alice", "alice-pw",
                    opts=["--threads", "2", "--repeat", "3"])
    assert set(lines) == {"OK " + user_dn("alice")}


def test_concurrent_threads(cli, ldap):
    # more threads than pooled connections: extras are opened and closed
    lines, _ = auth(cli, ldap.uri, "bob", "bob-pw",
                    opts=["--threads", "8", "--repeat", "25", "--pool", "2"])
    assert len(lines) == 200
    assert set(lines) == {"OK " + user_dn("bob")}


# -- unavailable directory ------------------------------------------------------

def test_paused_server_times_out(cli, own_ldap):
    # SIGSTOP: the kernel still accepts TCP connections, nobody answers
    own_ldap.pause()
    try:
        lines, elapsed = auth(cli, own_ldap.uri, "alice", "alice-pw")
    finally:
        own_ldap.resume()
    assert lines == ["UNAVAILABLE timeout"]
    assert elapsed < 4 * TIMEOUT_MS / 1000.0, elapsed
    assert one(cli, own_ldap.uri, "alice", "alice-pw") == \
        "OK " + user_dn("alice")


def test_paused_server_with_pooled_connections(session, own_ldap):
    s = session(own_ldap.uri)
    assert s.auth()[0] == "OK " + user_dn("alice")

    own_ldap.pause()
    try:
        for _ in range(2):
            line, elapsed = s.auth()
            assert line == "UNAVAILABLE timeout"
            assert elapsed < 4 * TIMEOUT_MS / 1000.0, elapsed
    finally:
        own_ldap.resume()

    # the timed-out connections were discarded, not reused
    assert s.auth()[0] == "OK " + user_dn("alice")


def test_stopped_server(cli, own_ldap):
    own_ldap.stop()
    lines, elapsed = auth(cli, own_ldap.uri, "alice", "alice-pw")
    assert lines == ["UNAVAILABLE server down"]
    assert elapsed < 4 * TIMEOUT_MS / 1000.0, elapsed


def test_restart_retries_stale_pooled_connection(session, own_ldap):
    own_ldap.fixed_port = own_ldap.port      # come back on the same URI
    s = session(own_ldap.uri)
    assert s.auth()[0] == "OK " + user_dn("alice")

    own_ldap.stop()
    own_ldap.start()

    # the pooled connections are dead; one retry on a fresh one succeeds
    assert s.auth()[0] == "OK " + user_dn("alice")
    assert s.auth("bob", "bob-pw")[0] == "OK " + user_dn("bob")


def test_stopped_then_back(session, own_ldap):
    own_ldap.fixed_port = own_ldap.port
    s = session(own_ldap.uri)
    assert s.auth()[0] == "OK " + user_dn("alice")

    own_ldap.stop()
    line, elapsed = s.auth()
    assert line == "UNAVAILABLE server down"
    assert elapsed < 4 * TIMEOUT_MS / 1000.0, elapsed

    own_ldap.start()
    assert s.auth()[0] == "OK " + user_dn("alice")
