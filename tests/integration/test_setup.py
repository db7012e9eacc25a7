"""conclavectl setup against the harness's real slapd and mariadbd.

Non-interactive runs (flags, an answers file) write a configuration
that a real nginx starts from: slixmpp users sign in and chat, and the
message lands in MariaDB.  Wrong answers (LDAP password, unreachable or
misnamed database, bad certificates, a missing answer) give a clear
message and write nothing.  An interactive run is driven through tmux:
a wrong password is asked again, then the dialogue completes.
"""

import hashlib
import os
import re
import secrets
import shlex
import socket
import ssl
import subprocess
import time
import urllib.request
import warnings

import pytest

from appliance import conclavectl_path, env_sanitize
from nginx import asan_runtime
from ports import free_port
from slapd import BASE, SERVICE_DN, SERVICE_PW, SIGNIN_GROUP_DN
from slixclient import SlixPool

NGINX = "/usr/sbin/nginx"


@pytest.fixture(scope="module")
def ctl():
    path = conclavectl_path(env_sanitize())
    assert os.path.isfile(path), "run make build first"
    return path


def new_database(appliance):
    """An empty database of its own: the appliance's nginx ships into
    "conclave" as node "local" too."""
    db = "setup_" + secrets.token_hex(4)
    m = appliance.mariadb
    m.query("CREATE DATABASE `%s`; GRANT ALL ON `%s`.* TO "
            "'%s'@'127.0.0.1', '%s'@'localhost';"
            % (db, db, m.user, m.user))
    return db


def secret_file(tmp_path, name, value):
    p = tmp_path / name
    p.write_text(value + "\n")
    return str(p)


def answers(appliance, tmp_path, conclave_module, db=None, **over):
    a = {
        "domain": "example.com",
        "ldap-uri": appliance.ldap.uri,
        "ldap-bind-dn": SERVICE_DN,
        "ldap-password-file": secret_file(tmp_path, "ldap.pw", SERVICE_PW),
        "ldap-base": "ou=people," + BASE,
        "ldap-group": SIGNIN_GROUP_DN,
        "db": "mariadb://%s@127.0.0.1:%d/%s" % (
            appliance.mariadb.user, appliance.mariadb.port,
            db or new_database(appliance)),
        "db-password-file": secret_file(tmp_path, "db.pw",
                                        appliance.mariadb.password),
        "prefix": str(tmp_path / "root"),
        "module": conclave_module,
        "user": "root",
        "https-listen": "127.0.0.1:%d" % free_port(),
        "xmpp-listen": "127.0.0.1:%d" % free_port(),
        "xmpps-listen": "127.0.0.1:%d" % free_port(),
    }
    a.update(over)
    return a


def run_setup(ctl, a, *extra):
    args = [ctl, "setup", "--non-interactive"]
    for k, v in a.items():
        if v is not None:
            args += ["--" + k, v]
    return checked(subprocess.run(args + list(extra), capture_output=True,
                                  text=True, stdin=subprocess.DEVNULL,
                                  timeout=120, env=nginx_env()))


SAN_REPORT = re.compile(r"ERROR: \w+Sanitizer|runtime error:")


def checked(r):
    """No sanitizer report from conclavectl (ASan build: leaks at exit of
    a one-shot CLI are not checked, as for the other conclavectl tests)."""
    assert not SAN_REPORT.search(r.stderr), r.stderr
    return r


def conf_dir(a):
    return os.path.join(a["prefix"], "etc", "conclave")


def tree(path):
    """{relative path: sha256} of every file under path."""
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, path)] = hashlib.sha256(
                    fh.read()).hexdigest()
    return out


def nginx_env():
    env = dict(os.environ)
    if env_sanitize():
        env["LD_PRELOAD"] = asan_runtime()
        env["ASAN_OPTIONS"] = "detect_leaks=0"
    return env


