"""nginx configured the way the packages configure it, for `make demo`.

PackagedNginx renders nothing itself: `conclavectl setup` writes the
configuration from packaging/conf/nginx.conf.in (the template the
conclave package installs) into <workdir>/root/etc/conclave, exactly as
it does in /etc/conclave on an installed appliance, with the module from
the build tree and the demo's slapd and mariadbd as answers.  The demo
is then what customers get; the integration tests keep
tests/lib/nginx.conf.in, which they tune per test.
"""

import os
import subprocess
import time

from nginx import NGINX, Nginx, NginxError
from slapd import BASE, SERVICE_DN, SIGNIN_GROUP_DN

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


class PackagedNginx(Nginx):
    """Nginx (tests/lib/nginx.py) with the package's configuration."""

    migrates_itself = True          # conclavectl setup runs the migration

    def __init__(self, workdir, module_so, ctl, **kwargs):
        super().__init__(workdir, module_so, **kwargs)
        self.ctl = ctl
        self.root = os.path.join(self.workdir, "root")
        etc = os.path.join(self.root, "etc", "conclave")
        self.conf_path = os.path.join(etc, "nginx.conf")
        self.error_log_path = os.path.join(self.root, "var", "log",
                                           "conclave", "error.log")
        self.cert = os.path.join(etc, "tls", "cert.pem")
        self.key = os.path.join(etc, "tls", "key.pem")

    @property
    def audit_dir(self):
        return os.path.join(self.root, "var", "lib", "conclave", "audit")

    @property
    def audit_key(self):
        return os.path.join(self.root, "etc", "conclave", "audit.key")

    def render_conf(self):
        """conclavectl setup, non-interactive; keeps the certificate and
        the signing key of an earlier start."""
        os.makedirs(os.path.join(self.workdir, "logs"), exist_ok=True)
        secrets = os.path.join(self.workdir, "answers")
        os.makedirs(secrets, mode=0o700, exist_ok=True)
        for name, value in (("ldap.pw", self.ldap.service_pw),
                            ("db.pw", self.mariadb.password)):
            path = os.path.join(secrets, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(value + "\n")
        args = [self.ctl, "setup", "--non-interactive",
                "--prefix", self.root, "--module", self.module_so,
                "--user", "root", "--domain", self.domain,
                "--ldap-uri", self.ldap.uri, "--ldap-bind-dn", SERVICE_DN,
                "--ldap-password-file", os.path.join(secrets, "ldap.pw"),
                "--ldap-base", "ou=people," + BASE,
                "--ldap-group", SIGNIN_GROUP_DN,
                "--admin-group", "cn=conclave-admins,ou=groups," + BASE,
                "--compliance-group",
                "cn=conclave-compliance,ou=groups," + BASE,
                "--auditor-group", "cn=conclave-auditors,ou=groups," + BASE,
                "--db", "mariadb://%s@127.0.0.1:%d/%s" % (
                    self.mariadb.user, self.mariadb.port,
                    self.mariadb.database),
                "--db-password-file", os.path.join(secrets, "db.pw"),
                "--https-listen", "127.0.0.1:%d" % self.port,
                "--xmpp-listen", "127.0.0.1:%d" % self.xmpp_port,
                "--xmpps-listen", "127.0.0.1:%d" % self.xmpps_port]
        if os.path.exists(self.cert) and os.path.exists(self.key):
            keep = os.path.join(secrets, "tls")
            os.makedirs(keep, exist_ok=True)
            for src, dst in ((self.cert, "cert.pem"), (self.key, "key.pem")):
                with open(src, "rb") as f, open(os.path.join(keep, dst),
                                                 "wb") as g:
                    g.write(f.read())
            args += ["--tls-cert", os.path.join(keep, "cert.pem"),
                     "--tls-key", os.path.join(keep, "key.pem")]
        else:
            args += ["--self-signed"]
        env = self.env()
        env["ASAN_OPTIONS"] = "detect_leaks=0"      # a one-shot CLI
        r = subprocess.run(args, capture_output=True, text=True, env=env,
                           stdin=subprocess.DEVNULL, timeout=300)
        if r.returncode != 0:
            raise NginxError("conclavectl setup failed:\n%s%s"
                             % (r.stdout, r.stderr))
        with open(self.conf_path) as f:
            return f.read()

    def start(self, timeout=30.0):
        if self.running():
            raise NginxError("nginx already running, pid %d" % self.pid)
        t0 = time.monotonic()
        self.render_conf()
        self._check_port_free()
        out = open(self.stderr_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [NGINX, "-c", self.conf_path, "-g", "daemon off;"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                env=self.env(), start_new_session=True, close_fds=True)
        finally:
            out.close()
        self.pid = self.proc.pid
        self._wait_ready(timeout)
        self.timings = {"start": time.monotonic() - t0}
        return self