class Started:
    """nginx run from the configuration setup wrote; stopped by PID."""

    def __init__(self, a):
        self.conf = os.path.join(conf_dir(a), "nginx.conf")
        self.pidfile = os.path.join(a["prefix"], "run", "conclave",
                                    "nginx.pid")
        self.errlog = os.path.join(a["prefix"], "var", "log", "conclave",
                                   "error.log")

    def __enter__(self):
        r = subprocess.run([NGINX, "-c", self.conf], env=nginx_env(),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        deadline = time.time() + 30
        while not os.path.exists(self.pidfile):
            assert time.time() < deadline, "no pid file: " + open(
                self.errlog).read()[-3000:]
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        with open(self.pidfile) as f:
            pid = int(f.read())
        os.kill(pid, 3)                           # SIGQUIT: graceful
        deadline = time.time() + 20
        while os.path.exists("/proc/%d" % pid) and time.time() < deadline:
            time.sleep(0.05)
        with open(self.errlog) as f:
            log = f.read()
        assert "[alert]" not in log and "[emerg]" not in log, log[-3000:]


def tls_version(port, version):
    """Handshake with exactly one TLS version; the version agreed."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    # the client itself must be able to offer TLS 1.1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ctx.maximum_version = version
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with ctx.wrap_socket(s) as t:
            return t.version()


def test_non_interactive_setup_gives_a_working_appliance(
        appliance, tmp_path, ctl, conclave_module):
    a = answers(appliance, tmp_path, conclave_module, **{"self-signed":
                                                         "yes"})
    r = run_setup(ctl, a)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "checkpoint verifier key" in r.stdout
    assert "schema: " in r.stdout or "applied" in r.stdout, r.stdout

    d = conf_dir(a)
    files = tree(d)
    for f in ("nginx.conf", "ldap.secret", "db.secret", "audit.key",
              "audit.vkey", "tls/cert.pem", "tls/key.pem",
              "hardening.conf", "stream-hardening.conf",
              "conclave-config.js"):
        assert f in files, (f, sorted(files))
    assert not [f for f in os.listdir(d) if f.startswith(".setup-")]
    for f in ("ldap.secret", "db.secret", "audit.key", "tls/key.pem"):
        assert os.stat(os.path.join(d, f)).st_mode & 0o077 == 0, f
    with open(os.path.join(d, "ldap.secret")) as f:
        assert f.read() == SERVICE_PW
    conf = open(os.path.join(d, "nginx.conf")).read()
    assert "conclave_ldap_group \"%s\";" % SIGNIN_GROUP_DN in conf
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in open(
        os.path.join(d, "hardening.conf")).read()
    assert 'domain: "example.com"' in open(
        os.path.join(d, "conclave-config.js")).read()

    # the schema is there: conclavectl reads the same file nginx does
    r = checked(subprocess.run([ctl, "--config",
                                os.path.join(d, "nginx.conf"), "status"],
                               capture_output=True, text=True,
                               env=nginx_env()))
    assert r.returncode == 0, r.stderr

    https = int(a["https-listen"].rsplit(":", 1)[1])
    xmpp = int(a["xmpp-listen"].rsplit(":", 1)[1])
    db = a["db"].rsplit("/", 1)[1]
    with Started(a):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with urllib.request.urlopen("https://127.0.0.1:%d/health" % https,
                                    context=ctx, timeout=10) as resp:
            assert resp.status == 200
            assert resp.read() == b"ok\n"
            assert resp.headers["Strict-Transport-Security"].startswith(
                "max-age=")
            assert resp.headers["Server"] == "nginx"      # server_tokens off
        # TLS 1.2+ (RFC 7590 section 3.1): a TLS 1.1 client is refused
        # by the server (its protocol_version alert), on HTTPS and on
        # direct TLS; TLS 1.2 is accepted
        xmpps = int(a["xmpps-listen"].rsplit(":", 1)[1])
        for port in (https, xmpps):
            assert tls_version(port, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
            with pytest.raises(ssl.SSLError) as e:
                tls_version(port, ssl.TLSVersion.TLSv1_1)
            assert "PROTOCOL_VERSION" in str(e.value).upper(), e.value

        with SlixPool() as pool:
            alice = pool.client("alice@example.com/setup", "alice-pw", xmpp)
            bob = pool.client("bob@example.com/setup", "bob-pw", xmpp)
            alice.message("bob@example.com/setup", "set up and running")
            bob.wait_message(lambda m: m["body"] == "set up and running")

        deadline = time.time() + 60
        rows = []
        while time.time() < deadline and not rows:
            rows = appliance.mariadb.query(
                "SELECT actor_user, peer FROM audit_record WHERE "
                "event = 'message' AND body = 'set up and running'",
                database=db)
            time.sleep(0.2)
        assert rows, "the message's record never reached MariaDB"


def test_answers_file_and_rerun_keep_the_key(appliance, tmp_path, ctl,
                                             conclave_module):
    a = answers(appliance, tmp_path, conclave_module)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                    "-nodes", "-days", "30", "-subj", "/CN=example.com",
                    "-keyout", str(tmp_path / "k.pem"),
                    "-out", str(tmp_path / "c.pem")],
                   check=True, capture_output=True)
    a["tls-cert"] = str(tmp_path / "c.pem")
    a["tls-key"] = str(tmp_path / "k.pem")
    path = tmp_path / "answers"
    path.write_text("# conclave answers\n" + "".join(
        "%s = %s\n" % (k.replace("-", "_"), v) for k, v in a.items()))

    def setup():
        return checked(subprocess.run(
            [ctl, "setup", "--answers", str(path)], capture_output=True,
            text=True, stdin=subprocess.DEVNULL, timeout=120,
            env=nginx_env()))

    r = setup()
    assert r.returncode == 0, r.stderr
    d = conf_dir(a)
    first = tree(d)
    assert first["tls/cert.pem"] == hashlib.sha256(
        (tmp_path / "c.pem").read_bytes()).hexdigest()

    r = setup()
    assert r.returncode == 0, r.stderr
    second = tree(d)
    assert second["audit.key"] == first["audit.key"]
    assert second["audit.vkey"] == first["audit.vkey"]
    assert "nginx.conf.bak" in second


@pytest.mark.parametrize("case,over,message", [
    ("wrong LDAP password", {"ldap-password-file": "WRONG"},
     "refused the password of \"%s\" (invalid credentials)" % SERVICE_DN),
    ("LDAP down", {"ldap-uri": "ldap://127.0.0.1:%d" % free_port()},
     "cannot reach ldap://127.0.0.1:"),
    ("no such base", {"ldap-base": "ou=nobody," + BASE},
     "base \"ou=nobody,%s\" does not exist" % BASE),
    ("no such group", {"ldap-group": "cn=nogroup," + BASE},
     "sign-in group \"cn=nogroup,%s\" does not exist" % BASE),
    ("MariaDB unreachable",
     {"db": "mariadb://conclave@127.0.0.1:%d/x" % free_port()},
     "cannot reach MariaDB at 127.0.0.1:"),
    ("wrong MariaDB password", {"db-password-file": "WRONG"},
     "MariaDB refused user \"conclave\""),
    ("MariaDB host name", {"db": "mariadb://conclave@db.example.com/x"},
     "must be an IP address"),
    ("bad DSN", {"db": "mysql://x"}, "expected mariadb://"),
    ("missing answer", {"ldap-group": None},
     "missing answer: --ldap-group"),
    ("domain", {"domain": "exa mple.com"}, "nginx.conf cannot take"),
    ("filter without %u", {"ldap-filter": "(uid=alice)"}, "has no %u"),
])
def test_bad_answers_write_nothing(appliance, tmp_path, ctl,
                                   conclave_module, case, over, message):
    a = answers(appliance, tmp_path, conclave_module,
                **{"self-signed": "yes"})
    for k, v in over.items():
        if v == "WRONG":
            v = secret_file(tmp_path, "wrong.pw", "not-the-password")
        a[k] = v
    r = run_setup(ctl, a)
    assert r.returncode == 2, (case, r.stdout, r.stderr)
    assert message in r.stderr, (case, r.stderr)
    assert "nothing was written" in r.stderr or "missing" in r.stderr
    assert tree(a["prefix"]) == {}, case


def test_bad_certificates_write_nothing(appliance, tmp_path, ctl,
                                        conclave_module):
    for n in ("a", "b"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                        "-nodes", "-days", "30", "-subj", "/CN=x",
                        "-keyout", str(tmp_path / ("k%s.pem" % n)),
                        "-out", str(tmp_path / ("c%s.pem" % n))],
                       check=True, capture_output=True)
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    cases = [
        ({"tls-cert": str(tmp_path / "junk.pem"),
          "tls-key": str(tmp_path / "ka.pem")}, "is not a PEM certificate"),
        ({"tls-cert": str(tmp_path / "ca.pem"),
          "tls-key": str(tmp_path / "kb.pem")}, "does not belong to"),
        ({"tls-cert": str(tmp_path / "ca.pem"),
          "tls-key": str(tmp_path / "junk.pem")}, "is not an unencrypted"),
        ({"tls-cert": str(tmp_path / "missing.pem"),
          "tls-key": str(tmp_path / "ka.pem")}, "No such file"),
    ]
    for over, message in cases:
        a = answers(appliance, tmp_path, conclave_module, **over)
        r = run_setup(ctl, a)
        assert r.returncode == 2 and message in r.stderr, (over, r.stderr)
        assert tree(a["prefix"]) == {}


def test_a_failed_rerun_keeps_the_old_configuration(
        appliance, tmp_path, ctl, conclave_module):
    a = answers(appliance, tmp_path, conclave_module,
                **{"self-signed": "yes"})
    assert run_setup(ctl, a).returncode == 0
    before = tree(conf_dir(a))
    a["ldap-password-file"] = secret_file(tmp_path, "bad", "nope")
    r = run_setup(ctl, a)
    assert r.returncode == 2 and "invalid credentials" in r.stderr
    assert tree(conf_dir(a)) == before


@pytest.mark.parametrize("line,directive", [
    ("    conclave_max_depth banana;", "conclave_max_depth"),  # bad value
    ("    conclave_max_depth 10 20;", "conclave_max_depth"),   # arity
    ("    conclave_no_such_thing on;", "conclave_no_such_thing"),
    ("    conclave_audit_dir;", "conclave_audit_dir"),        # no value
    ("    conclave_max_depth 10", "conclave_max_depth"),      # no ";"
])
def test_corrupt_config_names_directive_and_line(appliance, tmp_path, ctl,
                                                 conclave_module, line,
                                                 directive):
    a = answers(appliance, tmp_path, conclave_module,
                **{"self-signed": "yes"})
    assert run_setup(ctl, a).returncode == 0
    path = os.path.join(conf_dir(a), "nginx.conf")
    lines = open(path).read().split("\n")
    at = next(i for i, l in enumerate(lines) if "conclave_domain" in l)
    lines.insert(at + 1, line)
    with open(path, "w") as f:
        f.write("\n".join(lines))
    r = subprocess.run([NGINX, "-t", "-c", path], capture_output=True,
                       text=True, env=nginx_env())
    assert r.returncode != 0
    # a missing ";" runs the directive into the next line, which nginx
    # names (the directive still is ours)
    where = at + 2 if line.endswith(";") else at + 3
    assert re.search(r'"%s".*in %s:%d$' % (directive, re.escape(path),
                                           where), r.stderr, re.M), r.stderr


class Tmux:
    """A private tmux server (its own socket), killed by that socket."""

    def __init__(self, tmp_path):
        self.sock = str(tmp_path / "tmux.sock")

    def run(self, *args):
        return subprocess.run(["tmux", "-S", self.sock] + list(args),
                              capture_output=True, text=True, timeout=10)

    def screen(self):
        return self.run("capture-pane", "-p", "-J", "-S", "-200",
                        "-t", "setup").stdout

    def wait(self, text, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            s = self.screen()
            if text in s:
                return s
            time.sleep(0.1)
        raise AssertionError("no %r on screen:\n%s" % (text, self.screen()))

    def answer(self, prompt, text):
        self.wait(prompt)
        self.run("send-keys", "-t", "setup", "-l", text)
        self.run("send-keys", "-t", "setup", "Enter")

    def close(self):
        self.run("kill-server")


def test_interactive_setup_in_a_terminal(appliance, tmp_path, ctl,
                                         conclave_module):
    db = new_database(appliance)
    prefix = str(tmp_path / "root")
    args = [ctl, "setup", "--prefix", prefix, "--module", conclave_module,
            "--user", "root",
            "--https-listen", "127.0.0.1:%d" % free_port(),
            "--xmpp-listen", "127.0.0.1:%d" % free_port(),
            "--xmpps-listen", "127.0.0.1:%d" % free_port()]
    cmd = " ".join(shlex.quote(x) for x in args) + \
        "; echo SETUP-EXIT=$?; sleep 60"
    t = Tmux(tmp_path)
    env = nginx_env()
    env.pop("TMUX", None)
    try:
        r = subprocess.run(["tmux", "-S", t.sock, "new-session", "-d",
                            "-s", "setup", "-x", "200", "-y", "60", cmd],
                           env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        t.answer("XMPP domain", "example.com")
        t.answer("LDAP URL", appliance.ldap.uri)
        t.answer("service account DN", SERVICE_DN)
        t.answer("service account password", "wrong-password")
        t.wait("invalid credentials")
        # asked again, the old answers offered as defaults
        t.answer("LDAP URL (ldap://IP:389) [%s]" % appliance.ldap.uri, "")
        t.answer("service account DN [%s]" % SERVICE_DN, "")
        screen = t.answer("service account password", SERVICE_PW)
        t.answer("LDAP base of the user accounts", "ou=people," + BASE)
        t.answer("DN of the group allowed to sign in", SIGNIN_GROUP_DN)
        t.answer("MariaDB (mariadb://",
                 "mariadb://%s@127.0.0.1:%d/%s" % (
                     appliance.mariadb.user, appliance.mariadb.port, db))
        t.answer("MariaDB password", appliance.mariadb.password)
        t.answer("TLS certificate file", "self-signed")
        screen = t.wait("SETUP-EXIT=")
        assert "SETUP-EXIT=0" in screen, screen
        assert "configured %s/etc/conclave for example.com" % prefix in screen
        # passwords are never echoed
        assert SERVICE_PW not in screen and "wrong-password" not in screen
        assert appliance.mariadb.password not in screen
    finally:
        t.close()
    files = tree(os.path.join(prefix, "etc", "conclave"))
    assert {"nginx.conf", "audit.key", "tls/cert.pem"} <= set(files)
    r = subprocess.run([NGINX, "-t", "-q", "-c",
                        os.path.join(prefix, "etc", "conclave",
                                     "nginx.conf")],
                       capture_output=True, text=True, env=nginx_env())
    assert r.returncode == 0, r.stderr


def test_backup_schema(appliance, tmp_path, ctl, conclave_module):
    a = answers(appliance, tmp_path, conclave_module,
                **{"self-signed": "yes"})
    assert run_setup(ctl, a).returncode == 0
    out = tmp_path / "backups"
    r = checked(subprocess.run(
        [ctl, "--config", os.path.join(conf_dir(a), "nginx.conf"),
         "backup-schema", "--dir", str(out)], capture_output=True,
        text=True, env=nginx_env()))
    assert r.returncode == 0, r.stderr
    files = os.listdir(out)
    assert len(files) == 1 and re.fullmatch(r"schema-\d{8}T\d{6}Z\.sql",
                                            files[0]), files
    assert os.stat(out / files[0]).st_mode & 0o077 == 0
    text = (out / files[0]).read_text()
    for table in ("audit_record", "audit_journal", "audit_checkpoint",
                  "schema_version"):
        assert "CREATE TABLE `%s`" % table in text, table
    assert re.search(r"-- schema_version 1 \S+ applied", text), text[-500:]


def test_backup_schema_database_down(appliance, tmp_path, ctl,
                                     conclave_module):
    a = answers(appliance, tmp_path, conclave_module,
                **{"self-signed": "yes"})
    assert run_setup(ctl, a).returncode == 0
    path = os.path.join(conf_dir(a), "nginx.conf")
    text = open(path).read()
    dead = free_port()
    text = re.sub(r"conclave_audit_db_port \d+;",
                  "conclave_audit_db_port %d;" % dead, text)
    open(path, "w").write(text)
    r = checked(subprocess.run(
        [ctl, "--config", path, "backup-schema", "--dir",
         str(tmp_path / "b")], capture_output=True, text=True,
        env=nginx_env()))
    assert r.returncode == 2, r.stderr
    assert "127.0.0.1" in r.stderr and str(dead) in r.stderr, r.stderr
    assert not os.path.exists(tmp_path / "b") or not os.listdir(
        tmp_path / "b")
